package rendezvous

import (
	"errors"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/p2p-messaging/p2p-messaging/rendezvous/pb"
)

// track registers a stream so Close can end it; false if closing.
func (s *Server) track(str network.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams[str] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(str network.Stream) {
	s.mu.Lock()
	delete(s.streams, str)
	s.mu.Unlock()
	s.wg.Done()
}

// streamMemory is what a rendezvous stream's handler reserves in its
// resource scope for its whole life, as go-libp2p's circuit relay does:
// the frame reader and the pooled buffer that holds one request (a REGISTER
// with its record). A larger request, or a DISCOVER page above
// framePoolSize, reserves what it holds while it is handled.
const streamMemory = frameSmall + framePoolSize

// admit puts str in the server's resource-manager service and reserves mem
// bytes in its scope. It resets str and returns false when the resource
// manager refuses; otherwise the caller releases mem when it is done.
func (s *Server) admit(str network.Stream, mem int) bool {
	scope := str.Scope()
	err := scope.SetService(ServiceName)
	if err == nil {
		err = scope.ReserveMemory(mem, network.ReservationPriorityAlways)
	}
	if err != nil {
		s.m.reject(rejectResource)
		s.log.Debug("stream refused by resource manager", "peer", str.Conn().RemotePeer(), "protocol", str.Protocol(), "err", err)
		str.Reset()
		return false
	}
	return true
}

// handleStream serves one /rendezvous/1.0.0 stream: any number of
// sequential requests, each answered in order, until the peer closes its
// side. Anything undecodable resets the stream.
func (s *Server) handleStream(str network.Stream) {
	if !s.track(str) {
		str.Reset()
		return
	}
	defer s.untrack(str)
	if !s.admit(str, streamMemory) {
		return
	}
	defer str.Scope().ReleaseMemory(streamMemory)
	remote := str.Conn().RemotePeer()
	bucket := s.rl.acquire(remote)
	defer s.rl.release(bucket)
	r := newFrameReader(str)
	r.mem = str.Scope()
	defer r.done()
	var (
		req     pb.Message
		d       *discoverBuf // from discoverPool while a DISCOVER is answered
		buf     []byte       // small responses
		lastNS  string       // the namespace of the previous DISCOVER, reused when equal
		renewed time.Time
		reply   chan string // answers of the verifier pool
	)
	// The deadline bounds the wait for each request to at least
	// StreamTimeout after the previous answer, at most 1.5 times that.
	// Renewing it only when half the timeout has passed since the last
	// renewal saves a timer reset per request.
	half := s.lim.StreamTimeout / 2
	for {
		if now := time.Now(); now.Sub(renewed) >= half {
			if err := str.SetDeadline(now.Add(s.lim.StreamTimeout + half)); err != nil {
				str.Reset()
				return
			}
			renewed = now
		}
		body, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				str.Close()
				return
			}
			if errors.Is(err, network.ErrResourceLimitExceeded) {
				s.m.reject(rejectResource)
				s.log.Debug("no memory for a large rendezvous request, resetting stream", "peer", remote, "err", err)
				str.Reset()
				return
			}
			s.m.reject(rejectMalformed)
			s.log.Debug("bad rendezvous request, resetting stream", "peer", remote, "err", err)
			str.Reset()
			return
		}
		start := time.Now()
		var (
			typ    pb.Message_MessageType
			status Status
			out    []byte
		)
		if dr, ok := parseDiscover(body); ok {
			// The common case, decoded without allocating.
			typ = pb.Message_DISCOVER
			if string(dr.ns) != lastNS {
				lastNS = string(dr.ns)
			}
			d = discoverPool.Get().(*discoverBuf)
			status, out, buf = s.answerDiscover(remote, bucket, lastNS, dr.limit, dr.cookie, d, buf)
			r.done()
		} else {
			err := proto.Unmarshal(body, &req)
			r.done()
			if err != nil {
				s.m.reject(rejectMalformed)
				s.log.Debug("bad rendezvous request, resetting stream", "peer", remote, "err", err)
				str.Reset()
				return
			}
			var ok bool
			typ, ok = requestType(&req)
			if !ok {
				s.m.reject(rejectMalformed)
				s.log.Debug("rendezvous request with neither type nor body, resetting stream", "peer", remote)
				str.Reset()
				return
			}
			switch typ {
			case pb.Message_REGISTER:
				if reply == nil {
					reply = make(chan string, 1)
				}
				resp := s.register(remote, str.Conn(), bucket, req.GetRegister(), reply)
				status = resp.GetStatus()
				buf = appendRegisterResponse(buf[:0], resp)
				out = buf
			case pb.Message_DISCOVER:
				dq := req.GetDiscover()
				d = discoverPool.Get().(*discoverBuf)
				status, out, buf = s.answerDiscover(remote, bucket, dq.GetNs(), dq.GetLimit(), dq.GetCookie(), d, buf)
			case pb.Message_UNREGISTER:
				s.unregister(remote, req.GetUnregister())
				req.Reset()
				s.m.requests[typ][StatusOK].Inc()
				s.m.latency[typ].Observe(time.Since(start).Seconds())
				continue
			default:
				s.m.reject(rejectMalformed)
				s.log.Debug("unexpected rendezvous message type, resetting stream", "peer", remote, "type", typ)
				str.Reset()
				return
			}
			req.Reset() // an idle stream keeps no record alive
		}
		pageMem := 0
		if d != nil && len(out) > framePoolSize {
			// A large DISCOVER page is held until it is written.
			if err := str.Scope().ReserveMemory(len(out), network.ReservationPriorityHigh); err != nil {
				s.m.reject(rejectResource)
				status = StatusUnavailable
				buf = appendDiscoverRefusal(buf[:0], status, "server is short of memory for this page; ask for fewer registrations")
				out = buf
			} else {
				pageMem = len(out)
			}
		}
		_, err = str.Write(out)
		if pageMem > 0 {
			str.Scope().ReleaseMemory(pageMem)
		}
		if err != nil {
			s.log.Debug("writing rendezvous response", "peer", remote, "err", err)
			str.Reset()
			return
		}
		s.m.requests[typ][status].Inc()
		s.m.latency[typ].Observe(time.Since(start).Seconds())
		if d != nil {
			putDiscoverBuf(d)
			d = nil
		}
	}
}

// answerDiscover answers one DISCOVER: the framed response to write, from
// d.out when OK, else from buf (returned for reuse).
func (s *Server) answerDiscover(remote peer.ID, b *bucket, ns string, limit uint64, cookie []byte, d *discoverBuf, buf []byte) (Status, []byte, []byte) {
	status, text := s.discover(remote, b, ns, limit, cookie, d)
	if status == StatusOK {
		return status, d.out, buf
	}
	buf = appendDiscoverRefusal(buf[:0], status, text)
	return status, buf, buf
}
