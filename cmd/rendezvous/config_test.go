package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/p2p-messaging/p2p-messaging/internal/dhtstore"
	"github.com/p2p-messaging/p2p-messaging/internal/paths"
	"github.com/p2p-messaging/p2p-messaging/internal/serverhost"
	"github.com/p2p-messaging/p2p-messaging/rendezvous"
)

func noEnv(string) (string, bool) { return "", false }

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, noEnv, io.Discard)
	require.NoError(t, err)
	var listen []string
	for _, a := range c.listen {
		listen = append(listen, a.String())
	}
	require.Equal(t, defaultListen, listen)
	want, err := paths.DaemonDataDir()
	require.NoError(t, err)
	require.Equal(t, want, c.dataDir)
	require.Equal(t, rendezvous.DefaultLimits(), c.limits)
	require.Equal(t, userNamespacePrefix, c.exclusivePrefix)
	require.Equal(t, defaultDisconnectGrace, c.disconnectGrace)
	require.False(t, c.forcePublic)
	require.Empty(t, c.metrics)
	require.Empty(t, c.bootstrap)
	require.Equal(t, int64(1<<20), c.relay.limitData)
	require.Equal(t, 10*time.Minute, c.relay.limitDuration)
	require.Equal(t, dhtstore.DefaultLimits(), c.dht)
	require.Equal(t, serverhost.DefaultRelayCircuitsPerSource, c.relay.maxCircuitsPerSource)
	require.Equal(t, serverhost.DefaultRelayCircuitsPerSourceIP, c.relay.maxCircuitsPerSourceIP)
	require.Equal(t, serverhost.DefaultRelayReservationRate, c.relay.reservationRatePerIP)
}

func TestConfigEnvPrecedence(t *testing.T) {
	env := mapEnv(map[string]string{
		"RENDEZVOUS_MAX_TTL":          "10h",
		"RENDEZVOUS_MIN_TTL":          "5m",
		"RENDEZVOUS_FORCE_PUBLIC":     "true",
		"RENDEZVOUS_EXCLUSIVE_PREFIX": "", // set but empty: exclusivity off
		"RENDEZVOUS_LISTEN":           "/ip4/127.0.0.1/tcp/1234,/ip6/::1/udp/1234/quic-v1",
		"RENDEZVOUS_RELAY_LIMIT_DATA": "2MiB",
		"RENDEZVOUS_METRICS":          "127.0.0.1:9000",
	})
	c, err := parseConfig([]string{"-max-ttl", "20h", "-metrics", "127.0.0.1:9100"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 20*time.Hour, c.limits.MaxTTL, "flag beats env")
	require.Equal(t, "127.0.0.1:9100", c.metrics, "flag beats env")
	require.Equal(t, 5*time.Minute, c.limits.MinTTL, "env beats default")
	require.True(t, c.forcePublic)
	require.Equal(t, "", c.exclusivePrefix)
	require.Len(t, c.listen, 2)
	require.Equal(t, int64(2<<20), c.relay.limitData)

	_, err = parseConfig(nil, mapEnv(map[string]string{"RENDEZVOUS_RATE": "fast"}), io.Discard)
	require.ErrorContains(t, err, "RENDEZVOUS_RATE")
}

func TestConfigErrors(t *testing.T) {
	id := "12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", "not-a-multiaddr"}, "-listen"},
		{[]string{"-listen", ","}, "no address"},
		{[]string{"-listen", "/ip4/127.0.0.1/tcp/1/p2p/" + id}, "no /p2p component"},
		{[]string{"-bootstrap", "/ip4/127.0.0.1/tcp/1"}, "missing /p2p"},
		{[]string{"-announce", "/nope"}, "-announce"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-log-format", "xml"}, "-log-format"},
		{[]string{"-max-ttl", "forever"}, "invalid value"},
		{[]string{"-min-ttl", "0s"}, "min ttl 0s must be positive"},
		{[]string{"-min-ttl", "3h"}, "ttls must satisfy"},
		{[]string{"-max-ttl", "90m500ms"}, "whole seconds"},
		{[]string{"-max-registrations", "0"}, "max registrations 0 must be positive"},
		{[]string{"-max-registrations-per-peer", "-1"}, "max registrations per peer -1 must be positive"},
		{[]string{"-max-discover-limit", "5000"}, "max discover limit 5000 out of range 1..1000"},
		{[]string{"-rate", "0"}, "request rate 0 must be positive"},
		{[]string{"-burst", "0"}, "request burst 0 must be positive"},
		{[]string{"-max-watches", "-1"}, "must not be negative"},
		{[]string{"-exclusive-prefix", strings.Repeat("x", 256)}, "-exclusive-prefix"},
		{[]string{"-relay-max-reservations", "0"}, "-relay-max-reservations must be positive"},
		{[]string{"-relay-max-circuits", "0"}, "-relay-max-circuits"},
		{[]string{"-relay-max-reservations-per-ip", "0"}, "-relay-max-reservations-per-ip"},
		{[]string{"-relay-limit-duration", "0s"}, "-relay-limit-duration"},
		{[]string{"-relay-limit-data", "lots"}, "invalid size"},
		{[]string{"-relay-limit-data", "0"}, "-relay-limit-data must be positive"},
		{[]string{"-conns-max", "10"}, "-conns-max"},
		{[]string{"-conns-per-ip", "0"}, "-conns-per-ip"},
		{[]string{"-autonat-rate", "-1"}, "-autonat-rate"},
		{[]string{"-autonat-rate-per-peer", "0"}, "-autonat-rate-per-peer"},
		{[]string{"-relay-max-circuits-per-source", "0"}, "-relay-max-circuits-per-source must be positive"},
		{[]string{"-relay-max-circuits-per-source-ip", "0"}, "-relay-max-circuits-per-source-ip must be positive"},
		{[]string{"-relay-reservation-rate-per-ip", "0"}, "-relay-reservation-rate-per-ip must be positive"},
		{[]string{"-dht-max-provider-records", "0"}, "max provider records must be positive"},
		{[]string{"-dht-max-provider-records-per-peer", "0"}, "max provider records per peer must be positive"},
		{[]string{"-dht-max-provider-records", "10", "-dht-max-provider-records-per-peer", "11"}, "exceeds the total"},
		{[]string{"-dht-max-value-records", "-1"}, "max value records must be positive"},
		{[]string{"-no-such-flag"}, "not defined"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		_, err := parseConfig(tc.args, noEnv, io.Discard)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}

func TestHelpListsEnv(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"-h"}, noEnv, &out)
	require.True(t, errors.Is(err, flag.ErrHelp))
	usage := out.String()
	sc := bufio.NewScanner(strings.NewReader(usage))
	found := 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), "[RENDEZVOUS_") {
			found++
		}
	}
	require.GreaterOrEqual(t, found, 30)
	require.Contains(t, usage, "[RENDEZVOUS_FORCE_PUBLIC]")
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1024": 1024, "1KiB": 1024, "1 MiB": 1 << 20, "3GiB": 3 << 30, "5kB": 5000, "2MB": 2_000_000, "7B": 7,
	} {
		got, err := parseByteSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "1TiB", "99999999999GiB"} {
		_, err := parseByteSize(in)
		require.Error(t, err, in)
	}
}

func TestByteSizeString(t *testing.T) {
	for n, want := range map[int64]string{1 << 20: "1MiB", 256 << 10: "256KiB", 3 << 30: "3GiB", 1000: "1000", 1536: "1536", 0: "0"} {
		b := byteSize(n)
		require.Equal(t, want, b.String())
		var back byteSize
		require.NoError(t, back.Set(want))
		require.Equal(t, b, back)
	}
}

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"1", "1KiB", "2 MiB", "3GB", "", "-1", "9223372036854775807", "1e9", "MiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseByteSize(s)
		if err == nil && n < 0 {
			t.Fatalf("%q parsed to negative %d", s, n)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add("-listen", "/ip4/127.0.0.1/tcp/0", "RENDEZVOUS_MAX_TTL", "1h")
	f.Add("-bootstrap", "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDqvf1rarn59QDCwmmkTb85aG86cQMxtzKY4JtMExipHU", "RENDEZVOUS_RATE", "x")
	f.Add("-relay-limit-data", "1MiB", "RENDEZVOUS_ANNOUNCE", "/ip6/::1/udp/1/quic-v1")
	f.Add("-announce", ",,,", "RENDEZVOUS_LISTEN", "")
	f.Fuzz(func(t *testing.T, flagName, flagValue, envKey, envValue string) {
		env := mapEnv(map[string]string{envKey: envValue})
		c, err := parseConfig([]string{flagName, flagValue, "-data-dir", "/nonexistent"}, env, io.Discard)
		if err == nil && (len(c.listen) == 0 || c.connsMax < 64) {
			t.Fatalf("invalid config accepted: %+v", c)
		}
	})
}

// The name and record limits of the rendezvous server have flags and
// environment variables, and a bad value is refused by the library's check.
func TestConfigNameFlags(t *testing.T) {
	c, err := parseConfig([]string{
		"-name-lease", "72h", "-max-names", "500", "-max-names-per-peer", "1",
		"-claim-difficulty", "12", "-claim-burst", "3", "-claim-interval", "1m",
		"-holder-share", "0.5", "-holder-quota", "4", "-max-record-addrs", "8",
	}, mapEnv(map[string]string{"RENDEZVOUS_CLAIM_BURST": "99"}), io.Discard)
	require.NoError(t, err)
	l := c.limits
	require.Equal(t, 72*time.Hour, l.LeaseDuration)
	require.Equal(t, 500, l.MaxNames)
	require.Equal(t, 1, l.MaxNamesPerPeer)
	require.Equal(t, 12, l.ClaimDifficulty)
	require.Equal(t, 3, l.ClaimBurst, "the flag wins over the environment")
	require.Equal(t, time.Minute, l.ClaimInterval)
	require.Equal(t, 0.5, l.HolderShare)
	require.Equal(t, 4, l.HolderQuota)
	require.Equal(t, 8, l.MaxRecordAddrs)

	c, err = parseConfig(nil, mapEnv(map[string]string{"RENDEZVOUS_NAME_LEASE": "24h"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 24*time.Hour, c.limits.LeaseDuration)

	_, err = parseConfig([]string{"-holder-share", "1.5"}, noEnv, io.Discard)
	require.Error(t, err)
}
