package main

import (
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/require"
)

// FuzzTUIText: whatever text a peer sends or a user types or pastes, at
// any terminal size and with either width method, every row of the screen
// fits the terminal, the status line stays where it belongs, and typed
// text reaches the input unchanged.
func FuzzTUIText(f *testing.F) {
	for _, s := range unicodeSamples {
		f.Add(s.text, uint8(40), uint8(10), false)
	}
	f.Add("\x1b[2J\x1b]0;x\x07\u202e\n\n\t", uint8(3), uint8(2), true)
	f.Add(strings.Repeat("👨‍👩‍👧 ", 50), uint8(17), uint8(6), true)
	f.Fuzz(func(t *testing.T, text string, w, h uint8, grapheme bool) {
		width, height := int(w%120)+1, int(h%40)+1
		m := testModel(t, width, height, colorprofile.TrueColor)
		if grapheme {
			m = update(t, m, tea.ModeReportMsg{Mode: ansi.ModeUnicodeCore, Value: ansi.ModeSet})
		}
		m = update(t, m, incoming(t, "f1", text), key('2', tea.ModAlt))
		m = update(t, m, tea.PasteMsg{Content: text})
		m = typeIn(t, m, strings.ReplaceAll(text, "\n", ""))
		rows, cx, cy := m.screen()
		require.Len(t, rows, height)
		for i, r := range rows {
			require.LessOrEqual(t, m.wm.StringWidth(r), width, "row %d %q", i, ansi.Strip(r))
		}
		require.GreaterOrEqual(t, cx, 0)
		require.Less(t, cx, width)
		require.GreaterOrEqual(t, cy, 0)
		require.Less(t, cy, height)
		if height >= 3 && width >= 20 {
			require.Contains(t, ansi.Strip(rows[statusRow(m)]), "alice")
		}
	})
}

// FuzzCutTag: any line either parses into a valid tag and the rest, or is
// refused; a parsed tag is echoed as valid JSON.
func FuzzCutTag(f *testing.F) {
	f.Add("@1 /id")
	f.Add("@ /id")
	f.Add("@\"x /id")
	f.Add("/msg bob hi")
	f.Fuzz(func(t *testing.T, line string) {
		tag, rest, err := cutTag(line)
		if err != nil {
			return
		}
		if tag != "" {
			require.True(t, validTag(tag))
			out := withTag([]byte(`{"event":"id"}`+"\n"), tag)
			require.Contains(t, string(out), `"tag":"`+tag+`"`)
		}
		_, _ = parseCommand(rest)
	})
}

// A row x/ansi's Truncate leaves too wide (a skin-tone modifier after a
// digit in wcwidth mode; found by FuzzTUIText) is cut until it fits.
func TestFitWidth(t *testing.T) {
	row := "           000🏽日本🇩🇪"
	require.Greater(t, ansi.WcWidth.StringWidth(ansi.WcWidth.Truncate(row, 21, "")), 21, "x/ansi cuts this row correctly now: fitWidth may be simpler")
	for w := 0; w <= 24; w++ {
		got := fitWidth(ansi.WcWidth, row, w)
		require.LessOrEqual(t, ansi.WcWidth.StringWidth(got), w)
		require.True(t, strings.HasPrefix(row, got))
	}
	require.Equal(t, row, fitWidth(ansi.GraphemeWidth, row, 40))
}
