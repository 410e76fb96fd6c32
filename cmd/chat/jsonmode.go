package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// maxLineLen bounds one command line on stdin in -json mode. Longer lines are
// skipped up to their newline and answered with an error event.
const maxLineLen = 64 << 10

// outBuffer is the capacity of the queue in front of the stdout writer.
const outBuffer = 256

// inputLine is one line read from stdin, or the notice that it was too long.
type inputLine struct {
	text    string
	tooLong bool
}

// jsonWriter owns stdout: one goroutine writes one JSON object per line. If
// stdout fails it keeps draining, so producers never block, and reports the
// failure on failed.
type jsonWriter struct {
	ch     chan any
	done   chan struct{}
	failed chan struct{}
	err    error // set before failed is closed
	log    *slog.Logger
}

func newJSONWriter(w io.Writer, log *slog.Logger) *jsonWriter {
	jw := &jsonWriter{ch: make(chan any, outBuffer), done: make(chan struct{}), failed: make(chan struct{}), log: log}
	go jw.loop(w)
	return jw
}

func (jw *jsonWriter) loop(w io.Writer) {
	defer close(jw.done)
	broken := false
	for v := range jw.ch {
		if broken {
			continue
		}
		tag := ""
		if t, ok := v.(tagged); ok {
			tag, v = t.tag, t.v
		}
		obj := toJSON(v)
		if obj == nil {
			continue
		}
		line, err := marshalLine(obj)
		if err != nil {
			jw.log.Error("encode event", "type", fmt.Sprintf("%T", v), "err", err)
			continue
		}
		line = withTag(line, tag)
		if _, err := w.Write(line); err != nil {
			jw.err = fmt.Errorf("write stdout: %w", err)
			broken = true
			close(jw.failed)
		}
	}
}

// close flushes what is queued and stops the writer.
func (jw *jsonWriter) close() {
	close(jw.ch)
	<-jw.done
}

// runJSON is the headless mode: commands from stdin, events as JSON lines on
// stdout. It returns after /quit, EOF on stdin, a broken stdout or ctx end,
// having closed the node (unregister, flush).
func runJSON(ctx context.Context, node *chat.Node, start func(context.Context) error, dataDir string, stdin io.Reader, stdout io.Writer, log *slog.Logger) (err error) {
	out := newJSONWriter(stdout, log)
	defer out.close()

	// Node events → writer. Stopped after node.Close, then drained.
	stopEvents := make(chan struct{})
	order := newAnswerOrder()
	sess := newSession(node, dataDir)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		forwardEvents(node.Events(), out.ch, stopEvents, func(ev chat.Event) (any, func()) {
			if m, ok := ev.(chat.EventMessage); ok && !m.Message.Outgoing {
				sess.noteSender(m.Message.From)
			}
			return order.forward(ev)
		})
	}()

	var late lateAnswers
	closeNode := func() error {
		cerr := node.Close()
		late.close() // a /send still hashing is answered (file_failed) before the writer stops
		close(stopEvents)
		wg.Wait()
		if cerr != nil {
			return fmt.Errorf("close node: %w", cerr)
		}
		return nil
	}

	if err := start(ctx); err != nil {
		if errors.Is(err, chat.ErrNickTaken) {
			err = fmt.Errorf("nick %q is taken on a rendezvous daemon: %w", node.Nick(), err)
		} else {
			err = fmt.Errorf("start: %w", err)
		}
		out.ch <- errorResult{err}
		return errors.Join(err, closeNode())
	}

	lines := make(chan inputLine)
	stopReading := make(chan struct{})
	defer close(stopReading)
	go readLines(stdin, lines, stopReading)

	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "reason", "signal")
			return closeNode()
		case <-out.failed:
			log.Info("shutting down", "reason", "stdout closed")
			return errors.Join(out.err, closeNode())
		case l, ok := <-lines:
			if !ok {
				log.Info("shutting down", "reason", "end of input")
				return closeNode()
			}
			if l.tooLong {
				out.ch <- errorResult{fmt.Errorf("line too long (max %d bytes), ignored", maxLineLen)}
				continue
			}
			tag, text, terr := cutTag(l.text)
			if terr != nil {
				out.ch <- errorResult{terr}
				continue
			}
			c, perr := parseCommand(text)
			if perr != nil {
				out.ch <- tagged{tag, errorResult{perr}}
				continue
			}
			if c.kind == cmdNone {
				continue
			}
			if c.kind == cmdQuit {
				log.Info("shutting down", "reason", "quit")
				return closeNode()
			}
			order.setTag(tag)
			v := sess.exec(ctx, c)
			if fs, ok := v.(fileSendingResult); ok {
				// Answered once hashed and offered; the next
				// commands are answered meanwhile (jsonorder.go).
				order.setTag("")
				late.start(out.ch, tag, fs.wait)
				continue
			}
			if s, ok := v.(sentResult); ok {
				// Its answer is the node's EventSent: let it pass first.
				order.waitSent(s.Message.ID)
			}
			order.setTag("")
			out.ch <- tagged{tag, v}
		}
	}
}

// forwardEvents copies node events to out until the channel closes or stop
// is closed; then it forwards what is already buffered.
//
// conv maps each event to what is written, and may return a function to
// call once it is queued for the writer.
func forwardEvents(events <-chan chat.Event, out chan<- any, stop <-chan struct{}, conv func(chat.Event) (any, func())) {
	pass := func(ev chat.Event) {
		v, queued := conv(ev)
		out <- v
		if queued != nil {
			queued()
		}
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			pass(ev)
		case <-stop:
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						return
					}
					pass(ev)
				default:
					return
				}
			}
		}
	}
}

// readLines reads bounded lines from r until EOF or an error, then closes
// lines. It stops early when stop is closed (it may stay blocked in r.Read
// until r returns; closing r ends it).
func readLines(r io.Reader, lines chan<- inputLine, stop <-chan struct{}) {
	defer close(lines)
	br := bufio.NewReaderSize(r, maxLineLen)
	emit := func(l inputLine) bool {
		select {
		case lines <- l:
			return true
		case <-stop:
			return false
		}
	}
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if !emit(inputLine{tooLong: true}) {
				return
			}
		} else if len(b) > 0 {
			if !emit(inputLine{text: string(b)}) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
