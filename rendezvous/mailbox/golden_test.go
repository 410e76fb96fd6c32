package mailbox

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGoldenWire pins the wire encoding documented in doc.go, so an
// independent implementation can be written from it.
func TestGoldenWire(t *testing.T) {
	id := bytes.Repeat([]byte{0xab}, IDLen)
	for _, c := range []struct {
		name string
		got  []byte
		want string
	}{
		{"deposit", (&request{op: OpDeposit, recipient: []byte{0x00, 0x24}, box: []byte{1, 2, 3}}).marshal(),
			"0801" + "12020024" + "1a03010203"},
		{"fetch", (&request{op: OpFetch, limit: 64, after: id}).marshal(),
			"0802" + "2040" + "3210" + hex.EncodeToString(id)},
		{"delete", (&request{op: OpDelete, ids: [][]byte{id}}).marshal(),
			"0803" + "2a10" + hex.EncodeToString(id)},
		{"deposit answer", (&response{status: StatusOK, id: id}).marshal(),
			"0800" + "1a10" + hex.EncodeToString(id)},
		{"refusal", (&response{status: StatusSenderFull, text: "no"}).marshal(),
			"08c901" + "12026e6f"},
		{"fetch answer", (&response{status: StatusOK, deposits: []Deposit{{ID: id, Box: []byte{1}, StoredMs: 1}}, more: true}).marshal(),
			"0800" + "2217" + "0a10" + hex.EncodeToString(id) + "120101" + "1801" + "2801"},
		{"delete answer", (&response{status: StatusOK, count: 2}).marshal(),
			"0800" + "3002"},
	} {
		require.Equal(t, c.want, hex.EncodeToString(c.got), c.name)
	}
}
