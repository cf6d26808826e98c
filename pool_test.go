package mesh

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBufferClass(t *testing.T) {
	for _, c := range []struct{ cap, class int }{
		{0, -1}, {minPooledBuffer - 1, -1},
		{minPooledBuffer, 0}, {4<<10 - 1, 0},
		{4 << 10, 1}, {16<<10 - 1, 1},
		{16 << 10, 2}, {64 << 10, 3}, {256 << 10, 4},
		{1 << 20, 5}, {maxPooledBuffer, 5}, {maxPooledBuffer + 1, -1},
	} {
		require.Equal(t, c.class, bufferPool.class(c.cap), "capacity %d", c.cap)
	}
}

func TestGetBufferSize(t *testing.T) {
	// Fill every class, then ask for sizes at and between class bounds:
	// whatever the pool hands out must hold the size asked for.
	for k := range sizedClasses {
		putBuffer(make([]byte, 0, minPooledBuffer<<(2*k)))
	}
	for _, n := range []int{0, 1, minPooledBuffer, minPooledBuffer + 1, 5000, 16 << 10, 100 << 10, 1<<20 + 1, maxPooledBuffer, maxPooledBuffer + 1} {
		b := bufferPool.getSize(n)
		require.Zero(t, len(b))
		require.GreaterOrEqual(t, cap(b), n)
		putBuffer(b)
	}
	// Buffers too small or too large are not pooled.
	putBuffer(make([]byte, 10))
	putBuffer(make([]byte, maxPooledBuffer+1))
	for b := getBuffer(); b != nil; b = getBuffer() {
		require.NotEqual(t, -1, bufferPool.class(cap(b)))
	}
}

func TestSlicePoolAllocatesNothingWhenWarm(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	var sp slicePool[uint64]
	sp.maxKeep, sp.plain = 1<<10, true
	sp.put(make([]uint64, 0, 64))
	allocs := testing.AllocsPerRun(1000, func() {
		s := sp.get()
		s = append(s, 1, 2, 3)
		sp.put(s)
	})
	require.Zero(t, allocs)
	allocs = testing.AllocsPerRun(1000, func() {
		putBuffer(bufferPool.getSize(3000))
	})
	require.Zero(t, allocs)
}

func TestSlicePoolClearsPointers(t *testing.T) {
	var sp slicePool[*int]
	sp.maxKeep = 16
	x := 1
	s := append(make([]*int, 0, 4), &x, &x)
	sp.put(s)
	require.Nil(t, s[:2][0], "a list given back keeps no pointer")
	require.Nil(t, s[:2][1])
}

func TestSizedPoolGrowKeepsContent(t *testing.T) {
	sp := newSizedPool[uint64](16, 1<<12)
	s := sp.get()
	for i := range 5000 {
		s = sp.grow(s, 1)
		require.GreaterOrEqual(t, cap(s)-len(s), 1)
		s = append(s, uint64(i))
	}
	for i, v := range s {
		require.Equal(t, uint64(i), v)
	}
	s = s[:10]
	require.Same(t, &s[0], &sp.grow(s, 5)[0], "a list with room is kept")
	require.Equal(t, -1, sp.class(15))
	require.Equal(t, 0, sp.class(16))
	require.Equal(t, 1, sp.class(64))
	require.Equal(t, 4, sp.class(1<<12))
	require.Equal(t, -1, sp.class(1<<12+1))
}
