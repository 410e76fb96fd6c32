package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		wantTTL  time.Duration
		wantName string
	}{
		{"default", nil, nil, time.Hour, "x"},
		{"env", nil, map[string]string{"APP_MAX_TTL": "2h", "APP_NAME": "e"}, 2 * time.Hour, "e"},
		{"flag beats env", []string{"-max-ttl", "3h"}, map[string]string{"APP_MAX_TTL": "2h"}, 3 * time.Hour, "x"},
		{"empty env is a value", nil, map[string]string{"APP_NAME": ""}, time.Hour, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := New("app", "APP_", io.Discard)
			ttl := fs.Duration("max-ttl", time.Hour, "")
			name := fs.String("name", "x", "")
			require.NoError(t, fs.Parse(tc.args, lookup(tc.env)))
			require.Equal(t, tc.wantTTL, *ttl)
			require.Equal(t, tc.wantName, *name)
		})
	}
}

func TestNonEmpty(t *testing.T) {
	fs := New("app", "APP_", io.Discard)
	name := fs.String("name", "x", "")
	env := map[string]string{"APP_NAME": ""}
	require.NoError(t, fs.Parse(nil, NonEmpty(func(k string) string { return env[k] })))
	require.Equal(t, "x", *name, "empty is unset under NonEmpty")
}

func TestErrors(t *testing.T) {
	fs := New("app", "APP_", io.Discard)
	fs.Bool("json", false, "")
	err := fs.Parse(nil, lookup(map[string]string{"APP_JSON": "maybe"}))
	require.ErrorContains(t, err, `invalid value "maybe" for APP_JSON`)

	fs = New("app", "APP_", io.Discard)
	require.ErrorContains(t, fs.Parse([]string{"extra"}, lookup(nil)), `unexpected argument "extra"`)
	require.ErrorContains(t, fs.Parse([]string{"-nope"}, lookup(nil)), "not defined")
}

func TestPrintDefaults(t *testing.T) {
	var out bytes.Buffer
	fs := New("app", "APP_", &out)
	fs.Int("max-conns", 8, "most `connections`")
	fs.Bool("force-public", false, "be public")
	fs.Usage = fs.PrintDefaults
	err := fs.Parse([]string{"-h"}, lookup(nil))
	require.True(t, errors.Is(err, flag.ErrHelp))
	s := out.String()
	require.Contains(t, s, "  -max-conns connections\t[APP_MAX_CONNS]\n    \tmost connections (default 8)\n")
	require.Contains(t, s, "  -force-public\t[APP_FORCE_PUBLIC]\n    \tbe public\n")
	require.Equal(t, 2, strings.Count(s, "[APP_"))
}
