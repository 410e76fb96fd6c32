package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "": slog.LevelInfo,
		"warn": slog.LevelWarn, "warning": slog.LevelWarn, "error": slog.LevelError,
	} {
		got, err := ParseLevel(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := ParseLevel("loud")
	require.ErrorContains(t, err, `invalid log level "loud"`)
}

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "warn", "json")
	require.NoError(t, err)
	l.Info("hidden")
	l.Warn("shown", "peer", "x")
	var rec map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &rec))
	require.Equal(t, "shown", rec["msg"])
	require.Equal(t, "x", rec["peer"])

	buf.Reset()
	l, err = New(&buf, "debug", "text")
	require.NoError(t, err)
	l.Debug("hello")
	require.True(t, strings.Contains(buf.String(), "msg=hello"))

	_, err = New(&buf, "info", "xml")
	require.ErrorContains(t, err, `invalid log format "xml"`)
}
