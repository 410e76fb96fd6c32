package chat

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-messaging/p2p-messaging/chat/transfer"
)

// File transfers: the transfer service (chat/transfer, protocol
// /p2p-messaging/file/2.0.0) runs beside the chat streams on the node's
// host. Its state lives in DataDir/transfers, files land in
// Config.DownloadDir (default DataDir/downloads) unless /accept names a
// directory. Offers from blocked peers are always refused; offers from
// peers that are not contacts (pinned, written to or allowed) are refused
// too unless their nick claim verifies now or Config.AcceptStrangerFiles
// is set.

// FileTransfer describes one transfer (Node.Transfers).
type FileTransfer = transfer.Info

// EventFileOffer: a peer offers a file; nothing is on disk until
// AcceptFile. From is its verified nick or its peer ID; Name is the
// sanitised name it will be saved under.
type EventFileOffer struct {
	ID   string
	From string
	Peer peer.ID
	Name string
	Size int64
	Hash string
}

// EventFileProgress: Bytes of Size moved (at most a few per second per
// transfer, and one at the end).
type EventFileProgress struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	Bytes    int64
	Size     int64
}

// EventFileState: a transfer's state changed, e.g. "waiting_direct" while
// only a relayed connection to the sender exists.
type EventFileState struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	State    string
	Reason   string
}

// EventFileDone: a transfer completed; on the recipient Path is the saved
// file (absolute) and Hash its verified SHA-256.
type EventFileDone struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	Path     string
	Hash     string
}

// EventFileFailed: a transfer ended without the file (rejected, cut off,
// stalled, ...).
type EventFileFailed struct {
	ID       string
	Peer     peer.ID
	Incoming bool
	Err      string
}

func (EventFileOffer) isEvent()    {}
func (EventFileProgress) isEvent() {}
func (EventFileState) isEvent()    {}
func (EventFileDone) isEvent()     {}
func (EventFileFailed) isEvent()   {}

// errStrangerOffer refuses an offer from a peer that is not a contact.
var errStrangerOffer = errors.New("offers from unknown peers are refused")

func (n *Node) startFiles() error {
	down := n.cfg.DownloadDir
	if down == "" {
		down = filepath.Join(n.cfg.DataDir, "downloads")
	}
	svc, err := transfer.New(n.h, transfer.Config{
		StateDir:    filepath.Join(n.cfg.DataDir, "transfers"),
		DownloadDir: down,
		Logger:      n.log,
		Authorize:   n.authorizeOffer,
		Events:      n.fileEvent,
		Limits:      n.cfg.FileLimits,
	})
	if err != nil {
		return fmt.Errorf("file transfers: %w", err)
	}
	n.files = svc
	return nil
}

// authorizeOffer decides whether an offer from p, claiming nick, reaches
// the user, and names p.
func (n *Node) authorizeOffer(ctx context.Context, p peer.ID, nick string) (string, error) {
	if n.names.isBlocked(p) {
		return "", errors.New("blocked")
	}
	if n.names.isContact(p) || n.names.hasTalked(p) {
		return n.peerName(p), nil
	}
	if ValidNick(nick) {
		if name, ok := n.names.identify(ctx, p, nick); ok {
			return name, nil
		}
	}
	if n.cfg.AcceptStrangerFiles {
		return p.String(), nil
	}
	return "", errStrangerOffer
}

func (n *Node) peerName(p peer.ID) string {
	if nick := n.names.nickOf(p); nick != "" {
		return nick
	}
	return p.String()
}

func (n *Node) fileEvent(ev transfer.Event) {
	switch e := ev.(type) {
	case transfer.OfferEvent:
		n.ev.emit(EventFileOffer{ID: e.ID, From: e.From, Peer: e.Peer, Name: e.Name, Size: e.Size, Hash: e.Hash})
	case transfer.ProgressEvent:
		n.ev.emit(EventFileProgress{ID: e.ID, Peer: e.Peer, Incoming: e.Incoming, Bytes: e.Bytes, Size: e.Size})
	case transfer.StateEvent:
		n.ev.emit(EventFileState{ID: e.ID, Peer: e.Peer, Incoming: e.Incoming, State: string(e.State), Reason: e.Reason})
	case transfer.DoneEvent:
		n.ev.emit(EventFileDone{ID: e.ID, Peer: e.Peer, Incoming: e.Incoming, Path: e.Path, Hash: e.Hash})
	case transfer.FailedEvent:
		n.ev.emit(EventFileFailed{ID: e.ID, Peer: e.Peer, Incoming: e.Incoming, Err: e.Err})
	}
}

// SendFile offers the file at path to nick (a contact's nick, a nick the
// daemons verify, or a peer ID). It returns once the recipient has the
// offer; the data moves after the recipient accepts, over a direct
// connection. It is StartSendFile and the pending offer's result.
func (n *Node) SendFile(ctx context.Context, nick, path string) (FileTransfer, error) {
	pf, err := n.StartSendFile(ctx, nick, path)
	if err != nil {
		return FileTransfer{}, err
	}
	return pf.Result()
}

// PendingFile is a file offer on its way: the file is hashed, then
// offered.
type PendingFile struct {
	// Transfer is the transfer as it starts (id, name, size, state
	// "hashing"); Node.Transfers shows its progress.
	Transfer FileTransfer
	po       *transfer.PendingOffer
	nick     string
}

// Done is closed once the offer's outcome is known.
func (pf *PendingFile) Done() <-chan struct{} { return pf.po.Done() }

// Result waits for the outcome: the transfer, offered to the recipient,
// or why hashing or the offer failed (no EventFileFailed is emitted for
// that: the result is the report).
func (pf *PendingFile) Result() (FileTransfer, error) {
	info, err := pf.po.Result()
	if err != nil {
		return FileTransfer{}, fmt.Errorf("send file to %q: %w", pf.nick, err)
	}
	info.Nick = pf.nick
	return info, nil
}

// StartSendFile resolves nick and checks path, and returns once the
// transfer is listed; hashing the file and sending the offer go on in the
// background until ctx ends or the node closes. Errors that come before
// (unknown nick, unreadable path) are returned here.
func (n *Node) StartSendFile(ctx context.Context, nick, path string) (*PendingFile, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	if nick == n.cfg.Nick {
		return nil, fmt.Errorf("send file to %q: that is our own nick", nick)
	}
	p, err := n.names.resolve(ctx, nick)
	if err != nil {
		return nil, fmt.Errorf("send file to %q: %w", nick, err)
	}
	if p == n.h.ID() {
		return nil, fmt.Errorf("send file to %q: that is this node", nick)
	}
	// Whoever we send to is a contact; a chat stream also tells the
	// recipient who we are.
	if err := n.names.allow(p); err != nil {
		return nil, fmt.Errorf("send file to %q: %w", nick, err)
	}
	n.peers.wantStream(p)
	if len(n.h.Network().ConnsToPeer(p)) == 0 && len(n.h.Peerstore().Addrs(p)) == 0 {
		n.names.lookupAddrs(ctx, p)
	}
	po, err := n.files.StartOffer(ctx, p, path, n.cfg.Nick)
	if err != nil {
		return nil, fmt.Errorf("send file to %q: %w", nick, err)
	}
	pf := &PendingFile{Transfer: po.Info, po: po, nick: nick}
	pf.Transfer.Nick = nick
	return pf, nil
}

// AcceptFile accepts an offer (its id, or a unique prefix of at least 4
// hex digits) into dir (default: the download dir), after checking the
// free space there.
func (n *Node) AcceptFile(id, dir string) (FileTransfer, error) {
	info, err := n.files.Accept(id, dir)
	return n.named(info), err
}

// RejectFile refuses an offer; nothing was written, the sender is told.
func (n *Node) RejectFile(id string) (FileTransfer, error) {
	info, err := n.files.Reject(id)
	return n.named(info), err
}

// Transfers lists this run's transfers, incoming first.
func (n *Node) Transfers() []FileTransfer {
	list := n.files.List()
	for i := range list {
		list[i] = n.named(list[i])
	}
	return list
}

func (n *Node) named(info FileTransfer) FileTransfer {
	if info.Nick == "" && info.Peer != "" {
		info.Nick = n.peerName(info.Peer)
	}
	return info
}
