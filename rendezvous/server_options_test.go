package rendezvous

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestServerOptionErrors(t *testing.T) {
	_, err := NewServer(nil, WithLogger(nil))
	require.Error(t, err)
	_, err = NewServer(nil, WithClock(nil))
	require.Error(t, err)
}
