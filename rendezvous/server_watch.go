package rendezvous

import (
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// watchRequestMax bounds the single WatchRequest: a namespace and framing.
const watchRequestMax = 1024

// watchMemory is what a watch stream's handler reserves in its resource
// scope for its life: the request and the subscriber's event queue (slice
// headers: the frames are shared by every subscriber of a namespace).
func watchMemory(lim *Limits) int {
	const sliceHeader = 3 * strconv.IntSize / 8
	return watchRequestMax + lim.WatchQueue*sliceHeader
}

// handleWatch serves one watch stream: read one WatchRequest, send the
// snapshot and SYNCED, then forward events until either side ends it. A
// subscriber whose queue overflows is reset; it never slows registration.
func (s *Server) handleWatch(str network.Stream) {
	if !s.track(str) {
		str.Reset()
		return
	}
	defer s.untrack(str)
	remote := str.Conn().RemotePeer()
	mem := watchMemory(&s.lim)
	if !s.admit(str, mem) {
		return
	}
	defer str.Scope().ReleaseMemory(mem)
	if err := str.SetDeadline(time.Now().Add(s.lim.StreamTimeout)); err != nil {
		str.Reset()
		return
	}
	// One reader for the request and for the check that nothing follows
	// it: bytes that arrived with the request stay in its buffer.
	r := newFrameReader(str)
	r.max = watchRequestMax
	ns, err := readWatchRequest(r)
	if err != nil {
		s.m.reject(rejectMalformed)
		s.log.Debug("bad watch request, resetting stream", "peer", remote, "err", err)
		str.Reset()
		return
	}
	now := s.cfg.now()
	if !s.rl.allow(remote, now) {
		s.m.reject(rejectRateLimit)
		s.refuseWatch(str, ns, StatusUnavailable, "too many requests, slow down")
		return
	}
	if err := checkNamespace(ns, s.lim.MaxNamespaceLen); err != nil {
		s.m.reject(rejectNamespace)
		s.refuseWatch(str, ns, StatusInvalidNamespace, err.Error())
		return
	}
	w := &subscriber{
		ns:       ns,
		peer:     remote,
		events:   make(chan []byte, s.lim.WatchQueue),
		overflow: make(chan struct{}),
	}
	snap, status, text := s.st.subscribe(w, now.UnixNano(), &s.lim)
	if status != StatusOK {
		s.m.reject(rejectWatchCap)
		s.refuseWatch(str, ns, status, text)
		return
	}
	defer s.st.unsubscribe(w)
	s.log.Debug("watch started", "peer", remote, "ns", ns, "registrations", len(snap))

	// The client sends nothing more. A reset, or data after the request,
	// ends the subscription; a clean half-close (EOF) does not: such a
	// client still reads. Once the read side is closed, a reset or a lost
	// connection no longer shows there, so the connection is checked every
	// watchProbe until an event write would notice.
	gone := make(chan struct{})
	halfClosed := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		_ = str.SetReadDeadline(time.Time{})
		if _, err := r.ReadByte(); err == nil || !errors.Is(err, io.EOF) {
			close(gone)
			return
		}
		close(halfClosed)
	}()
	defer func() { <-readerDone }()
	var probe <-chan time.Time

	write := func(frame []byte) bool {
		_ = str.SetWriteDeadline(time.Now().Add(s.lim.StreamTimeout))
		if _, err := str.Write(frame); err != nil {
			s.log.Debug("watch write failed", "peer", remote, "ns", ns, "err", err)
			str.Reset()
			return false
		}
		return true
	}
	for i, x := range snap {
		if frame := registeredEvent(x.e, x.ttlNanos); frame != nil && !write(frame) {
			return
		}
		snap[i] = snapEntry{} // let removed entries go
	}
	snap = nil
	if !write(syncedEvent(ns)) {
		return
	}
	for {
		select {
		case frame := <-w.events:
			if !write(frame) {
				return
			}
		case <-w.overflow:
			s.m.reject(rejectWatchOverflow)
			s.log.Debug("watch subscriber too slow, resetting", "peer", remote, "ns", ns)
			str.Reset()
			return
		case <-gone:
			// The client reset the stream or broke the protocol.
			str.Reset()
			return
		case <-halfClosed:
			halfClosed = nil
			t := time.NewTicker(s.watchProbe())
			defer t.Stop()
			probe = t.C
		case <-probe:
			if str.Conn().IsClosed() {
				s.log.Debug("half-closed watch lost its connection", "peer", remote, "ns", ns)
				str.Reset()
				return
			}
		case <-s.ctx.Done():
			str.Reset()
			return
		}
	}
}

// watchProbe is how often a half-closed watch checks that its connection
// is still open: a quarter of the stream timeout (15 s by default).
func (s *Server) watchProbe() time.Duration { return s.lim.StreamTimeout / 4 }

// refuseWatch answers a refused subscription with one ERROR event.
func (s *Server) refuseWatch(str network.Stream, ns string, status Status, text string) {
	s.log.Debug("watch refused", "peer", str.Conn().RemotePeer(), "ns", ns, "status", status, "err", text)
	if _, err := str.Write(errorEvent(ns, status, text)); err != nil {
		str.Reset()
		return
	}
	str.Close()
}
