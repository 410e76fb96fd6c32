package rendezvous

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimitsValidate(t *testing.T) {
	require.NoError(t, DefaultLimits().validate())
	tests := []struct {
		name string
		mod  func(*Limits)
	}{
		{"zero min ttl", func(l *Limits) { l.MinTTL = 0 }},
		{"fractional ttl", func(l *Limits) { l.MinTTL = 1500 * time.Millisecond }},
		{"default below min", func(l *Limits) { l.DefaultTTL = time.Minute }},
		{"default above max", func(l *Limits) { l.DefaultTTL = 100 * time.Hour }},
		{"namespace len 0", func(l *Limits) { l.MaxNamespaceLen = 0 }},
		{"namespace len above spec", func(l *Limits) { l.MaxNamespaceLen = 256 }},
		{"per-peer cap 0", func(l *Limits) { l.MaxRegistrationsPerPeer = 0 }},
		{"total cap 0", func(l *Limits) { l.MaxRegistrations = 0 }},
		{"discover limit above spec", func(l *Limits) { l.MaxDiscoverLimit = 1001 }},
		{"rate 0", func(l *Limits) { l.RequestRate = 0 }},
		{"burst 0", func(l *Limits) { l.RequestBurst = 0 }},
		{"stream timeout 0", func(l *Limits) { l.StreamTimeout = 0 }},
		{"negative watch cap", func(l *Limits) { l.MaxWatches = -1 }},
		{"record size huge", func(l *Limits) { l.MaxRecordSize = MaxMessageSize }},
		{"watch queue 0", func(l *Limits) { l.WatchQueue = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.mod(&l)
			require.Error(t, l.validate())
			_, err := NewServer(nil, WithLimits(l))
			require.ErrorContains(t, err, "invalid limits")
		})
	}
}
