package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func collectLines(t *testing.T, input string) []inputLine {
	t.Helper()
	lines := make(chan inputLine)
	stop := make(chan struct{})
	defer close(stop)
	go readLines(strings.NewReader(input), lines, stop)
	var got []inputLine
	for l := range lines {
		got = append(got, l)
	}
	return got
}

func TestReadLinesBounded(t *testing.T) {
	huge := strings.Repeat("x", 3*maxLineLen+17)
	exact := strings.Repeat("y", maxLineLen-1) // plus '\n' fills the buffer exactly
	got := collectLines(t, "/peers\n"+huge+"\n/id\n"+exact+"\nlast without newline")
	require.Equal(t, []inputLine{
		{text: "/peers\n"},
		{tooLong: true},
		{text: "/id\n"},
		{text: exact + "\n"},
		{text: "last without newline"},
	}, got)

	// An overlong line cut by EOF is still reported, and then input ends.
	got = collectLines(t, "/id\n"+huge)
	require.Equal(t, []inputLine{{text: "/id\n"}, {tooLong: true}}, got)

	require.Empty(t, collectLines(t, ""))
}

func TestReadLinesStops(t *testing.T) {
	lines := make(chan inputLine)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		readLines(strings.NewReader("a\nb\nc\n"), lines, stop)
	}()
	require.Equal(t, "a\n", (<-lines).text)
	close(stop) // nobody reads any more: the reader must not block forever
	<-done
}

// FuzzStdin feeds arbitrary bytes through the -json input path (bounded line
// reader and command parser): nothing panics, no line exceeds the bound, and
// input without overlong lines comes through byte for byte.
func FuzzStdin(f *testing.F) {
	f.Add([]byte("/msg bob hi\n/peers\n"))
	f.Add([]byte("no newline at the end"))
	f.Add([]byte("\xff\xfe\n/join \x00\n\r\n"))
	f.Add([]byte(strings.Repeat("z", maxLineLen+1) + "\n/id\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		lines := make(chan inputLine)
		stop := make(chan struct{})
		defer close(stop)
		go readLines(strings.NewReader(string(in)), lines, stop)
		var b strings.Builder
		tooLong := false
		for l := range lines {
			if l.tooLong {
				tooLong = true
				continue
			}
			require.LessOrEqual(t, len(l.text), maxLineLen)
			b.WriteString(l.text)
			_, _ = parseCommand(l.text)
		}
		if !tooLong {
			require.Equal(t, string(in), b.String())
		}
	})
}
