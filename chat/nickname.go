package chat

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/secure/bidirule"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/width"
)

// maxNickInput bounds what NormalizeNick looks at before normalising: width
// mapping shrinks a full-width letter from 3 bytes to 1, so a nick typed in
// full-width forms may be up to three times MaxNickLen; anything longer is
// refused before the PRECIS transform runs.
const maxNickInput = 4 * MaxNickLen

// NormalizeNick returns the canonical form of a nick, or an error saying why
// s cannot be one. The rules, in order:
//
//  1. The PRECIS UsernameCaseMapped profile (RFC 8265, golang.org/x/text/
//     secure/precis): full-width and half-width forms mapped to their
//     ordinary forms, lower case, NFC, the bidi rule, and only characters of
//     the IdentifierClass (no spaces, no controls, no symbols outside ASCII).
//  2. 1 to MaxNickLen bytes after normalisation.
//  3. Only letters, digits, '-', '_' and '.'.
//  4. A single script: the letters and non-ASCII digits all belong to one
//     Unicode script (Latin, Cyrillic, Greek, Arabic, ...). Characters of the
//     Common and Inherited scripts (the ASCII digits, '-', '_', '.', the
//     katakana prolonged sound mark) go with any script. As in Unicode
//     TS #39's resolved script sets, Han combines with Hiragana and Katakana
//     (Japanese), with Hangul (Korean) and with Bopomofo; nothing else mixes,
//     so "bоb" with a Cyrillic "о" is refused.
//
// So "Bob" and "ｂｏｂ" both normalise to "bob". Every error wraps
// errBadNick. A nick that crosses the wire or is compared must already be in
// this form (see ValidNick); apply NormalizeNick to what a user types.
func NormalizeNick(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty (1-%d bytes of letters, digits, '-', '_', '.')", errBadNick, MaxNickLen)
	}
	if len(s) > maxNickInput {
		return "", fmt.Errorf("%w: %d bytes, max %d", errBadNick, len(s), MaxNickLen)
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: %+q is not valid UTF-8", errBadNick, s)
	}
	out, err := precis.UsernameCaseMapped.String(s)
	if err != nil {
		return "", fmt.Errorf("%w: %+q %s", errBadNick, s, precisReason(s, err))
	}
	if out == "" {
		return "", fmt.Errorf("%w: %+q is empty once normalised", errBadNick, s)
	}
	if len(out) > MaxNickLen {
		return "", fmt.Errorf("%w: %+q is %d bytes once normalised, max %d", errBadNick, s, len(out), MaxNickLen)
	}
	for _, r := range out {
		if !nickRune(r) {
			return "", fmt.Errorf("%w: %+q contains %s: use letters, digits, '-', '_' and '.'", errBadNick, s, describeRune(r))
		}
	}
	if err := singleScript(out); err != nil {
		return "", fmt.Errorf("%w: %+q %v", errBadNick, s, err)
	}
	return out, nil
}

func nickRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.'
}

// precisReason turns a PRECIS failure into a sentence naming the character
// at fault where one can be found.
func precisReason(s string, err error) string {
	for _, r := range s {
		if f := []rune(width.Fold.String(string(r))); len(f) == 1 && !nickRune(f[0]) {
			return fmt.Sprintf("contains %s: use letters, digits, '-', '_' and '.'", describeRune(r))
		}
	}
	if errors.Is(err, bidirule.ErrInvalid) {
		return "mixes right-to-left and left-to-right text in a way the bidi rule (RFC 5893) refuses"
	}
	return fmt.Sprintf("is refused by the PRECIS UsernameCaseMapped profile (%v)", err)
}

func describeRune(r rune) string {
	if unicode.IsPrint(r) {
		return fmt.Sprintf("%q (U+%04X)", r, r)
	}
	return fmt.Sprintf("U+%04X", r)
}

// nickScripts are checked first when looking up a rune's script; the rest
// of unicode.Scripts follows.
var nickScripts = []string{"Latin", "Common", "Inherited", "Cyrillic", "Greek", "Han", "Hiragana", "Katakana", "Hangul", "Arabic", "Hebrew"}

// scriptOf returns the Unicode script (Scripts.txt) of r, or "" if r has none.
func scriptOf(r rune) string {
	for _, name := range nickScripts {
		if unicode.Is(unicode.Scripts[name], r) {
			return name
		}
	}
	for name, t := range unicode.Scripts {
		if unicode.Is(t, r) {
			return name
		}
	}
	return ""
}

// cjkSets are the script combinations that count as one script (Unicode
// TS #39, section 5.1: Jpan, Kore, Hanb).
var cjkSets = [][]string{
	{"Han", "Hiragana", "Katakana"},
	{"Han", "Hangul"},
	{"Han", "Bopomofo"},
}

// singleScript refuses a normalised nick whose characters come from more
// than one script (Common and Inherited excepted).
func singleScript(s string) error {
	var scripts []string
	var first []rune // one example rune for each script in scripts
	for _, r := range s {
		sc := scriptOf(r)
		if sc == "Common" || sc == "Inherited" {
			continue
		}
		if sc == "" {
			return fmt.Errorf("contains %s, which belongs to no script", describeRune(r))
		}
		found := false
		for _, x := range scripts {
			found = found || x == sc
		}
		if !found {
			scripts = append(scripts, sc)
			first = append(first, r)
		}
	}
	if len(scripts) <= 1 {
		return nil
	}
	for _, set := range cjkSets {
		if subset(scripts, set) {
			return nil
		}
	}
	return fmt.Errorf("mixes scripts: %s is %s, %s is %s (a nick uses one script)",
		describeRune(first[0]), scripts[0], describeRune(first[1]), scripts[1])
}

func subset(a, b []string) bool {
	for _, x := range a {
		in := false
		for _, y := range b {
			in = in || x == y
		}
		if !in {
			return false
		}
	}
	return true
}

// confusables maps characters that look like a Latin letter or digit, in
// common fonts, to that letter. It is a small, deliberate subset of Unicode's
// confusables.txt (TS #39): the Cyrillic, Greek and Armenian look-alikes of
// Latin letters, a few Latin letters that pass for others (dotless i,
// script g, Latin alpha), and the digit zero for "o". Upper-case forms are
// not listed: the PRECIS case mapping lowers them first, as it also folds
// full-width letters ("ｂｏｂ") into ordinary ones.
var confusables = map[rune]rune{
	// Cyrillic
	'а': 'a', 'с': 'c', 'ԁ': 'd', 'е': 'e', 'һ': 'h', 'і': 'i', 'ј': 'j',
	'ӏ': 'l', 'о': 'o', 'р': 'p', 'ԛ': 'q', 'ѕ': 's', 'у': 'y', 'ԝ': 'w',
	'х': 'x', 'ь': 'b', 'ѵ': 'v', 'ү': 'y',
	// Greek
	'α': 'a', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ο': 'o', 'ρ': 'p',
	'τ': 't', 'υ': 'u', 'χ': 'x', 'ϲ': 'c', 'ϳ': 'j', 'γ': 'y', 'ω': 'w',
	// Armenian
	'օ': 'o', 'ս': 'u', 'հ': 'h', 'ո': 'n', 'զ': 'q', 'ց': 'g',
	// Latin look-alikes of other Latin letters
	'ı': 'i', 'ɩ': 'i', 'ɑ': 'a', 'ɡ': 'g', 'ʏ': 'y', 'ȷ': 'j',
	// Digits
	'0': 'o',
}

// oneLike merges the characters that are hard to tell from a lower-case l.
var oneLike = strings.NewReplacer("1", "l", "i", "l", "|", "l")

// confusableSequences are letter pairs that read as one letter; they are
// replaced once 1, i and l have merged, until none is left.
var confusableSequences = strings.NewReplacer("rn", "m", "vv", "w", "cl", "d")

// confusableSkeleton returns a form of nick under which look-alike nicks
// coincide. It applies, in order:
//
//  1. the PRECIS UsernameCaseMapped mapping, when nick passes it (width
//     folding, lower case, NFC); otherwise nick is lowered as it is;
//  2. NFD, dropping every combining mark (so "bób" and "bob" coincide);
//  3. the confusables map (Cyrillic "о", Greek "ο", Armenian "օ" and the
//     digit "0" all become "o", and so on);
//  4. "1", "i" and "l" all become "l";
//  5. the sequences "rn" -> "m", "vv" -> "w", "cl" -> "d", repeated until
//     none is left ("rnn" -> "mn", "vvv" -> "wv").
//
// The skeleton is only ever compared with another skeleton; it is not a nick.
// Skeletons of valid nicks are fixed points (the skeleton of a skeleton is
// itself).
func confusableSkeleton(nick string) string {
	s, err := precis.UsernameCaseMapped.String(nick)
	if err != nil {
		s = strings.ToLower(nick)
	}
	var b strings.Builder
	for _, r := range norm.NFD.String(s) {
		if unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) {
			continue
		}
		if m, ok := confusables[r]; ok {
			r = m
		}
		b.WriteRune(r)
	}
	out := oneLike.Replace(b.String())
	for {
		next := confusableSequences.Replace(out)
		if next == out {
			return out
		}
		out = next // each round is shorter: this ends
	}
}

// Confusable reports whether a and b are different nicks that look alike:
// their normalised forms differ but their confusable skeletons are equal
// (see confusableSkeleton). Two spellings of the same nick ("Bob" and
// "bob") are the same nick, not confusable. The node uses it to flag a nick
// that imitates one of its contacts'.
func Confusable(a, b string) bool {
	if na, err := NormalizeNick(a); err == nil {
		a = na
	}
	if nb, err := NormalizeNick(b); err == nil {
		b = nb
	}
	return a != b && confusableSkeleton(a) == confusableSkeleton(b)
}
