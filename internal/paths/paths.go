// Package paths holds the on-disk locations the binaries agree on, so that a
// chat started with no flags finds a rendezvous daemon running on the same
// machine.
package paths

import (
	"fmt"
	"os"
	"path/filepath"
)

// AddrFileName is the file, inside the daemon's data directory, where the
// daemon writes its listen multiaddrs (with /p2p/<id>), one per line.
const AddrFileName = "addrs"

func base() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("locate config dir: %w", err)
	}
	return filepath.Join(dir, "p2p-messaging"), nil
}

// DaemonDataDir is the rendezvous daemon's default data directory.
func DaemonDataDir() (string, error) {
	b, err := base()
	if err != nil {
		return "", err
	}
	return filepath.Join(b, "rendezvous"), nil
}

// DefaultAddrFile is where a daemon with the default data directory writes
// its addresses.
func DefaultAddrFile() (string, error) {
	d, err := DaemonDataDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, AddrFileName), nil
}

// ChatDataDir is the default data directory of the chat for one nick, so
// that several nicks on one machine keep separate identities and histories.
func ChatDataDir(nick string) (string, error) {
	b, err := base()
	if err != nil {
		return "", err
	}
	return filepath.Join(b, "chat", nick), nil
}
