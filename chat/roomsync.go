package chat

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// This file is room history sync, a request/response protocol of its own.
//
// Protocol ID /p2p-messaging/room-history/1.0.0, one request per stream.
// Each frame is an unsigned-varint length prefix and that many bytes in
// protobuf wire format. The asker writes one request and closes its side:
//
//	1 topic    string  the room's GossipSub topic
//	2 since_ms uint64  send time (Unix ms) of the oldest message wanted
//	3 limit    uint64  at most this many (capped at the answerer's RoomHistoryMax)
//
// The answerer writes up to limit message frames, oldest first, the
// newest messages sent at since_ms or later, each
//
//	1 message  bytes   the signed GossipSub message as it was received
//
// and then one end frame
//
//	2 status   uint64  0 ok, 1 not in that room, 2 busy (over the rate or the concurrency cap), 3 bad request
//	3 text     string
//
// and closes. Every message keeps its author's signature, so a member
// passing history on cannot forge or alter it: the asker checks each one
// as the topic validator would (signature, topic, seal, body, blocked
// authors) plus its age (at most RoomHistoryAge). A frame that fails
// ends the exchange (stream reset, the answerer is not asked again this
// spell, a warning names it); what was valid before it is kept. A request
// over 1 KiB, an answer frame over maxSignedRoomMessage, more frames than
// asked for, or an exchange over historyTimeout end the stream. The
// answerer serves at most historyConcurrent requests at once and each
// peer at most historyRate a second (bursts of historyBurst); beyond that
// it answers busy at once rather than leaving the asker waiting.

// RoomHistoryProtocol is the history sync protocol ID.
const RoomHistoryProtocol = protocol.ID("/p2p-messaging/room-history/1.0.0")

const (
	historyTimeout    = 30 * time.Second
	maxHistoryRequest = 1 << 10
	historyConcurrent = 8
	historyRate       = 1.0
	historyBurst      = 5
	maxHistoryPeers   = 4096 // peers with a rate bucket (beyond: the map restarts)

	histStatusOK      = 0
	histStatusNoRoom  = 1
	histStatusBusy    = 2
	histStatusBadReq  = 3
	histFieldTopic    = 1
	histFieldSince    = 2
	histFieldLimit    = 3
	histFieldMessage  = 1
	histFieldStatus   = 2
	histFieldText     = 3
	histFrameOverhead = 16
)

type roomHistory struct {
	rs      *rooms
	timeout time.Duration

	sem chan struct{}

	mu      sync.Mutex
	buckets *peerLimits
	streams map[network.Stream]struct{}
	closed  bool
	wg      sync.WaitGroup
}

func newRoomHistory(rs *rooms) *roomHistory {
	h := &roomHistory{
		rs:      rs,
		timeout: historyTimeout,
		sem:     make(chan struct{}, historyConcurrent),
		buckets: newPeerLimits(historyRate, historyBurst, maxHistoryPeers),
		streams: map[network.Stream]struct{}{},
	}
	rs.n.h.SetStreamHandler(RoomHistoryProtocol, h.handle)
	return h
}

// close removes the handler and resets the streams being served.
func (h *roomHistory) close() {
	h.rs.n.h.RemoveStreamHandler(RoomHistoryProtocol)
	h.mu.Lock()
	h.closed = true
	for s := range h.streams {
		_ = s.Reset()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *roomHistory) track(s network.Stream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.streams[s] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *roomHistory) untrack(s network.Stream) {
	h.mu.Lock()
	delete(h.streams, s)
	h.mu.Unlock()
	h.wg.Done()
}

// histRequest is one decoded request.
type histRequest struct {
	topic   string
	sinceMs int64
	limit   int
}

func encodeHistRequest(r histRequest) []byte {
	b := protowire.AppendTag(nil, histFieldTopic, protowire.BytesType)
	b = protowire.AppendString(b, r.topic)
	b = protowire.AppendTag(b, histFieldSince, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(max(r.sinceMs, 0)))
	b = protowire.AppendTag(b, histFieldLimit, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(max(r.limit, 0)))
}

var errBadHistory = errors.New("malformed history frame")

func decodeHistRequest(b []byte) (histRequest, error) {
	var r histRequest
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return histRequest{}, errBadHistory
		}
		b = b[n:]
		switch {
		case num == histFieldTopic && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return histRequest{}, errBadHistory
			}
			r.topic, b = string(v), b[n:]
		case (num == histFieldSince || num == histFieldLimit) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 || v > 1<<62 {
				return histRequest{}, errBadHistory
			}
			if num == histFieldSince {
				r.sinceMs = int64(v)
			} else {
				r.limit = int(min(v, 1<<31))
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return histRequest{}, errBadHistory
			}
			b = b[n:]
		}
	}
	if r.topic == "" || r.limit <= 0 {
		return histRequest{}, errBadHistory
	}
	return r, nil
}

// histFrame is one answer frame: a message, or the end with a status.
type histFrame struct {
	msg    []byte
	end    bool
	status uint64
	text   string
}

func encodeHistMessage(raw []byte) []byte {
	b := protowire.AppendTag(nil, histFieldMessage, protowire.BytesType)
	return protowire.AppendBytes(b, raw)
}

func encodeHistEnd(status uint64, text string) []byte {
	b := protowire.AppendTag(nil, histFieldStatus, protowire.VarintType)
	b = protowire.AppendVarint(b, status)
	if text != "" {
		b = protowire.AppendTag(b, histFieldText, protowire.BytesType)
		b = protowire.AppendString(b, text)
	}
	return b
}

func decodeHistFrame(b []byte) (histFrame, error) {
	var f histFrame
	var hasMsg bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return histFrame{}, errBadHistory
		}
		b = b[n:]
		switch {
		case num == histFieldMessage && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || hasMsg {
				return histFrame{}, errBadHistory
			}
			f.msg, hasMsg, b = v, true, b[n:]
		case num == histFieldStatus && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return histFrame{}, errBadHistory
			}
			f.status, f.end, b = v, true, b[n:]
		case num == histFieldText && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return histFrame{}, errBadHistory
			}
			f.text, b = string(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return histFrame{}, errBadHistory
			}
			b = b[n:]
		}
	}
	if hasMsg == f.end {
		return histFrame{}, errBadHistory // exactly one of message or end
	}
	return f, nil
}

func writeFrame(w io.Writer, b []byte) error {
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err := w.Write(append(buf, b...))
	return err
}

// readFrame reads one length-prefixed frame of at most max bytes; a
// larger prefix is refused before anything is allocated.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("frame of %d bytes over %d", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("frame cut short: %w", io.ErrUnexpectedEOF)
	}
	return b, nil
}

// readRequest reads the one request frame of a stream handler: at most
// max bytes, and never more than that from the stream.
func readRequest(s network.Stream, max int) ([]byte, error) {
	return readFrame(bufio.NewReader(io.LimitReader(s, int64(max)+binary.MaxVarintLen64)), max)
}

// finish writes a handler's last frame and closes the stream; a write
// that fails resets it.
func finish(s network.Stream, frame []byte) error {
	if err := writeFrame(s, frame); err != nil {
		_ = s.Reset()
		return err
	}
	_ = s.Close()
	return nil
}

// exchange asks p one question over proto (the limited-connection reason
// names it) and returns the one answer frame, of at most max bytes; the
// whole exchange takes at most timeout.
func (rs *rooms) exchange(ctx context.Context, p peer.ID, proto protocol.ID, reason string, timeout time.Duration, req []byte, max int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := rs.n.h.NewStream(network.WithAllowLimitedConn(ctx, reason), p, proto)
	if err != nil {
		return nil, fmt.Errorf("open %s stream: %w", reason, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(s, req); err != nil {
		_ = s.Reset()
		return nil, err
	}
	_ = s.CloseWrite()
	b, err := readFrame(bufio.NewReader(s), max)
	if err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("%s answer: %w", reason, err)
	}
	_ = s.Close()
	return b, nil
}

// handle serves one history request.
func (h *roomHistory) handle(s network.Stream) {
	if !h.track(s) {
		_ = s.Reset()
		return
	}
	defer h.untrack(s)
	_ = s.SetDeadline(time.Now().Add(h.timeout))
	p := s.Conn().RemotePeer()
	log := h.rs.n.log.With("peer", p, "proto", RoomHistoryProtocol)
	end := func(status uint64, text string) {
		if err := finish(s, encodeHistEnd(status, text)); err != nil {
			log.Debug("history answer", "err", err)
		}
	}
	if h.rs.n.names.isBlocked(p) {
		_ = s.Reset()
		return
	}
	b, err := readRequest(s, maxHistoryRequest)
	if err != nil {
		log.Debug("history request", "err", err)
		_ = s.Reset()
		return
	}
	req, err := decodeHistRequest(b)
	if err != nil {
		end(histStatusBadReq, "bad request")
		return
	}
	if !h.buckets.allow(p) {
		end(histStatusBusy, "too many history requests")
		return
	}
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		end(histStatusBusy, "busy")
		return
	}
	r := h.rs.byTopicName(req.topic)
	if r == nil || (r.spec.private() && !r.isProven(p)) {
		// An invite-only room's history goes only to peers that proved
		// they hold its key; to others it does not exist.
		end(histStatusNoRoom, "not in that room")
		return
	}
	recs, err := h.rs.n.db.roomMessages(r.spec.Topic, req.sinceMs, min(req.limit, h.rs.n.cfg.RoomHistoryMax))
	if err != nil {
		log.Warn("read room history", "err", err)
		_ = s.Reset()
		return
	}
	w := bufio.NewWriter(s)
	for _, rec := range recs {
		if err := writeFrame(w, encodeHistMessage(rec.Raw)); err != nil {
			log.Debug("history answer", "err", err)
			_ = s.Reset()
			return
		}
	}
	if err := writeFrame(w, encodeHistEnd(histStatusOK, "")); err != nil || w.Flush() != nil {
		log.Debug("history answer", "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// histMessage is one checked message of an answer.
type histMessage struct {
	author peer.ID
	body   roomBody
	raw    []byte
}

// checkHistMessage checks a message passed on by another member as the
// topic validator would, plus its age.
func (rs *rooms) checkHistMessage(r *room, raw []byte) (histMessage, error) {
	var m pubsubpb.Message
	if err := proto.Unmarshal(raw, &m); err != nil {
		return histMessage{}, fmt.Errorf("not a GossipSub message: %w", err)
	}
	if m.GetTopic() != r.spec.Topic {
		return histMessage{}, errors.New("message of another topic")
	}
	author, err := verifyPubsubSignature(&m)
	if err != nil {
		return histMessage{}, err
	}
	if len(m.Data) > maxRoomData {
		return histMessage{}, errors.New("oversized message")
	}
	plain, err := r.spec.open(m.Data)
	if err != nil {
		return histMessage{}, err
	}
	body, err := decodeRoomBody(plain)
	if err != nil {
		return histMessage{}, err
	}
	now := rs.now()
	sent := time.UnixMilli(body.SentMs)
	if sent.After(now.Add(rs.n.cfg.RoomReplayWindow)) {
		return histMessage{}, errors.New("message from the future")
	}
	return histMessage{author: author, body: body, raw: raw}, nil
}

// sync asks p for what the room said since our newest message (less the
// replay window, for messages that were late; the whole kept history when
// we have nothing), or with window > 0 only for the last window (at most
// linkSyncLimit messages), stores what is new in send order, and shows it.
func (h *roomHistory) sync(r *room, p peer.ID, window time.Duration) {
	rs := h.rs
	select {
	case <-r.done:
		return
	default:
	}
	req := histRequest{topic: r.spec.Topic, limit: rs.n.cfg.RoomHistoryMax}
	full := window <= 0
	if full {
		req.sinceMs = rs.now().Add(-rs.n.cfg.RoomHistoryAge).UnixMilli()
		if newest := rs.n.db.roomNewest(r.spec.Topic); newest > 0 {
			req.sinceMs = max(req.sinceMs, newest-rs.n.cfg.RoomReplayWindow.Milliseconds())
		}
	} else {
		req.sinceMs = rs.now().Add(-window).UnixMilli()
		req.limit = min(req.limit, linkSyncLimit)
	}
	ctx, cancel := context.WithTimeout(rs.n.ctx, h.timeout)
	defer cancel()
	msgs, err := h.fetch(ctx, r, p, req)
	if err != nil {
		rs.n.log.Debug("room history sync", "room", r.spec.Name, "peer", p, "err", err, "kept", len(msgs))
		var bad *badHistoryError
		if errors.As(err, &bad) {
			rs.n.ev.emit(EventWarning{Text: fmt.Sprintf("room %s: peer %s passed on an invalid message in history (%v); it is not asked again", r.spec.Name, p, bad.err), Peer: p})
		}
	} else if full {
		r.mu.Lock()
		r.syncs++
		r.mu.Unlock()
	}
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].body.SentMs < msgs[j].body.SentMs })
	// The room's rate holds for history too: per author, a token bucket
	// run on the messages' own send times drops what a flooder posted
	// beyond it (an honest author's node never publishes faster).
	buckets := map[peer.ID]*rate.Limiter{}
	for _, m := range msgs {
		if rs.n.names.isBlocked(m.author) {
			continue
		}
		b := buckets[m.author]
		if b == nil {
			b = rate.NewLimiter(rate.Limit(rs.n.cfg.RoomRate), rs.n.cfg.RoomBurst)
			buckets[m.author] = b
		}
		if !b.AllowN(time.UnixMilli(m.body.SentMs), 1) {
			continue
		}
		rs.take(r, m.author, m.body, m.raw, false)
	}
	if err != nil && full {
		rs.retrySync(r)
	}
}

// retrySync asks another peer in the topic, not asked yet in this spell.
func (rs *rooms) retrySync(r *room) {
	peers := r.topic.ListPeers()
	r.mu.Lock()
	var next peer.ID
	if r.syncs < rs.n.cfg.RoomSyncPeers {
		for _, p := range peers {
			if !r.asked[p] {
				next = p
				r.asked[p] = true
				break
			}
		}
	}
	r.mu.Unlock()
	if next != "" {
		rs.n.spawn(func() { rs.hist.sync(r, next, 0) })
	}
}

// badHistoryError: the answerer passed on a message that fails the checks.
type badHistoryError struct{ err error }

func (e *badHistoryError) Error() string { return "invalid message in history: " + e.err.Error() }

// fetch runs one history exchange with p. It returns the valid messages
// read, also with an error.
func (h *roomHistory) fetch(ctx context.Context, r *room, p peer.ID, req histRequest) ([]histMessage, error) {
	s, err := h.rs.n.h.NewStream(network.WithAllowLimitedConn(ctx, "room history"), p, RoomHistoryProtocol)
	if err != nil {
		return nil, fmt.Errorf("open history stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeFrame(s, encodeHistRequest(req)); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("history request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("history request: %w", err)
	}
	br := bufio.NewReader(s)
	var out []histMessage
	for i := 0; ; i++ {
		b, err := readFrame(br, maxSignedRoomMessage+histFrameOverhead)
		if err != nil {
			_ = s.Reset()
			return out, fmt.Errorf("history answer: %w", err)
		}
		f, err := decodeHistFrame(b)
		if err != nil {
			_ = s.Reset()
			return out, &badHistoryError{err}
		}
		if f.end {
			_ = s.Close()
			if f.status != histStatusOK {
				return out, fmt.Errorf("history refused: status %d (%s)", f.status, f.text)
			}
			return out, nil
		}
		if i >= req.limit {
			_ = s.Reset()
			return out, &badHistoryError{errors.New("more messages than asked for")}
		}
		m, err := h.rs.checkHistMessage(r, f.msg)
		if err != nil {
			_ = s.Reset()
			return out, &badHistoryError{err}
		}
		out = append(out, m)
	}
}
