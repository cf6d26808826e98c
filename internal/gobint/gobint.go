// Package gobint encodes and decodes the integers of encoding/gob's wire
// format, which mesh speaks (weave mesh's version 1 protocol, its topology
// and meshconn's datagrams) without using encoding/gob.
package gobint

import (
	"errors"
	"math/bits"
)

var (
	// ErrTruncated is returned when the buffer ends inside an integer.
	ErrTruncated = errors.New("gob integer truncated")
	// ErrBadUint is returned for a byte count above 8.
	ErrBadUint = errors.New("gob integer longer than 8 bytes")
)

// Len returns the number of bytes AppendUint writes for v.
func Len(v uint64) int {
	if v < 0x80 {
		return 1
	}
	return 1 + (bits.Len64(v)+7)/8
}

// AppendUint appends v in gob's unsigned integer encoding: values below
// 128 as one byte, larger ones as the negated byte count followed by the
// minimal big-endian bytes.
func AppendUint(dst []byte, v uint64) []byte {
	if v < 0x80 {
		return append(dst, byte(v))
	}
	n := (bits.Len64(v) + 7) / 8
	dst = append(dst, byte(-n))
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(v>>(8*uint(i))))
	}
	return dst
}

// IntToUint maps a signed integer to the unsigned value gob writes for it:
// the value shifted left one bit, complemented and with the low bit set
// when negative.
func IntToUint(v int64) uint64 {
	if v < 0 {
		return uint64(^v)<<1 | 1
	}
	return uint64(v) << 1
}

// UintToInt is the inverse of IntToUint.
func UintToInt(u uint64) int64 {
	if u&1 != 0 {
		return ^int64(u >> 1)
	}
	return int64(u >> 1)
}

// Uint decodes the unsigned integer at the start of b and returns it with
// the number of bytes it took. Like gob itself it accepts encodings longer
// than necessary: whoever requires the minimal one compares n with Len(v).
func Uint(b []byte) (v uint64, n int, err error) {
	if len(b) == 0 {
		return 0, 0, ErrTruncated
	}
	c := b[0]
	if c < 0x80 {
		return uint64(c), 1, nil
	}
	count := 256 - int(c)
	if count > 8 {
		return 0, 0, ErrBadUint
	}
	if count > len(b)-1 {
		return 0, 0, ErrTruncated
	}
	for _, x := range b[1 : 1+count] {
		v = v<<8 | uint64(x)
	}
	return v, 1 + count, nil
}
