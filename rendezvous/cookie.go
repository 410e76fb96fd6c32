package rendezvous

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// cookieSeqLen is the size of the sequence number at the front of a cookie.
const cookieSeqLen = 8

var (
	errCookieMalformed = errors.New("malformed cookie")
	errCookieNamespace = errors.New("cookie was issued for another namespace")
	errCookieFuture    = errors.New("cookie was not issued by this server")
)

// appendCookie appends the cookie for namespace ns positioned after sequence
// number seq: 8 bytes of big-endian seq, then the namespace ("" for a
// discover over all namespaces).
func appendCookie(b []byte, seq uint64, ns string) []byte {
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, ns...)
}

// parseCookie returns the sequence number in cookie, checking that it was
// issued for ns. An empty cookie starts from the beginning.
func parseCookie(cookie []byte, ns string) (uint64, error) {
	if len(cookie) == 0 {
		return 0, nil
	}
	if len(cookie) < cookieSeqLen || !utf8.Valid(cookie[cookieSeqLen:]) {
		return 0, errCookieMalformed
	}
	if string(cookie[cookieSeqLen:]) != ns {
		return 0, errCookieNamespace
	}
	return binary.BigEndian.Uint64(cookie), nil
}
