package transfer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"lukechampine.com/blake3"
)

// outgoing is a file this node offered; guarded by Service.mu.
type outgoing struct {
	xfer
	src     string
	modTime int64
	hashes  []byte
	stream  network.Stream // the fetch stream being served, if any
}

// newChunkHash is the chunk hash: BLAKE3-256 (lukechampine.com/blake3,
// SIMD on amd64 and arm64), several times faster than SHA-256 here, so the
// recipient's two passes (chunks and the whole file) cost little more than
// one.
func newChunkHash() hash.Hash { return blake3.New(hashLen, nil) }

// sumList is the SHA-256 of a hash list.
func sumList(hashes []byte) [hashLen]byte { return sha256.Sum256(hashes) }

// hashFile reads f once and returns the chunk hashes and the SHA-256 of the
// whole content.
func hashFile(ctx context.Context, f *os.File, size int64, chunkSize int) ([]byte, [hashLen]byte, error) {
	var whole [hashLen]byte
	n := int(numChunks(size, chunkSize))
	hashes := make([]byte, 0, n*hashLen)
	wh := sha256.New()
	ch := newChunkHash()
	buf := make([]byte, ioBufSize)
	r := io.NewSectionReader(f, 0, size)
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, whole, err
		}
		ch.Reset()
		left := min(int64(chunkSize), size-int64(i)*int64(chunkSize))
		for left > 0 {
			k, err := io.ReadFull(r, buf[:min(left, int64(len(buf)))])
			if err != nil {
				return nil, whole, fmt.Errorf("read: %w", err)
			}
			ch.Write(buf[:k])
			wh.Write(buf[:k])
			left -= int64(k)
		}
		hashes = ch.Sum(hashes)
	}
	copy(whole[:], wh.Sum(nil))
	return hashes, whole, nil
}

// Offer offers the file at path to p (whose connection the caller has
// arranged or can be dialled from the peerstore), claiming nick as our
// name (the recipient checks the claim). It hashes the file, keeps the transfer's state on disk, and
// returns once the recipient took the offer (it then waits for the
// recipient's decision). The offer is small and may use a relayed
// connection; the data waits for a direct one.
func (s *Service) Offer(ctx context.Context, p peer.ID, path, nick string) (Info, error) {
	return s.offer(ctx, p, path, "", nick)
}

// offer offers path under name (default: its base name).
func (s *Service) offer(ctx context.Context, p peer.ID, path, name, nick string) (Info, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Info{}, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, err
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("%s: not a regular file", path)
	}
	size := fi.Size()
	if size > MaxFileSize {
		return Info{}, fmt.Errorf("%s: %d bytes, above the %d the protocol carries", path, size, MaxFileSize)
	}
	id, err := newTransferID()
	if err != nil {
		return Info{}, err
	}
	o := &outgoing{src: abs, modTime: fi.ModTime().UnixNano()}
	o.xfer = xfer{id: id, peer: p, name: filepath.Base(abs), size: size, chunkSize: chunkSizeFor(size), state: StateOffered, path: abs}
	if name != "" {
		o.name = name
	}
	if len(o.name) > MaxNameLen {
		o.name = SanitizeName(o.name)
	}
	o.hashes, o.fileHash, err = hashFile(ctx, f, size, o.chunkSize)
	if err != nil {
		return Info{}, fmt.Errorf("hash %s: %w", path, err)
	}
	o.listHash = sumList(o.hashes)

	// The state is on disk before the offer leaves: a fetch can come at
	// once, also after a restart of this node.
	ds := o.diskState()
	ds.Path, ds.ModTime = o.src, o.modTime
	if err := s.saveHashes(false, id, o.hashes); err != nil {
		return Info{}, fmt.Errorf("save transfer state: %w", err)
	}
	if err := s.saveState(false, id, ds); err != nil {
		s.removeState(false, id)
		return Info{}, fmt.Errorf("save transfer state: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.removeState(false, id)
		return Info{}, ErrClosed
	}
	s.out[id] = o
	s.mu.Unlock()

	fail := func(err error) (Info, error) {
		s.mu.Lock()
		delete(s.out, id)
		s.mu.Unlock()
		s.removeState(false, id)
		return Info{}, err
	}
	msg := offerMsg{ID: id, Size: size, ChunkSize: o.chunkSize, FileHash: o.fileHash, ListHash: o.listHash, Name: o.name, Nick: nick}
	st, err := s.request(ctx, p, msg)
	if err != nil {
		return fail(fmt.Errorf("offer %s: %w", o.name, err))
	}
	if st.Code != StatusOK {
		return fail(fmt.Errorf("offer %s: %w", o.name, statusError(st)))
	}
	s.mu.Lock()
	info := o.info(false)
	s.mu.Unlock()
	return info, nil
}

// StatusError is a refusal by the peer.
type StatusError struct {
	Code byte
	Text string
}

func (e *StatusError) Error() string {
	name := map[byte]string{StatusRefused: "refused", StatusBusy: "busy", StatusUnknown: "unknown transfer", StatusInvalid: "invalid", StatusTooLarge: "too large"}[e.Code]
	if name == "" {
		name = fmt.Sprintf("status %d", e.Code)
	}
	if e.Text == "" {
		return "peer answered " + name
	}
	return fmt.Sprintf("peer answered %s: %s", name, e.Text)
}

func statusError(st statusMsg) error { return &StatusError{Code: st.Code, Text: st.Text} }

// request opens a stream to p (a relayed connection will do), writes one
// message and reads the STATUS answer.
func (s *Service) request(ctx context.Context, p peer.ID, m any) (statusMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout+dialTimeout)
	defer cancel()
	st, err := s.h.NewStream(network.WithAllowLimitedConn(ctx, "file offer"), p, ProtocolID)
	if err != nil {
		return statusMsg{}, fmt.Errorf("open stream: %w", err)
	}
	if !s.track(st) {
		st.Reset()
		return statusMsg{}, ErrClosed
	}
	defer s.untrack(st)
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	_ = st.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := st.Write(encode(nil, m)); err != nil {
		st.Reset()
		return statusMsg{}, fmt.Errorf("write: %w", err)
	}
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return statusMsg{}, fmt.Errorf("write: %w", err)
	}
	resp, err := readMessage(bufio.NewReaderSize(st, 512))
	if err != nil {
		st.Reset()
		return statusMsg{}, fmt.Errorf("read answer: %w", err)
	}
	sm, ok := resp.(statusMsg)
	if !ok {
		st.Reset()
		return statusMsg{}, fmt.Errorf("answer is %T, not a status", resp)
	}
	st.Close()
	return sm, nil
}

// serveFetch sends the chunks the recipient asks for: HASHES first, then
// for each WANT the chunks of its range, until DONE.
func (s *Service) serveFetch(st network.Stream, br *bufio.Reader, m fetchMsg) {
	p := st.Conn().RemotePeer()
	s.mu.Lock()
	o := s.out[m.ID]
	switch {
	case o == nil || o.peer != p || o.state.terminal():
		s.mu.Unlock()
		s.log.Debug("fetch without an offer", "peer", p)
		answer(st, StatusUnknown, "no such transfer")
		return
	case st.Conn().Stat().Limited || isRelayed(st.Conn().RemoteMultiaddr()):
		s.mu.Unlock()
		answer(st, StatusInvalid, "file data needs a direct connection")
		return
	case s.serving[p] >= s.lim.MaxServePerPeer:
		s.mu.Unlock()
		answer(st, StatusBusy, "too many transfers at once")
		return
	}
	s.serving[p]++
	old := o.stream
	o.stream = st
	s.mu.Unlock()
	if old != nil {
		old.Reset() // a newer fetch replaces it (e.g. after a network change)
	}
	defer func() {
		s.mu.Lock()
		s.serving[p]--
		if s.serving[p] == 0 {
			delete(s.serving, p)
		}
		if o.stream == st {
			o.stream = nil
		}
		s.mu.Unlock()
	}()

	f, err := openUnchanged(o)
	if err != nil {
		answer(st, StatusUnknown, "file no longer available as offered")
		s.finishOutgoing(o, StateFailed, err.Error())
		return
	}
	defer f.Close()
	err = s.sendChunks(st, br, f, o, m.Have)
	switch {
	case err == nil:
		st.Close()
	case errors.Is(err, errFileChanged):
		st.Reset()
		s.finishOutgoing(o, StateFailed, err.Error())
	default:
		s.log.Debug("fetch stream ended", "peer", p, "id", o.idString(), "err", err)
		st.Reset()
	}
}

var errFileChanged = errors.New("the file changed since it was offered")

// openUnchanged opens the offered file if its size and modification time
// are still those of the offer.
func openUnchanged(o *outgoing) (*os.File, error) {
	f, err := os.Open(o.src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFileChanged, err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != o.size || fi.ModTime().UnixNano() != o.modTime {
		f.Close()
		return nil, errFileChanged
	}
	return f, nil
}

func (s *Service) sendChunks(st network.Stream, br *bufio.Reader, f *os.File, o *outgoing, have int64) error {
	wd := func() { _ = st.SetWriteDeadline(time.Now().Add(s.lim.StallTimeout)) }
	wd()
	hdr := encode(nil, statusMsg{Code: StatusOK})
	hdr = encode(hdr, hashesMsg{Count: uint32(o.chunks())})
	if _, err := st.Write(append(hdr, o.hashes...)); err != nil {
		return fmt.Errorf("write hashes: %w", err)
	}
	s.setState(&o.xfer, false, StateActive, "")
	sent := min(have, o.size)
	s.progress(&o.xfer, false, sent)

	// Every byte the recipient may ask for, with room for the chunks it
	// asks again; past that it is cut off.
	budget := 2*o.size + int64(s.lim.MaxBadChunks+1)*int64(o.chunkSize)
	buf := make([]byte, 16+ioBufSize)
	for {
		_ = st.SetReadDeadline(time.Now().Add(finishTimeout))
		m, err := readMessage(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("recipient ended the stream without DONE")
			}
			return err
		}
		switch m := m.(type) {
		case doneMsg:
			s.progress(&o.xfer, false, o.size)
			s.finishOutgoing(o, StateDone, "")
			return nil
		case wantMsg:
			if int(m.Start)+int(m.Count) > o.chunks() {
				return fmt.Errorf("want [%d,+%d) beyond %d chunks", m.Start, m.Count, o.chunks())
			}
			for i := int(m.Start); i < int(m.Start+m.Count); i++ {
				n := o.chunkLen(i)
				if budget -= n; budget < 0 {
					return errors.New("recipient asked for too many bytes")
				}
				if err := s.sendChunk(st, f, o, i, buf, wd); err != nil {
					return err
				}
				sent = min(o.size, sent+n)
				s.progress(&o.xfer, false, sent)
			}
		default:
			return fmt.Errorf("unexpected %T on a fetch stream", m)
		}
	}
}

// sendChunk writes chunk i: its CHUNK header and the bytes, read from the
// file in ioBufSize pieces (the header rides with the first piece).
func (s *Service) sendChunk(st network.Stream, f *os.File, o *outgoing, i int, buf []byte, wd func()) error {
	n := o.chunkLen(i)
	off := int64(i) * int64(o.chunkSize)
	hdr := encode(buf[:0], chunkMsg{Index: uint32(i), Length: uint32(n)})
	h := len(hdr)
	for n > 0 {
		k := min(n, int64(len(buf)-h))
		r, err := f.ReadAt(buf[h:h+int(k)], off)
		if int64(r) != k {
			if err == nil || errors.Is(err, io.EOF) {
				return errFileChanged
			}
			return fmt.Errorf("read file: %w", err)
		}
		wd()
		if _, err := st.Write(buf[:h+r]); err != nil {
			return fmt.Errorf("write chunk: %w", err)
		}
		s.sent.Add(k)
		off += k
		n -= k
		h = 0
	}
	return nil
}

// BytesSent is the number of chunk bytes this service has written to
// recipients since it started (re-sent chunks included).
func (s *Service) BytesSent() int64 { return s.sent.Load() }

// finishOutgoing ends an outgoing transfer for good (done, failed,
// rejected): its state leaves the disk and the event is emitted once.
func (s *Service) finishOutgoing(o *outgoing, st State, reason string) {
	s.mu.Lock()
	if o.state.terminal() {
		s.mu.Unlock()
		return
	}
	o.state, o.err = st, reason
	s.finishedLocked(&o.xfer)
	stream := o.stream
	s.mu.Unlock()
	s.removeState(false, o.id)
	if st != StateDone && stream != nil {
		stream.Reset()
	}
	if st == StateDone {
		s.emit(DoneEvent{ID: o.idString(), Peer: o.peer, Path: o.src, Hash: fmt.Sprintf("%x", o.fileHash)})
	} else {
		s.emit(FailedEvent{ID: o.idString(), Peer: o.peer, Err: reason})
	}
}

// loadOutgoing restores the offers of an earlier run: the recipient may
// still fetch them.
func (s *Service) loadOutgoing() {
	for _, r := range s.loadStates(false) {
		if r.hashes == nil || r.disk.Path == "" {
			s.log.Warn("drop outgoing transfer without its hash list", "id", r.disk.ID)
			s.removeState(false, r.x.id)
			continue
		}
		o := &outgoing{xfer: r.x, src: r.disk.Path, modTime: r.disk.ModTime, hashes: r.hashes}
		o.state, o.path = StateOffered, r.disk.Path
		s.out[o.id] = o
	}
}
