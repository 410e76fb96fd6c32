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
