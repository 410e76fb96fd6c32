package transfer

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// The chunk hashes are links of one SHA-256 computation of the whole
// file. SHA-256 runs its compression function over 64-byte blocks from a
// fixed initial value, carrying a 32-byte chaining value from block to
// block; chunk sizes are powers of two of at least 64 KiB, so every chunk
// but the last ends on a block boundary. Entry i of the hash list (i below
// the last) is the chaining value after the first (i+1)*chunk_size bytes;
// the last entry is the SHA-256 of the whole file itself. Chunk i checks
// on its own, in any order: start SHA-256 from entry i-1 (the initial
// value for chunk 0) at offset i*chunk_size, feed the chunk, and compare
// the chaining value (the finished sum for the last chunk) with entry i.
// When every chunk has checked, the links compose into the SHA-256 of the
// whole content, so the file is proved equal to file_sha256 with one
// SHA-256 pass over each byte and without reading anything back.
//
// crypto/sha256 saves and restores its state through
// encoding.BinaryMarshaler ("sha\x03", the eight state words big-endian,
// the 64-byte block buffer, the byte count big-endian); a chaining value
// at a block boundary is exactly the state words. TestChainIsSHA256 pins
// that format.

const (
	shaMagic     = "sha\x03"
	shaStateSize = len(shaMagic) + 32 + 64 + 8
)

// chainValue is the chaining value of h, which has taken a multiple of 64
// bytes.
func chainValue(h hash.Hash, scratch []byte) ([hashLen]byte, error) {
	var cv [hashLen]byte
	b, err := h.(encoding.BinaryAppender).AppendBinary(scratch[:0])
	if err != nil || len(b) != shaStateSize || string(b[:len(shaMagic)]) != shaMagic {
		return cv, errors.New("sha256 state has an unknown format")
	}
	copy(cv[:], b[len(shaMagic):])
	return cv, nil
}

// resumeChain sets h (a SHA-256) to the state after off bytes (a multiple
// of 64) whose chaining value is cv.
func resumeChain(h hash.Hash, cv []byte, off int64, scratch []byte) error {
	b := append(scratch[:0], shaMagic...)
	b = append(b, cv...)
	b = append(b, make([]byte, 64)...)
	b = binary.BigEndian.AppendUint64(b, uint64(off))
	return h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b)
}

// chunkChecker checks chunks against a hash list; not safe for
// concurrent use.
type chunkChecker struct {
	x       *xfer
	hashes  []byte
	h       hash.Hash
	scratch []byte
	cur     int
}

func newChunkChecker(x *xfer, hashes []byte) *chunkChecker {
	return &chunkChecker{x: x, hashes: hashes, h: sha256.New(), scratch: make([]byte, 0, shaStateSize), cur: -1}
}

// begin starts chunk i.
func (c *chunkChecker) begin(i int) {
	c.cur = i
	if i == 0 {
		c.h.Reset()
		return
	}
	if err := resumeChain(c.h, c.hashes[(i-1)*hashLen:i*hashLen], int64(i)*int64(c.x.chunkSize), c.scratch); err != nil {
		// Only a changed state format gets here (TestChainIsSHA256):
		// the chunk then never matches.
		c.cur = -1
	}
}

func (c *chunkChecker) write(p []byte) { c.h.Write(p) }

// end reports whether the chunk begun last matched its entry.
func (c *chunkChecker) end() bool {
	i := c.cur
	c.cur = -1
	if i < 0 {
		return false
	}
	want := c.hashes[i*hashLen : (i+1)*hashLen]
	if i == c.x.chunks()-1 {
		var s [hashLen]byte
		return string(c.h.Sum(s[:0])) == string(want)
	}
	cv, err := chainValue(c.h, c.scratch)
	return err == nil && string(cv[:]) == string(want)
}

// hashChain reads size bytes from r once and returns the hash list for
// chunks of chunkSize and the SHA-256 of the whole content (the list's
// last entry). ctxErr is checked between chunks.
func hashChain(ctxErr func() error, r io.Reader, size int64, chunkSize int, buf []byte, progress func(int64)) ([]byte, [hashLen]byte, error) {
	var whole [hashLen]byte
	n := int(numChunks(size, chunkSize))
	hashes := make([]byte, 0, n*hashLen)
	h := sha256.New()
	scratch := make([]byte, 0, shaStateSize)
	for i := 0; i < n; i++ {
		if err := ctxErr(); err != nil {
			return nil, whole, err
		}
		left := min(int64(chunkSize), size-int64(i)*int64(chunkSize))
		for left > 0 {
			k, err := io.ReadFull(r, buf[:min(left, int64(len(buf)))])
			if err != nil {
				return nil, whole, fmt.Errorf("read: %w", err)
			}
			h.Write(buf[:k])
			left -= int64(k)
		}
		if i < n-1 {
			cv, err := chainValue(h, scratch)
			if err != nil {
				return nil, whole, err
			}
			hashes = append(hashes, cv[:]...)
		}
		if progress != nil {
			progress(min(size, int64(i+1)*int64(chunkSize)))
		}
	}
	copy(whole[:], h.Sum(nil))
	if n > 0 {
		hashes = append(hashes, whole[:]...)
	}
	return hashes, whole, nil
}
