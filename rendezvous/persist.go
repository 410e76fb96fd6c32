package rendezvous

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// DBFileName is the bbolt file a server keeps in its data dir.
const DBFileName = "rendezvous.db"

var (
	bucketRegs = []byte("registrations")
	bucketMeta = []byte("meta")
	keySeq     = []byte("seq")
)

// persister writes registrations through to bbolt in small batches: a
// register only records the change in memory and wakes the writer, which
// commits everything pending after persistBatch in one transaction. Close
// flushes the rest.
//
// Layout: bucket "registrations", key = len(peer ID) | peer ID | ns,
// value = seq (8 bytes BE) | expiry (8 bytes BE unix ns) | signed record;
// bucket "meta", key "seq" = the last sequence number handed out.
type persister struct {
	*batchWriter
}

// openPersister opens (creating) the database in dir and returns the live
// entries it holds, sorted by seq, and the stored sequence number. Entries
// expired at now are dropped from the file.
func openPersister(dir string, now int64, log *slog.Logger) (*persister, []*regEntry, uint64, error) {
	var (
		entries []*regEntry
		seq     uint64
	)
	db, err := openBolt(dir, DBFileName, [][]byte{bucketRegs, bucketMeta}, func(tx *bolt.Tx) error {
		regs, meta := tx.Bucket(bucketRegs), tx.Bucket(bucketMeta)
		if v := meta.Get(keySeq); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		var drop [][]byte
		err := regs.ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err != nil || e.expires <= now {
				if err != nil {
					log.Warn("dropping unreadable stored registration", "err", err)
				}
				drop = append(drop, slices.Clone(k))
				return nil
			}
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := regs.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	slices.SortFunc(entries, func(a, b *regEntry) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return &persister{newBatchWriter(db, log)}, entries, seq, nil
}

// put stores a registration and the sequence number handed out last.
func (p *persister) put(key string, val []byte, seq uint64) {
	p.batchWriter.put(bucketRegs, key, val)
	p.batchWriter.put(bucketMeta, string(keySeq), binary.BigEndian.AppendUint64(nil, seq))
}

// del removes a registration.
func (p *persister) del(key string) { p.batchWriter.del(bucketRegs, key) }

func entryKey(p peer.ID, ns string) string {
	b := make([]byte, 0, 1+len(p)+len(ns))
	b = append(b, byte(len(p)))
	b = append(b, p...)
	b = append(b, ns...)
	return string(b)
}

func encodeEntry(e *regEntry) []byte {
	b := make([]byte, 0, 16+len(e.rec))
	b = binary.BigEndian.AppendUint64(b, e.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.expires))
	return append(b, e.rec...)
}

func decodeEntry(k, v []byte) (*regEntry, error) {
	if len(k) < 1 || len(k) < 1+int(k[0]) || len(v) < 16 {
		return nil, errors.New("short key or value")
	}
	id, err := peer.IDFromBytes(k[1 : 1+int(k[0])])
	if err != nil {
		return nil, fmt.Errorf("peer id: %w", err)
	}
	return &regEntry{
		peer:    id,
		ns:      string(k[1+int(k[0]):]),
		seq:     binary.BigEndian.Uint64(v),
		expires: int64(binary.BigEndian.Uint64(v[8:])),
		rec:     slices.Clone(v[16:]),
	}, nil
}
