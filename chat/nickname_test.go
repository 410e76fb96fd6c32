package chat

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestNormalizeNick(t *testing.T) {
	cases := []struct {
		in, out string // out "" means refused
		why     string // part of the error message when refused
	}{
		{"bob", "bob", ""},
		{"Bob", "bob", ""},
		{"BOB_2", "bob_2", ""},
		{"a.b-c", "a.b-c", ""},
		{"élodie", "élodie", ""},
		{"e\u0301lodie", "élodie", ""}, // NFC composes the accent
		{"Élodie", "élodie", ""},
		{"ｂｏｂ", "bob", ""}, // full-width letters fold to ASCII
		{"ＢＯＢ１", "bob1", ""},
		{"боб", "боб", ""},     // all Cyrillic is one script
		{"Ξένια", "ξένια", ""}, // all Greek
		{"mañana42", "mañana42", ""},
		{"田中さん", "田中さん", ""}, // Han + Hiragana: Japanese
		{"スーパー", "スーパー", ""}, // Katakana with the (Common) prolonged sound mark
		{"김철수", "김철수", ""},
		{"محمد", "محمد", ""},
		{strings.Repeat("a", MaxNickLen), strings.Repeat("a", MaxNickLen), ""},
		{strings.Repeat("ａ", MaxNickLen), strings.Repeat("a", MaxNickLen), ""}, // 192 bytes in, 64 out

		// The attack from issue 13: a Cyrillic о inside a Latin nick.
		{"b\u043eb", "", "mixes scripts"},
		{"p\u0430ypal", "", "mixes scripts"}, // Cyrillic а
		{"b\u03bfb", "", "mixes scripts"},    // Greek ο
		{"\u0430lice", "", "Cyrillic"},
		{"abc田中", "", "mixes scripts"},
		{"bob\u096f", "", "mixes scripts"}, // Devanagari digit nine in a Latin nick
		{"bob\u0669", "", "bidi rule"},     // Arabic-Indic digit nine: right-to-left
		{"", "", "empty"},
		{"bob smith", "", "' ' (U+0020)"},
		{"a/b", "", "'/'"},
		{"a@b", "", "'@'"},
		{"a\x00b", "", "U+0000"},
		{"a\u200bb", "", "U+200B"}, // zero-width space
		{"bob\u00a0", "", "U+00A0"},
		{"\xff", "", "UTF-8"},
		{"bob\U0001F600", "", "U+1F600"},
		{strings.Repeat("a", MaxNickLen+1), "", "max 64"},
		{strings.Repeat("é", MaxNickLen/2+1), "", "max 64"},
		{strings.Repeat("ａ", MaxNickLen+1), "", "max 64"},
		{strings.Repeat("a", maxNickInput+1), "", "max 64"},
	}
	for _, c := range cases {
		got, err := NormalizeNick(c.in)
		if c.out != "" {
			require.NoError(t, err, "%+q", c.in)
			require.Equal(t, c.out, got, "%+q", c.in)
			require.True(t, ValidNick(got), "%+q", got)
			require.Equal(t, c.in == c.out, ValidNick(c.in), "ValidNick(%+q) only for the canonical form", c.in)
			continue
		}
		require.ErrorIs(t, err, errBadNick, "%+q", c.in)
		require.Contains(t, err.Error(), c.why, "%+q", c.in)
		require.Empty(t, got)
		require.False(t, ValidNick(c.in), "%+q", c.in)
	}
}

// The error for the look-alike names the foreign letter and its script.
func TestNormalizeNickMixedScriptMessage(t *testing.T) {
	_, err := NormalizeNick("b\u043eb")
	require.EqualError(t, err, `invalid nick: "b\u043eb" mixes scripts: 'b' (U+0062) is Latin, 'о' (U+043E) is Cyrillic (a nick uses one script)`)
}

func TestConfusable(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"bob", "b\u043eb", true},            // Cyrillic о
		{"bob", "b\u03bfb", true},            // Greek ο
		{"bob", "b\u0585b", true},            // Armenian օ
		{"bob", "b0b", true},                 // digit zero
		{"paypal", "p\u0430yp\u0430l", true}, // Cyrillic а
		{"paypal", "paypa1", true},
		{"paypal", "paypai", true},
		{"paypal", "рауpal", true}, // Cyrillic р, а, у
		{"mary", "rnary", true},
		{"wendy", "vvendy", true},
		{"david", "cl\u0430vid", true},
		{"bob", "bób", true},  // accents do not tell nicks apart
		{"bob", "ｂｏｂ", false}, // the same nick once normalised
		{"bob", "Bob", false}, // the same nick
		{"bob", "bob", false}, // the same nick
		{"bob", "bobby", false},
		{"alice", "alicia", false},
		{"bob", "rob", false},
		{"боб", "bob", false}, // Cyrillic б does not pass for b
		{"ivan", "1van", true},
		{"l.i", "i.l", true},
	}
	for _, c := range cases {
		require.Equal(t, c.want, Confusable(c.a, c.b), "%+q vs %+q: %+q / %+q", c.a, c.b, confusableSkeleton(c.a), confusableSkeleton(c.b))
		require.Equal(t, c.want, Confusable(c.b, c.a), "symmetric: %+q vs %+q", c.b, c.a)
	}
}

func TestConfusableSkeleton(t *testing.T) {
	require.Equal(t, "bob", confusableSkeleton("b\u043eb"))
	require.Equal(t, "bob", confusableSkeleton("ＢＯＢ"))
	require.Equal(t, "paypal", confusableSkeleton("p\u0430ypal"))
	require.Equal(t, "mal", confusableSkeleton("rnai"))
	// The skeleton of a skeleton is itself: the mapping is idempotent.
	for _, s := range []string{"rnrn", "vvv", "clc1", "b0b", "ιοα"} {
		sk := confusableSkeleton(s)
		require.Equal(t, sk, confusableSkeleton(sk), "%+q", s)
	}
}

func FuzzNormalizeNick(f *testing.F) {
	for _, s := range []string{"bob", "Bob", "ｂｏｂ", "b\u043eb", "e\u0301lodie", "田中さん", "スーパー", "محمد", "a b", "\xff", "",
		"\u0130stanbul", "ß", "ǅ", "\u1e9e", "\u03a3\u03a3", "ﬁ", strings.Repeat("ａ", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := NormalizeNick(s)
		if err != nil {
			require.ErrorIs(t, err, errBadNick)
			require.Empty(t, out)
			return
		}
		again, err := NormalizeNick(out)
		require.NoError(t, err, "%+q -> %+q", s, out)
		require.Equal(t, out, again, "not a fixed point: %+q -> %+q", s, out)
		require.True(t, ValidNick(out))
		require.True(t, utf8.ValidString(out))
		require.NotEmpty(t, out)
		require.LessOrEqual(t, len(out), MaxNickLen)
		require.False(t, Confusable(s, out), "a nick is not confusable with its own normal form")
		_ = confusableSkeleton(s)
	})
}
