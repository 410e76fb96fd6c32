package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The benchmark runs its baseline servers as child processes of its own
	// executable; under go test that is this test binary.
	if kind := os.Getenv(childEnv); kind != "" {
		if err := serveChild(kind, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("bench child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// go-libp2p hosts started by tests leave these behind briefly.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/host/resource-manager.(*resourceManager).background"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		// The bandwidth meters' process-wide sweeper (the rooms rows count
		// bytes), started on first use and never stopped.
		goleak.IgnoreTopFunction("github.com/libp2p/go-flow-metrics.(*sweeper).runActive"),
	)
}

func TestLiteConnIdentifyAndEcho(t *testing.T) {
	h, err := newEchoHost()
	require.NoError(t, err)
	defer h.Close()
	hp, err := tcpHostPort(h.Addrs())
	require.NoError(t, err)

	priv, err := newIdentity()
	require.NoError(t, err)
	ctx := context.Background()
	lc, err := dialLite(ctx, hp, h.ID(), priv, 4)
	require.NoError(t, err)
	defer lc.Close()

	// The host identified us through our identify answer: it knows our key,
	// our addresses and our signed peer record.
	require.Eventually(t, func() bool {
		pk := h.Peerstore().PubKey(lc.id)
		return pk != nil && pk.Equals(priv.GetPublic()) && len(h.Peerstore().Addrs(lc.id)) == 4
	}, 10*time.Second, 10*time.Millisecond)

	s, err := lc.openStream(ctx, EchoProtocolID)
	require.NoError(t, err)
	c := newEchoClient(s, 40, 300)
	for range 10 {
		require.NoError(t, c.do())
	}
	require.NoError(t, s.Close())
}

func TestLiteConnWrongPeerFails(t *testing.T) {
	h, err := newEchoHost()
	require.NoError(t, err)
	defer h.Close()
	hp, err := tcpHostPort(h.Addrs())
	require.NoError(t, err)
	other, _, err := crypto.GenerateEd25519Key(nil)
	require.NoError(t, err)
	otherID, err := peer.IDFromPrivateKey(other)
	require.NoError(t, err)
	priv, err := newIdentity()
	require.NoError(t, err)
	_, err = dialLite(context.Background(), hp, otherID, priv, 1)
	require.Error(t, err, "noise must authenticate the server's peer ID")
}

func TestEchoFrames(t *testing.T) {
	t.Run("answers the requested size", func(t *testing.T) {
		var out bytes.Buffer
		in := bytes.NewReader(append(echoRequest(10, 123), echoRequest(4, 0)...))
		require.NoError(t, serveEchoFrames(struct {
			io.Reader
			io.Writer
		}{in, &out}))
		n, err := binary.ReadUvarint(&out)
		require.NoError(t, err)
		require.EqualValues(t, 123, n)
		out.Next(int(n))
		n, err = binary.ReadUvarint(&out)
		require.NoError(t, err)
		require.EqualValues(t, 0, n)
		require.Zero(t, out.Len())
	})
	bad := map[string][]byte{
		"frame too short":    {2, 0, 0},
		"frame too large":    binary.AppendUvarint(nil, maxEchoFrame+1),
		"response too large": append([]byte{4}, 0xff, 0xff, 0xff, 0xff),
		"truncated":          {10, 0, 0, 0},
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			err := serveEchoFrames(struct {
				io.Reader
				io.Writer
			}{bytes.NewReader(in), io.Discard})
			require.Error(t, err)
		})
	}
}

func TestParseFlags(t *testing.T) {
	cfg, format, err := parseFlags([]string{"-short", "-json", "-clients", "7"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "json", format)
	require.Equal(t, 7, cfg.Clients, "an explicit flag wins over -short")
	require.Equal(t, []int{100, 200}, cfg.Capacity)
	require.Equal(t, []float64{1000}, cfg.Rates)
	cfg, _, err = parseFlags([]string{"-rate", "500, 0,2000"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []float64{500, 2000}, cfg.Rates)

	for _, args := range [][]string{
		{"-clients", "0"},
		{"-mix", "1.5"},
		{"-capacity", "10,x"},
		{"-phases", "nope"},
		{"-record-addrs", "9"},
		{"extra"},
		{"-format", "xml"},
		{"-rate", "fast"},
	} {
		_, _, err := parseFlags(args, io.Discard)
		require.Error(t, err, "%v", args)
	}
}

func TestReadProc(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	s, err := readProc(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, s.RSSBytes)
	require.GreaterOrEqual(t, s.CPUSeconds, 0.0)
}

// TestShortRun runs what CI runs (-short -json, every phase) and checks the
// report is well formed and every phase produced rows. Never timings.
func TestShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the daemon")
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := run(ctx, []string{"-short", "-json", "-clients", "20", "-capacity", "30,60"}, &out, &errOut)
	require.NoError(t, err, "stderr:\n%s", errOut.String())

	var rep report
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.Empty(t, rep.Errors)
	groups := map[string]int{}
	for _, r := range rep.Results {
		groups[r.Group]++
		require.Positive(t, r.Ops, "%s %s", r.Group, r.Name)
		require.Zero(t, r.Errors, "%s %s: %s", r.Group, r.Name, r.FirstError)
		require.True(t, r.P50 > 0 || r.OpsPerSec > 0, "%s %s measured nothing", r.Group, r.Name)
		require.GreaterOrEqual(t, r.Max, r.P99)
		require.GreaterOrEqual(t, r.P99, r.P50)
	}
	require.Equal(t, 6, groups["baseline"])
	require.GreaterOrEqual(t, groups["rendezvous"], 3)
	require.Equal(t, 7, groups["chat"])    // with the floor row
	require.Equal(t, 5, groups["mailbox"]) // echo floor, DEPOSIT, FETCH+DELETE, two catch-ups
	require.Equal(t, 3, groups["rooms"])   // room of 50, its direct baseline, history catch-up
	for _, name := range []string{"DISCOVER", "REGISTER"} {
		var found bool
		for _, r := range rep.Results {
			if r.Group == "rendezvous" && r.Name == name {
				found = true
				require.NotEmpty(t, r.Baseline)
				require.Positive(t, r.Ratio)
				require.NotEmpty(t, r.Target)
				require.Nil(t, r.Pass, "short mode judges no target")
			}
		}
		require.True(t, found, name)
	}
	conns := map[string][]int{}
	for _, m := range rep.Memory {
		if m.Name == "connected clients" {
			conns[m.Server] = append(conns[m.Server], m.Count)
			require.Equal(t, m.Count, m.Held)
			require.True(t, m.Available)
			require.Positive(t, m.RSSBytes)
			if m.Server == "rendezvous" {
				require.NotNil(t, m.Go, "goroutines and heap from the daemon's /metrics")
				require.Positive(t, m.GoroutinesPer)
				require.Equal(t, "libp2p-echo", m.Baseline)
			}
		}
	}
	require.Equal(t, map[string][]int{"rendezvous": {30, 60}, "libp2p-echo": {30, 60}}, conns)
	require.Positive(t, rep.Sizes.DiscoverResp)
	require.True(t, strings.HasPrefix(rep.Command, "bench "))
}
