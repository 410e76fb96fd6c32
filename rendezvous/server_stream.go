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

// handleStream serves one /rendezvous/1.0.0 stream: any number of
// sequential requests, each answered in order, until the peer closes its
// side. Anything undecodable resets the stream.
func (s *Server) handleStream(str network.Stream) {
	if !s.track(str) {
		str.Reset()
		return
	}
	defer s.untrack(str)
	if err := str.Scope().SetService(ServiceName); err != nil {
		s.log.Debug("rendezvous stream refused by resource manager", "peer", str.Conn().RemotePeer(), "err", err)
		str.Reset()
		return
	}
	remote := str.Conn().RemotePeer()
	bucket := s.rl.acquire(remote)
	defer s.rl.release(bucket)
	r := newFrameReader(str)
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
				resp := s.register(remote, bucket, req.GetRegister(), reply)
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
		if _, err := str.Write(out); err != nil {
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
