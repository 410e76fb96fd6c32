// Package addrfile is the daemon's addrs file: the rendezvous daemon writes
// its listen multiaddrs (each with /p2p/<id>) there, one per line, loopback
// first, and removes it on a clean shutdown; a chat started on the same
// machine without -rendezvous reads it to find the daemon. Its default
// location is paths.DefaultAddrFile.
package addrfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2p-messaging/p2p-messaging/internal/atomicfile"
)

// maxSize bounds what Read reads: a daemon writes a few hundred bytes.
const maxSize = 1 << 20

// ErrEmpty is returned by Read for a file without any address.
var ErrEmpty = errors.New("no addresses")

// Write replaces the file at path with addrs, one per line, atomically
// (readers see the old list or the new one, never a torn one).
func Write(path string, addrs []ma.Multiaddr) error {
	var b strings.Builder
	for _, a := range addrs {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	if err := atomicfile.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write addrs file: %w", err)
	}
	return nil
}

// Read returns the multiaddrs in the file at path. Blank lines and lines
// starting with # are skipped. A missing file is an error wrapping
// os.ErrNotExist; a file with no address, ErrEmpty.
func Read(path string) ([]ma.Multiaddr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxSize+1)); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if buf.Len() > maxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes, not an addrs file", path, maxSize)
	}
	var out []ma.Multiaddr
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		a, err := ma.NewMultiaddr(l)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, l, err)
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, ErrEmpty
	}
	return out, nil
}
