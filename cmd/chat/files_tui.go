package main

import (
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/p2p-messaging/p2p-messaging/chat"
)

// Terminal rendering of file transfers. The text functions are pure so the
// new TUI (issue 12) can use them: fileProgressLine is the progress bar,
// fileLines the lines for results and one-off events. model.handleFile
// wires them into the current TUI: one line per transfer that is updated
// in place.

// progressBarWidth is the number of cells of the bar.
const progressBarWidth = 20

// rateMeter estimates a transfer's rate from its progress events
// (an exponentially weighted average of the rate between two events).
type rateMeter struct {
	at    time.Time
	bytes int64
	rate  float64 // bytes per second; 0 = unknown yet
}

func (r *rateMeter) update(now time.Time, bytes int64) float64 {
	if !r.at.IsZero() {
		if dt := now.Sub(r.at).Seconds(); dt > 0 && bytes >= r.bytes {
			inst := float64(bytes-r.bytes) / dt
			if r.rate == 0 {
				r.rate = inst
			} else {
				r.rate = 0.7*r.rate + 0.3*inst
			}
		}
	}
	if r.at.IsZero() || now.Sub(r.at) > 0 {
		r.at, r.bytes = now, bytes
	}
	return r.rate
}

// fileProgressLine is the progress bar of one transfer, e.g.
//
//	⇣ photo.jpg [########------------] 42% 4.2 MiB/10.0 MiB 1.5 MiB/s ETA 4s
//
// rate is in bytes per second (0: unknown, no rate or ETA shown).
func fileProgressLine(incoming bool, name string, bytes, size int64, rate float64) string {
	arrow := "⇡"
	if incoming {
		arrow = "⇣"
	}
	frac := 1.0
	if size > 0 {
		frac = float64(min(bytes, size)) / float64(size)
	}
	fill := int(frac * progressBarWidth)
	bar := strings.Repeat("#", fill) + strings.Repeat("-", progressBarWidth-fill)
	s := fmt.Sprintf("%s %s [%s] %3d%% %s/%s", arrow, sanitize(name), bar, int(frac*100), humanBytes(bytes), humanBytes(size))
	if rate > 0 {
		s += " " + humanBytes(int64(rate)) + "/s"
		if bytes < size {
			eta := time.Duration(float64(size-bytes) / rate * float64(time.Second))
			s += " ETA " + humanDuration(eta)
		}
	}
	return s
}

// humanBytes is n in B, KiB, MiB, GiB or TiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", f, []string{"B", "KiB", "MiB", "GiB", "TiB"}[i])
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()+0.5))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// fileLines are the lines shown for a file result or a one-off file event
// (offers, states, completion, failure, the /transfers list). Progress is
// fileProgressLine's.
func fileLines(v any) []string {
	switch e := v.(type) {
	case fileSendingResult:
		t := e.Transfer
		return []string{fmt.Sprintf("hashing %s (%s) before offering it to %s (/transfers shows how far)", sanitize(t.Name), humanBytes(t.Size), sanitize(t.Nick))}
	case fileOfferedResult:
		t := e.Transfer
		return []string{fmt.Sprintf("offered %s (%s) to %s; waiting for them to accept", sanitize(t.Name), humanBytes(t.Size), sanitize(t.Nick))}
	case fileFailedResult:
		return []string{fmt.Sprintf("sending %s to %s failed: %s", sanitize(e.Transfer.Name), sanitize(e.Transfer.Nick), sanitize(e.Err.Error()))}
	case fileAcceptedResult:
		return []string{fmt.Sprintf("accepted %s (%s)", sanitize(e.Transfer.Name), humanBytes(e.Transfer.Size))}
	case fileRejectedResult:
		return []string{fmt.Sprintf("rejected %s", sanitize(e.Transfer.Name))}
	case transfersResult:
		if len(e.Transfers) == 0 {
			return []string{"no file transfers"}
		}
		var out []string
		for _, t := range e.Transfers {
			dir := "to"
			if t.Incoming {
				dir = "from"
			}
			l := fmt.Sprintf("%s %s %s %s: %s/%s %s", shortTransferID(t.ID), sanitize(t.Name), dir, sanitize(t.Nick), humanBytes(t.Bytes), humanBytes(t.Size), t.State)
			if t.Err != "" {
				l += " (" + sanitize(t.Err) + ")"
			}
			out = append(out, l)
		}
		return out
	case chat.EventFileOffer:
		return []string{fmt.Sprintf("%s offers %s (%s, sha256 %.16s…): /accept %s [dir] or /reject %s",
			sanitize(e.From), sanitize(e.Name), humanBytes(e.Size), e.Hash, shortTransferID(e.ID), shortTransferID(e.ID))}
	case chat.EventFileState:
		if e.State == "waiting_direct" {
			return []string{fmt.Sprintf("transfer %s: waiting for a direct connection (only a relay now)", shortTransferID(e.ID))}
		}
		return nil
	case chat.EventFileDone:
		if e.Incoming {
			return []string{fmt.Sprintf("received %s (sha256 %.16s… checked)", sanitize(e.Path), e.Hash)}
		}
		return []string{fmt.Sprintf("transfer %s: the recipient has the file", shortTransferID(e.ID))}
	case chat.EventFileFailed:
		return []string{fmt.Sprintf("transfer %s failed: %s", shortTransferID(e.ID), sanitize(e.Err))}
	}
	return nil
}

// shortTransferID is the prefix of an id that /accept and /reject take.
func shortTransferID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// fileView is the TUI's state for transfers: the progress line of each
// and its rate meter.
type fileView struct {
	lines  map[string]*chatLine
	meters map[string]*rateMeter
	names  map[string]string
}

// handleFile shows a file result or event: in the conversation with the
// peer it concerns (the /transfers list in the current one), the progress
// as one line per transfer updated in place.
func (m *model) handleFile(v any) tea.Cmd {
	fv := &m.files
	if fv.lines == nil {
		fv.lines, fv.meters, fv.names = map[string]*chatLine{}, map[string]*rateMeter{}, map[string]string{}
	}
	c := m.cur()
	switch e := v.(type) {
	case chat.EventFileOffer:
		fv.names[e.ID] = e.Name
		c = m.conv(e.From)
	case fileSendingResult:
		fv.names[e.Transfer.ID] = e.Transfer.Name
		c = m.conv(e.Transfer.Nick)
		for _, l := range fileLines(v) {
			m.addTo(c, &chatLine{kind: lineInfo, text: l})
		}
		// The answer comes once the file is hashed and offered.
		conv, wait := c.key, e.wait
		return func() tea.Msg { return resultMsg{conv: conv, v: wait()} }
	case fileFailedResult:
		c = m.conv(e.Transfer.Nick)
		m.forgetFile(e.Transfer.ID)
	case fileOfferedResult:
		fv.names[e.Transfer.ID] = e.Transfer.Name
		c = m.conv(e.Transfer.Nick)
	case fileAcceptedResult:
		c = m.conv(e.Transfer.Nick)
	case fileRejectedResult:
		c = m.conv(e.Transfer.Nick)
	case chat.EventFileProgress:
		meter := fv.meters[e.ID]
		if meter == nil {
			meter = &rateMeter{}
			fv.meters[e.ID] = meter
		}
		name := fv.names[e.ID]
		if name == "" {
			name = shortTransferID(e.ID)
		}
		text := fileProgressLine(e.Incoming, name, e.Bytes, e.Size, meter.update(m.now(), e.Bytes))
		if l := fv.lines[e.ID]; l != nil {
			l.text = text
		} else {
			l = &chatLine{kind: lineInfo, text: text}
			fv.lines[e.ID] = l
			m.addTo(m.conv(m.nickOf(e.Peer)), l)
		}
		return nil
	case chat.EventFileState:
		c = m.conv(m.nickOf(e.Peer))
	case chat.EventFileDone:
		c = m.conv(m.nickOf(e.Peer))
		m.forgetFile(e.ID)
	case chat.EventFileFailed:
		c = m.conv(m.nickOf(e.Peer))
		m.forgetFile(e.ID)
	}
	for _, l := range fileLines(v) {
		m.addTo(c, &chatLine{kind: lineInfo, text: l})
	}
	if _, ok := v.(chat.EventFileOffer); ok {
		return m.alert(c)
	}
	return nil
}

func (m *model) forgetFile(id string) {
	delete(m.files.lines, id)
	delete(m.files.meters, id)
	delete(m.files.names, id)
}
