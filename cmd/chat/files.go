package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// File transfers (issue 11): /send, /accept, /reject, /transfers. The
// parsing, execution, results and JSON encoding live here; command.go,
// session.go and jsonenc.go only dispatch to them.

// fileHelpLines are the file commands' lines in /help.
var fileHelpLines = []string{
	"/send <nick> <path>      offer a file to nick; it moves once nick accepts",
	"/accept <id> [dir]       accept a file offer (id or a unique prefix) into dir (default: the download dir)",
	"/reject <id>             refuse a file offer; nothing is written",
	"/transfers               file transfers of this run, both directions",
}

// fileArgs are the arguments of the file commands.
type fileArgs struct {
	id   string // /accept, /reject
	path string // /send: the file; /accept: the directory ("" = default)
}

// Results of the file commands.
type (
	fileOfferedResult  struct{ Transfer chat.FileTransfer }
	fileAcceptedResult struct{ Transfer chat.FileTransfer }
	// fileSendingResult is a /send whose file is being hashed: not an
	// answer yet. wait blocks until the answer, a fileOfferedResult or a
	// fileFailedResult; each front end waits off its command loop.
	fileSendingResult struct {
		Transfer chat.FileTransfer
		wait     func() any
	}
	// fileFailedResult is a /send that failed after it started (hashing,
	// the offer): answered as file_failed.
	fileFailedResult struct {
		Transfer chat.FileTransfer
		Err      error
	}
	fileRejectedResult struct{ Transfer chat.FileTransfer }
	transfersResult    struct{ Transfers []chat.FileTransfer }
)

// parseFileCommand parses /send, /accept, /reject, /transfers (name in
// lower case; rest is the line after it). Paths may contain spaces: they
// are the rest of the line.
func parseFileCommand(name, rest string) (command, error) {
	switch name {
	case "/send":
		nick, path := cutWord(rest)
		if nick == "" || path == "" {
			return command{}, errors.New("usage: /send <nick> <path>")
		}
		nick, err := target(nick)
		if err != nil {
			return command{}, err
		}
		return command{kind: cmdSend, nick: nick, file: fileArgs{path: expandHome(path)}}, nil
	case "/accept":
		id, dir := cutWord(rest)
		if id == "" {
			return command{}, errors.New("usage: /accept <id> [dir]")
		}
		return command{kind: cmdAccept, file: fileArgs{id: id, path: expandHome(dir)}}, nil
	case "/reject":
		args := strings.Fields(rest)
		if len(args) != 1 {
			return command{}, errors.New("usage: /reject <id>")
		}
		return command{kind: cmdReject, file: fileArgs{id: args[0]}}, nil
	case "/transfers":
		if strings.TrimSpace(rest) != "" {
			return command{}, errors.New("usage: /transfers")
		}
		return command{kind: cmdTransfers}, nil
	}
	return command{}, fmt.Errorf("unknown command %s (try /help)", name)
}

// expandHome turns a leading "~/" into the home directory.
func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, strings.TrimPrefix(p[1:], "/"))
		}
	}
	return p
}

// execFile runs a file command.
func (s *session) execFile(ctx context.Context, c command) any {
	switch c.kind {
	case cmdSend:
		// The file is hashed before the offer leaves, in the background:
		// allow for that, at a pessimistic 20 MiB/s, on top of the usual
		// command time.
		timeout := commandTimeout
		if fi, err := os.Stat(c.file.path); err == nil {
			timeout += time.Duration(fi.Size()/(20<<20)) * time.Second
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		pf, err := s.node.StartSendFile(ctx, c.nick, c.file.path)
		if err != nil {
			cancel()
			return errorResult{withContext(err, "send file to", c.nick)}
		}
		return fileSendingResult{Transfer: pf.Transfer, wait: func() any {
			defer cancel()
			t, err := pf.Result()
			if err != nil {
				return fileFailedResult{Transfer: pf.Transfer, Err: err}
			}
			return fileOfferedResult{Transfer: t}
		}}
	case cmdAccept:
		t, err := s.node.AcceptFile(c.file.id, c.file.path)
		if err != nil {
			return errorResult{withContext(err, "accept", c.file.id)}
		}
		return fileAcceptedResult{Transfer: t}
	case cmdReject:
		t, err := s.node.RejectFile(c.file.id)
		if err != nil {
			return errorResult{withContext(err, "reject", c.file.id)}
		}
		return fileRejectedResult{Transfer: t}
	case cmdTransfers:
		return transfersResult{Transfers: s.node.Transfers()}
	}
	return errorResult{fmt.Errorf("not a file command")}
}

// JSON objects of the file commands and events (JSON.md).
type (
	jsonFileOffered struct {
		Event string `json:"event"`
		ID    string `json:"id"`
		To    string `json:"to"`
		Peer  string `json:"peer"`
		Name  string `json:"name"`
		Size  int64  `json:"size"`
		Hash  string `json:"hash"`
	}
	jsonFileID struct {
		Event string `json:"event"`
		ID    string `json:"id"`
	}
	jsonFileAccepted struct {
		Event string `json:"event"`
		ID    string `json:"id"`
		Name  string `json:"name"`
		Size  int64  `json:"size"`
	}
	jsonFileOffer struct {
		Event string `json:"event"`
		ID    string `json:"id"`
		From  string `json:"from"`
		Peer  string `json:"peer"`
		Name  string `json:"name"`
		Size  int64  `json:"size"`
		Hash  string `json:"hash"`
	}
	jsonFileProgress struct {
		Event     string `json:"event"`
		ID        string `json:"id"`
		Bytes     int64  `json:"bytes"`
		Size      int64  `json:"size"`
		Peer      string `json:"peer"`
		Direction string `json:"direction"`
	}
	jsonFileState struct {
		Event     string `json:"event"`
		ID        string `json:"id"`
		State     string `json:"state"`
		Reason    string `json:"reason"`
		Peer      string `json:"peer"`
		Direction string `json:"direction"`
	}
	jsonFileDoneIn struct {
		Event     string `json:"event"`
		ID        string `json:"id"`
		Path      string `json:"path"`
		Hash      string `json:"hash"`
		Peer      string `json:"peer"`
		Direction string `json:"direction"`
	}
	jsonFileDoneOut struct {
		Event     string `json:"event"`
		ID        string `json:"id"`
		Peer      string `json:"peer"`
		Direction string `json:"direction"`
	}
	jsonFileFailed struct {
		Event     string `json:"event"`
		ID        string `json:"id"`
		Error     string `json:"error"`
		Peer      string `json:"peer"`
		Direction string `json:"direction"`
	}
	jsonTransfer struct {
		ID        string `json:"id"`
		Peer      string `json:"peer"`
		Nick      string `json:"nick"`
		Direction string `json:"direction"`
		Name      string `json:"name"`
		Size      int64  `json:"size"`
		Bytes     int64  `json:"bytes"`
		State     string `json:"state"`
		Path      string `json:"path"`
		Hash      string `json:"hash"`
		Error     string `json:"error"`
	}
	jsonTransfers struct {
		Event     string         `json:"event"`
		Transfers []jsonTransfer `json:"transfers"`
	}
)

func direction(incoming bool) string {
	if incoming {
		return "in"
	}
	return "out"
}

// fileJSON maps a file event or result to its JSON object.
func fileJSON(v any) any {
	switch e := v.(type) {
	case fileOfferedResult:
		t := e.Transfer
		return jsonFileOffered{Event: "file_offered", ID: t.ID, To: t.Nick, Peer: peerString(t.Peer), Name: t.Name, Size: t.Size, Hash: t.Hash}
	case fileAcceptedResult:
		return jsonFileAccepted{Event: "file_accepted", ID: e.Transfer.ID, Name: e.Transfer.Name, Size: e.Transfer.Size}
	case fileRejectedResult:
		return jsonFileID{Event: "file_rejected", ID: e.Transfer.ID}
	case fileFailedResult:
		return jsonFileFailed{Event: "file_failed", ID: e.Transfer.ID, Error: e.Err.Error(), Peer: peerString(e.Transfer.Peer), Direction: "out"}
	case transfersResult:
		out := jsonTransfers{Event: "transfers", Transfers: make([]jsonTransfer, 0, len(e.Transfers))}
		for _, t := range e.Transfers {
			out.Transfers = append(out.Transfers, jsonTransfer{
				ID: t.ID, Peer: peerString(t.Peer), Nick: t.Nick, Direction: direction(t.Incoming), Name: t.Name,
				Size: t.Size, Bytes: t.Bytes, State: string(t.State), Path: t.Path, Hash: t.Hash, Error: t.Err,
			})
		}
		return out
	case chat.EventFileOffer:
		return jsonFileOffer{Event: "file_offer", ID: e.ID, From: e.From, Peer: peerString(e.Peer), Name: e.Name, Size: e.Size, Hash: e.Hash}
	case chat.EventFileProgress:
		return jsonFileProgress{Event: "file_progress", ID: e.ID, Bytes: e.Bytes, Size: e.Size, Peer: peerString(e.Peer), Direction: direction(e.Incoming)}
	case chat.EventFileState:
		return jsonFileState{Event: "file_state", ID: e.ID, State: e.State, Reason: e.Reason, Peer: peerString(e.Peer), Direction: direction(e.Incoming)}
	case chat.EventFileDone:
		if e.Incoming {
			return jsonFileDoneIn{Event: "file_done", ID: e.ID, Path: e.Path, Hash: e.Hash, Peer: peerString(e.Peer), Direction: "in"}
		}
		return jsonFileDoneOut{Event: "file_done", ID: e.ID, Peer: peerString(e.Peer), Direction: "out"}
	case chat.EventFileFailed:
		return jsonFileFailed{Event: "file_failed", ID: e.ID, Error: e.Err, Peer: peerString(e.Peer), Direction: direction(e.Incoming)}
	}
	return nil
}
