package transfer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// outgoing is a file this node offered; guarded by Service.mu.
type outgoing struct {
	xfer
	src     string
	modTime int64
	hashes  []byte
	stream  network.Stream // the fetch stream being served, if any
	// announced is closed once the offer's outcome is known (the
	// recipient took it, or it failed): a fetch waits for it, so the
	// offer's answer comes before the transfer's other events.
	announced chan struct{}
}

// sumList is the SHA-256 of a hash list.
func sumList(hashes []byte) [hashLen]byte { return sha256.Sum256(hashes) }

// hashFile reads f once and returns the hash list (chain.go) and the
// SHA-256 of the whole content; progress (if not nil) is told the bytes
// hashed after each chunk.
func hashFile(ctx context.Context, f *os.File, size int64, chunkSize int, progress func(int64)) ([]byte, [hashLen]byte, error) {
	return hashChain(ctx.Err, io.NewSectionReader(f, 0, size), size, chunkSize, make([]byte, ioBufSize), progress)
}

// Offer offers the file at path to p (whose connection the caller has
// arranged or can be dialled from the peerstore), claiming nick as our
// name (the recipient checks the claim): StartOffer, then its result.
func (s *Service) Offer(ctx context.Context, p peer.ID, path, nick string) (Info, error) {
	return s.offer(ctx, p, path, "", nick)
}

// PendingOffer is an offer on its way: the file is hashed, its state
// saved, then the offer sent.
type PendingOffer struct {
	Info Info // as at the start: id, peer, name, size, state hashing
	done chan struct{}
	info Info
	err  error
}

// Done is closed once the offer's outcome is known.
func (po *PendingOffer) Done() <-chan struct{} { return po.done }

// Result is the offer's outcome once Done is closed: the transfer,
// waiting for the recipient's decision, or why it failed (the transfer
// is then listed as failed; no FailedEvent is emitted for it).
func (po *PendingOffer) Result() (Info, error) { <-po.done; return po.info, po.err }

// StartOffer checks that path is a regular file the protocol can carry,
// lists the transfer (state "hashing", the bytes hashed so far) and
// returns at once; on a goroutine of its own it hashes the file, keeps the
// transfer's state on disk and offers it to p, until ctx ends or the
// service closes. The offer is small and may use a relayed connection;
// the data waits for a direct one.
func (s *Service) StartOffer(ctx context.Context, p peer.ID, path, nick string) (*PendingOffer, error) {
	return s.startOffer(ctx, p, path, "", nick)
}

// offer offers path under name (default: its base name) and waits for
// the outcome (the offer stops when ctx ends).
func (s *Service) offer(ctx context.Context, p peer.ID, path, name, nick string) (Info, error) {
	po, err := s.startOffer(ctx, p, path, name, nick)
	if err != nil {
		return Info{}, err
	}
	return po.Result()
}

func (s *Service) startOffer(ctx context.Context, p peer.ID, path, name, nick string) (*PendingOffer, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", path)
	}
	if err == nil && fi.Size() > MaxFileSize {
		err = fmt.Errorf("%s: %d bytes, above the %d the protocol carries", path, fi.Size(), MaxFileSize)
	}
	var id transferID
	if err == nil {
		id, err = newTransferID()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	o := &outgoing{src: abs, modTime: fi.ModTime().UnixNano(), announced: make(chan struct{})}
	o.xfer = xfer{id: id, peer: p, name: filepath.Base(abs), size: size, chunkSize: chunkSizeFor(size), state: StateHashing, path: abs}
	if name != "" {
		o.name = name
	}
	if len(o.name) > MaxNameLen {
		o.name = SanitizeName(o.name)
	}
	po := &PendingOffer{done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		f.Close()
		return nil, ErrClosed
	}
	s.out[id] = o
	po.Info = o.info(false)
	s.mu.Unlock()
	if !s.spawn(func() {
		defer f.Close()
		po.info, po.err = s.runOffer(ctx, o, f, nick)
		close(o.announced)
		close(po.done)
	}) {
		f.Close()
		s.mu.Lock()
		delete(s.out, id)
		s.mu.Unlock()
		return nil, ErrClosed
	}
	return po, nil
}

// runOffer hashes, saves and sends an offer; a failure leaves it listed
// as failed.
func (s *Service) runOffer(ctx context.Context, o *outgoing, f *os.File, nick string) (Info, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	fail := func(err error) (Info, error) {
		if s.ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		s.mu.Lock()
		if !o.state.terminal() {
			o.state, o.err = StateFailed, err.Error()
			s.finishedLocked(&o.xfer)
		}
		s.mu.Unlock()
		s.removeState(false, o.id)
		return Info{}, err
	}
	hashes, whole, err := hashFile(ctx, f, o.size, o.chunkSize, func(n int64) {
		s.mu.Lock()
		o.bytes = n
		s.mu.Unlock()
	})
	if err != nil {
		return fail(fmt.Errorf("hash %s: %w", o.src, err))
	}
	s.mu.Lock()
	o.hashes, o.fileHash, o.listHash = hashes, whole, sumList(hashes)
	o.state, o.bytes = StateOffered, 0
	ds := o.diskState()
	s.mu.Unlock()

	// The state is on disk before the offer leaves: a fetch can come at
	// once, also after a restart of this node.
	ds.Path, ds.ModTime = o.src, o.modTime
	if err := s.saveHashes(false, o.id, hashes); err != nil {
		return fail(fmt.Errorf("save transfer state: %w", err))
	}
	if err := s.saveState(false, o.id, ds); err != nil {
		return fail(fmt.Errorf("save transfer state: %w", err))
	}
	msg := offerMsg{ID: o.id, Size: o.size, ChunkSize: o.chunkSize, FileHash: o.fileHash, ListHash: o.listHash, Name: o.name, Nick: nick}
	st, err := s.request(ctx, o.peer, msg)
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
	case o == nil || o.peer != p || o.state.terminal() || o.state == StateHashing:
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

	// The offer's own answer (its request has just returned) first.
	select {
	case <-o.announced:
	case <-s.ctx.Done():
		st.Reset()
		return
	}
	s.mu.Lock()
	gone := o.state.terminal()
	s.mu.Unlock()
	if gone {
		answer(st, StatusUnknown, "no such transfer")
		return
	}
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
		o := &outgoing{xfer: r.x, src: r.disk.Path, modTime: r.disk.ModTime, hashes: r.hashes, announced: make(chan struct{})}
		close(o.announced)
		o.state, o.path = StateOffered, r.disk.Path
		s.out[o.id] = o
	}
}
