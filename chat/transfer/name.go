package transfer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxSavedNameLen bounds a saved file name in bytes (most file systems
// allow 255; the collision suffix and the partial-file suffix need room).
const maxSavedNameLen = 200

// reservedNames are device names on Windows; a file called so (with any
// extension) is unusable there.
var reservedNames = map[string]bool{
	"CON": true, "PRN": true, "AUX": true, "NUL": true,
	"COM1": true, "COM2": true, "COM3": true, "COM4": true, "COM5": true, "COM6": true, "COM7": true, "COM8": true, "COM9": true,
	"LPT1": true, "LPT2": true, "LPT3": true, "LPT4": true, "LPT5": true, "LPT6": true, "LPT7": true, "LPT8": true, "LPT9": true,
}

// SanitizeName reduces an offered name to a plain file name that is safe
// to create in a download directory: only the part after the last '/' or
// '\', no control or format characters (bidi overrides that disguise an
// extension included), no characters Windows forbids, no leading dots or
// spaces (no hidden files, no "." or ".."), no trailing dots or spaces, no
// device names, at most maxSavedNameLen bytes with the extension kept. An
// empty result becomes "file".
func SanitizeName(name string) string {
	name = strings.ToValidUTF8(name, "")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Cf, r),
			unicode.Is(unicode.Co, r), unicode.Is(unicode.Cs, r), r == 0x2028, r == 0x2029:
			continue
		case strings.ContainsRune(`<>:"|?*`, r):
			b.WriteRune('_')
		case unicode.IsSpace(r):
			b.WriteRune(' ')
		default:
			b.WriteRune(r)
		}
	}
	name = strings.TrimLeft(b.String(), ". ")
	name = strings.TrimRight(name, ". ")
	if name == "" {
		return "file"
	}
	base, ext := splitExt(name)
	if reservedNames[strings.ToUpper(base)] {
		base = "_" + base
	}
	if len(ext) > 32 {
		base, ext = base+ext, ""
	}
	base = truncateUTF8(base, maxSavedNameLen-len(ext))
	if base == "" {
		base = "file"
	}
	return base + ext
}

// splitExt splits "a.tar.gz" into "a.tar" and ".gz"; a name without a dot
// (after its first character) has no extension.
func splitExt(name string) (string, string) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 {
		return name, ""
	}
	return name[:i], name[i:]
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// errTooManyCollisions ends the search for a free name.
var errTooManyCollisions = errors.New("no free file name")

// linkUnique moves the complete partial file src into dir under name, or
// "name (1).ext", "name (2).ext", ... when that exists, never replacing a
// file: os.Link fails if the target exists. It returns the final path.
func linkUnique(src, dir, name string) (string, error) {
	base, ext := splitExt(name)
	for i := 0; i < 1000; i++ {
		cand := name
		if i > 0 {
			cand = fmt.Sprintf("%s (%d)%s", base, i, ext)
		}
		dst := filepath.Join(dir, cand)
		err := os.Link(src, dst)
		if err == nil {
			if err := os.Remove(src); err != nil {
				return dst, fmt.Errorf("remove partial file: %w", err)
			}
			return dst, nil
		}
		if errors.Is(err, os.ErrExist) {
			continue
		}
		// No hard links here (some file systems): fall back to a rename
		// after an existence check.
		if _, serr := os.Lstat(dst); serr == nil {
			continue
		}
		if rerr := os.Rename(src, dst); rerr != nil {
			return "", fmt.Errorf("move into place: %w", rerr)
		}
		return dst, nil
	}
	return "", errTooManyCollisions
}
