// Package identity loads a libp2p private key from disk, creating and
// persisting a new Ed25519 key on first use, so that a process keeps its
// peer ID across restarts.
package identity

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/p2p-messaging/p2p-messaging/internal/atomicfile"
)

// FileName is the identity key's file inside a data directory, the
// daemon's and the chat's alike.
const FileName = "identity.key"

// FileMode is the permission of a key file written by LoadOrCreate.
const FileMode os.FileMode = 0o600

// maxKeyFileSize bounds what Load reads; a marshalled Ed25519 key is 68 bytes.
const maxKeyFileSize = 64 << 10

// LoadOrCreate returns the key stored at path. If no file exists there, it
// generates an Ed25519 key and writes it atomically with mode 0600, creating
// the parent directory (0700) if needed. The boolean reports whether a new
// key was created.
func LoadOrCreate(path string) (crypto.PrivKey, bool, error) {
	k, err := Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate identity key: %w", err)
	}
	if err := Save(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Load reads a key written by Save or LoadOrCreate (libp2p's protobuf key
// encoding). On Unix it refuses a key file readable by group or others, as
// ssh does, rather than use a key that may have leaked.
func Load(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open identity key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat identity key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity key %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity key %s has mode %04o, want 0600 (chmod 600 it)", path, fi.Mode().Perm())
	}
	if fi.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("identity key %s is %d bytes, not a key", path, fi.Size())
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read identity key %s: %w", path, err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("decode identity key %s: %w", path, err)
	}
	return k, nil
}

// Save writes k to path atomically with mode 0600, creating the parent
// directory (0700) if needed.
func Save(path string, k crypto.PrivKey) error {
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return fmt.Errorf("encode identity key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	if err := atomicfile.WriteFile(path, b, FileMode); err != nil {
		return fmt.Errorf("write identity key %s: %w", path, err)
	}
	return nil
}
