package chat

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// Room state in chat.db, beside the direct messages:
//
//	rooms-joined/<name>           -> JSON joinedRoom (the rooms to rejoin at start)
//	rooms/<topic>/m/<key>         -> JSON roomRecord; key = sent ms (u64 BE) || id (16) || author
//	rooms/<topic>/i/<author||id>  -> key, to drop duplicates by message ID
//	rooms/<topic>/n               -> number of messages kept (u64 BE)
//
// A room keeps at most RoomHistoryMax messages and none older than
// RoomHistoryAge: the oldest go first. A message older than the oldest one
// kept while the room is full is refused (it was dropped before, or would
// be dropped at once), so a pruned message never comes back as new.
var (
	bktRoomsJoined = []byte("rooms-joined")
	bktRooms       = []byte("rooms")
	bktRoomMsgs    = []byte("m")
	bktRoomIDs     = []byte("i")
)

type joinedRoom struct {
	Secret []byte    `json:"secret,omitempty"` // invite-only rooms
	Joined time.Time `json:"joined"`
}

// roomRecord is one stored room message: what is shown, and the signed
// GossipSub message it came in (Raw) to pass on in history answers.
type roomRecord struct {
	ID     string `json:"id"`
	Author string `json:"author"`         // peer ID, base58
	Nick   string `json:"nick,omitempty"` // the author's claim, unverified
	Text   string `json:"text"`
	SentMs int64  `json:"sent_ms"`
	Raw    []byte `json:"raw"`
	Stored bool   `json:"stored,omitempty"` // our own message: a member said it stored it (roomack.go)
}

func roomMsgKey(sentMs int64, id []byte, author peer.ID) []byte {
	k := make([]byte, 0, 8+len(id)+len(author))
	k = append(k, u64(uint64(sentMs))...)
	k = append(k, id...)
	return append(k, author...)
}

// roomAddResult is what became of a room message offered to the store.
type roomAddResult int

const (
	roomStored roomAddResult = iota
	roomDuplicate
	roomTooOld
)

// addRoomMessage queues a room message for the writer and calls done
// after the commit. It waits for room in the writer's queue (the room
// readers are not stream readers: a full queue slows them, and GossipSub
// buffers meanwhile).
func (s *store) addRoomMessage(topic string, r roomRecord, maxN int, maxAge time.Duration, now time.Time, done func(roomAddResult, error)) error {
	id, err := parseID(r.ID)
	if err != nil {
		return err
	}
	author, err := peer.Decode(r.Author)
	if err != nil {
		return fmt.Errorf("room message author: %w", err)
	}
	var res roomAddResult
	return s.submit(writeOp{done: func(err error) { done(res, err) }, apply: func(tx *bolt.Tx) error {
		res = roomStored
		rb, err := tx.Bucket(bktRooms).CreateBucketIfNotExists([]byte(topic))
		if err != nil {
			return err
		}
		mb, err := rb.CreateBucketIfNotExists(bktRoomMsgs)
		if err != nil {
			return err
		}
		ib, err := rb.CreateBucketIfNotExists(bktRoomIDs)
		if err != nil {
			return err
		}
		dk := append(append([]byte{}, author...), id...)
		if ib.Get(dk) != nil {
			res = roomDuplicate
			return nil
		}
		if r.SentMs < now.Add(-maxAge).UnixMilli() {
			res = roomTooOld
			return nil
		}
		key := roomMsgKey(r.SentMs, id, author)
		n := getU64(rb.Get(keyCount))
		if n >= uint64(maxN) {
			if first, _ := mb.Cursor().First(); first != nil && string(key) < string(first) {
				res = roomTooOld
				return nil
			}
		}
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := mb.Put(key, v); err != nil {
			return err
		}
		if err := ib.Put(dk, key); err != nil {
			return err
		}
		n++
		// Prune: beyond the count, or past the age.
		cutoff := u64(uint64(now.Add(-maxAge).UnixMilli()))
		for n > 0 {
			k, v := mb.Cursor().First()
			if k == nil || (n <= uint64(maxN) && string(k[:8]) >= string(cutoff)) {
				break
			}
			var old roomRecord
			if json.Unmarshal(v, &old) == nil {
				oa, aerr := peer.Decode(old.Author)
				if oid, err := parseID(old.ID); err == nil && aerr == nil {
					if err := ib.Delete(append(append([]byte{}, oa...), oid...)); err != nil {
						return err
					}
				}
			}
			if err := mb.Delete(append([]byte{}, k...)); err != nil {
				return err
			}
			n--
		}
		return rb.Put(keyCount, u64(n))
	}})
}

// hasRoomMessage reports whether the history of topic holds author's id.
func (s *store) hasRoomMessage(topic string, author peer.ID, id []byte) bool {
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bktRooms).Bucket([]byte(topic))
		if rb == nil || rb.Bucket(bktRoomIDs) == nil {
			return nil
		}
		found = rb.Bucket(bktRoomIDs).Get(append(append([]byte{}, author...), id...)) != nil
		return nil
	})
	return found
}

// markRoomStored queues the stored mark of author's message id in topic;
// done reports whether the mark is new (false: already marked, or the
// message is no longer kept).
func (s *store) markRoomStored(topic string, author peer.ID, id []byte, done func(changed bool, err error)) error {
	changed := false
	return s.submit(writeOp{done: func(err error) { done(changed, err) }, apply: func(tx *bolt.Tx) error {
		rb := tx.Bucket(bktRooms).Bucket([]byte(topic))
		if rb == nil || rb.Bucket(bktRoomIDs) == nil {
			return nil
		}
		key := rb.Bucket(bktRoomIDs).Get(append(append([]byte{}, author...), id...))
		if key == nil {
			return nil
		}
		mb := rb.Bucket(bktRoomMsgs)
		var r roomRecord
		if v := mb.Get(key); v == nil || json.Unmarshal(v, &r) != nil || r.Stored {
			return nil
		}
		r.Stored = true
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		changed = true
		return mb.Put(append([]byte{}, key...), v)
	}})
}

// roomMessages returns up to limit of a room's messages sent at sinceMs or
// later, the newest ones, oldest first (limit <= 0: all).
func (s *store) roomMessages(topic string, sinceMs int64, limit int) ([]roomRecord, error) {
	var out []roomRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bktRooms).Bucket([]byte(topic))
		if rb == nil {
			return nil
		}
		mb := rb.Bucket(bktRoomMsgs)
		if mb == nil {
			return nil
		}
		c := mb.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			if int64(getU64(k[:8])) < sinceMs {
				break
			}
			var r roomRecord
			if json.Unmarshal(v, &r) != nil {
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// roomNewest returns the send time of a room's newest message (0: none).
func (s *store) roomNewest(topic string) int64 {
	var ms int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bktRooms).Bucket([]byte(topic))
		if rb == nil || rb.Bucket(bktRoomMsgs) == nil {
			return nil
		}
		if k, _ := rb.Bucket(bktRoomMsgs).Cursor().Last(); k != nil {
			ms = int64(getU64(k[:8]))
		}
		return nil
	})
	return ms
}

// joinedRooms returns the rooms to rejoin.
func (s *store) joinedRooms() (map[string]joinedRoom, error) {
	out := map[string]joinedRoom{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktRoomsJoined).ForEach(func(k, v []byte) error {
			var j joinedRoom
			if json.Unmarshal(v, &j) == nil && ValidRoomName(string(k)) {
				out[string(k)] = j
			}
			return nil
		})
	})
	return out, err
}

// setJoined records (secret != nil or not) or forgets (leave) a joined room.
func (s *store) setJoined(name string, j *joinedRoom) error {
	return s.submitWait(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktRoomsJoined)
		if j == nil {
			return b.Delete([]byte(name))
		}
		v, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), v)
	})
}

// initRoomBuckets creates the room buckets.
func (s *store) initRoomBuckets() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktRoomsJoined, bktRooms} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// roomsInitialised reports whether the joined rooms were saved before.
func (s *store) roomsInitialised() bool {
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bktRoomsJoined).Get(keyRoomsInit) != nil
		return nil
	})
	return ok
}

func (s *store) setRoomsInitialised() error {
	return s.submitWait(func(tx *bolt.Tx) error {
		return tx.Bucket(bktRoomsJoined).Put(keyRoomsInit, []byte{1})
	})
}
