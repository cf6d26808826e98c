package gobint

import (
	"bytes"
	"encoding/gob"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// Unsigned and signed integers round-trip, and encode as encoding/gob
// encodes them.
func TestRoundTripAndGobCompatibility(t *testing.T) {
	for _, v := range []uint64{0, 1, 0x7f, 0x80, 0xff, 0x100, 1 << 32, math.MaxUint64} {
		b := AppendUint(nil, v)
		require.Len(t, b, Len(v))
		got, n, err := Uint(b)
		require.NoError(t, err)
		require.Equal(t, v, got)
		require.Equal(t, len(b), n)
	}
	for _, v := range []int64{0, 1, -1, 63, -64, 64, math.MaxInt64, math.MinInt64} {
		require.Equal(t, v, UintToInt(IntToUint(v)))
	}
	// gob encodes a bare uint as one message: its length, then the type
	// id of uint (3) as a signed integer, a zero byte, and the value.
	var buf bytes.Buffer
	require.NoError(t, gob.NewEncoder(&buf).Encode(uint64(300)))
	want := AppendUint(nil, IntToUint(3))
	want = append(want, 0)
	want = AppendUint(want, 300)
	want = append(AppendUint(nil, uint64(len(want))), want...)
	require.Equal(t, want, buf.Bytes())
}

func TestUintErrors(t *testing.T) {
	_, _, err := Uint(nil)
	require.ErrorIs(t, err, ErrTruncated)
	_, _, err = Uint([]byte{0xfe, 0x01}) // two bytes announced, one there
	require.ErrorIs(t, err, ErrTruncated)
	_, _, err = Uint([]byte{0xf7, 1, 2, 3, 4, 5, 6, 7, 8, 9}) // nine bytes
	require.ErrorIs(t, err, ErrBadUint)
	// A longer encoding than needed is accepted, and its length told.
	v, n, err := Uint([]byte{0xfe, 0x00, 0x05})
	require.NoError(t, err)
	require.Equal(t, uint64(5), v)
	require.Equal(t, 3, n)
	require.NotEqual(t, Len(v), n)
}
