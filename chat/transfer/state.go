package transfer

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/internal/atomicfile"
)

// diskState is one transfer's record in StateDir/in or StateDir/out
// (<id>.json; the hash list beside it in <id>.hashes).
type diskState struct {
	// Format is stateFormat; a record of another (1.0.0's BLAKE3 hash
	// lists had none) cannot resume and is dropped.
	Format    int    `json:"format"`
	ID        string `json:"id"`
	Peer      string `json:"peer"`
	Nick      string `json:"nick,omitempty"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	ChunkSize int    `json:"chunk_size"`
	FileHash  string `json:"file_hash"`
	ListHash  string `json:"list_hash"`
	// Sender: the source file and its modification time at the offer.
	Path    string `json:"path,omitempty"`
	ModTime int64  `json:"mod_time,omitempty"`
	// Recipient: when the offer arrived (unix nanoseconds, for its
	// expiry), then once accepted the directory to save in and the
	// partial file (an offer waiting for a decision has neither).
	Offered int64  `json:"offered,omitempty"`
	Dir     string `json:"dir,omitempty"`
	Part    string `json:"part,omitempty"`
}

// stateFormat is the format of the records: 2 since the hash list holds
// SHA-256 links (chain.go).
const stateFormat = 2

var errOldState = errors.New("transfer state of an older format")

func (s *Service) stateFile(incoming bool, id transferID, ext string) string {
	dir := "out"
	if incoming {
		dir = "in"
	}
	return filepath.Join(s.cfg.StateDir, dir, hex.EncodeToString(id[:])+ext)
}

func (x *xfer) diskState() diskState {
	return diskState{
		Format: stateFormat, ID: x.idString(), Peer: x.peer.String(), Nick: x.nick, Name: x.name,
		Size: x.size, ChunkSize: x.chunkSize,
		FileHash: hex.EncodeToString(x.fileHash[:]), ListHash: hex.EncodeToString(x.listHash[:]),
	}
}

func (s *Service) saveState(incoming bool, id transferID, st diskState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.stateFile(incoming, id, ".json"), b, 0o600)
}

func (s *Service) saveHashes(incoming bool, id transferID, hashes []byte) error {
	return atomicfile.WriteFile(s.stateFile(incoming, id, ".hashes"), hashes, 0o600)
}

func (s *Service) removeState(incoming bool, id transferID) {
	for _, ext := range []string{".json", ".hashes"} {
		if err := os.Remove(s.stateFile(incoming, id, ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove transfer state", "id", hex.EncodeToString(id[:]), "err", err)
		}
	}
}

// loadStates reads every record of one direction; a record that does not
// parse is logged and skipped.
func (s *Service) loadStates(incoming bool) []*xferRecord {
	dir := filepath.Dir(s.stateFile(incoming, transferID{}, ".json"))
	ents, err := os.ReadDir(dir)
	if err != nil {
		s.log.Warn("read transfer state", "dir", dir, "err", err)
		return nil
	}
	var out []*xferRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		r, err := s.loadState(filepath.Join(dir, e.Name()), incoming)
		if errors.Is(err, errOldState) {
			s.log.Warn("drop transfer state of an older format", "file", e.Name())
			if id, ok := parseID(strings.TrimSuffix(e.Name(), ".json")); ok {
				s.removeState(incoming, id)
			}
			continue
		}
		if err != nil {
			s.log.Warn("skip transfer state", "file", e.Name(), "err", err)
			continue
		}
		out = append(out, r)
	}
	return out
}

type xferRecord struct {
	x      xfer
	disk   diskState
	hashes []byte // nil if not saved yet
}

func (s *Service) loadState(file string, incoming bool) (*xferRecord, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var st diskState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Format != stateFormat {
		return nil, errOldState
	}
	id, ok := parseID(st.ID)
	if !ok || filepath.Base(file) != st.ID+".json" {
		return nil, fmt.Errorf("bad id %q", st.ID)
	}
	p, err := peer.Decode(st.Peer)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	if err := validGeometry(st.Size, st.ChunkSize); err != nil {
		return nil, err
	}
	r := &xferRecord{disk: st}
	r.x = xfer{id: id, peer: p, nick: st.Nick, name: st.Name, size: st.Size, chunkSize: st.ChunkSize}
	if err := decodeHash(st.FileHash, r.x.fileHash[:]); err != nil {
		return nil, fmt.Errorf("file hash: %w", err)
	}
	if err := decodeHash(st.ListHash, r.x.listHash[:]); err != nil {
		return nil, fmt.Errorf("list hash: %w", err)
	}
	hb, err := os.ReadFile(s.stateFile(incoming, id, ".hashes"))
	switch {
	case err == nil:
		if len(hb) != r.x.chunks()*hashLen || sumList(hb) != r.x.listHash {
			return nil, errors.New("hash list does not match its record")
		}
		r.hashes = hb
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, err
	}
	return r, nil
}

func decodeHash(s string, dst []byte) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return errors.New("not a hex SHA-256")
	}
	copy(dst, b)
	return nil
}
