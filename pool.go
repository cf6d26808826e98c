package mesh

import (
	"math/bits"
	"sync"
)

// slicePool recycles the lists a connection's writer and reader build for
// a batch, between batches and between connections: during a burst of
// topology traffic every batch needs lists as long as the mesh is large,
// and growing fresh ones each time costs more than the work they serve.
// An idle connection gives its lists back rather than keep them.
//
// A sync.Pool holds pointers: a list goes in boxed in a *[]T. The boxes
// are recycled too (in boxes), so that giving a list back and taking one
// allocate nothing once the pool is warm.
type slicePool[T any] struct {
	p       sync.Pool
	boxes   sync.Pool
	maxKeep int // lists of a larger capacity are dropped
	// plain is set when T holds no pointers: its lists need no
	// clearing when given back.
	plain bool
}

// get returns an empty list, with some capacity when one was given back.
func (sp *slicePool[T]) get() []T {
	v, ok := sp.p.Get().(*[]T)
	if !ok {
		return nil
	}
	s := (*v)[:0]
	*v = nil
	sp.boxes.Put(v)
	return s
}

// put gives a list back; it must not be used afterwards. Its elements are
// cleared, so that the pool keeps nothing they point to alive.
func (sp *slicePool[T]) put(s []T) {
	if cap(s) == 0 || cap(s) > sp.maxKeep {
		return
	}
	if !sp.plain {
		s = s[:cap(s)]
		clear(s)
	}
	v, ok := sp.boxes.Get().(*[]T)
	if !ok {
		v = new([]T)
	}
	*v = s[:0]
	sp.p.Put(v)
}

var (
	namesPool   = slicePool[PeerName]{maxKeep: maxDigestRecords, plain: true}
	recordsPool = slicePool[digestEntry]{maxKeep: maxDigestRecords, plain: true}
	updatesPool = slicePool[peerUpdate]{maxKeep: 1 << 14}
	// candidatesPool holds the lists of announced entries newer than ours
	// a reader builds (see pullNewer).
	candidatesPool = slicePool[pullCandidate]{maxKeep: maxDigestRecords, plain: true}
)

// Byte buffers (queued messages, frames, encoded topology) are pooled by
// capacity class, so that a writer that needs a large buffer finds one of
// that size rather than growing a small one: class k holds the buffers of
// capacity in [minPooledBuffer<<(2k), minPooledBuffer<<(2k+2)), the last
// class those up to maxPooledBuffer. Smaller buffers are not kept: they
// cost less to allocate than to pool.
const (
	minPooledBuffer = 1 << 10
	maxPooledBuffer = 4 << 20
	bufferClasses   = 6 // 1 KiB, 4 KiB, ... 1 MiB, up to 4 MiB
)

var bufferPools [bufferClasses]slicePool[byte]

func init() {
	for k := range bufferPools {
		bufferPools[k] = slicePool[byte]{maxKeep: maxPooledBuffer, plain: true}
	}
}

// bufferClass returns the class of a buffer of capacity c, or -1 for one
// too small or too large to pool.
func bufferClass(c int) int {
	if c < minPooledBuffer || c > maxPooledBuffer {
		return -1
	}
	return min((bits.Len(uint(c))-1-bits.Len(minPooledBuffer-1))/2, bufferClasses-1)
}

// getBuffer returns an empty buffer from the pool, the smallest class
// first, or nil.
func getBuffer() []byte {
	for k := range bufferPools {
		if b := bufferPools[k].get(); b != nil {
			return b
		}
	}
	return nil
}

// getBufferSize returns an empty buffer of capacity at least n.
func getBufferSize(n int) []byte {
	k := 0
	for k < bufferClasses && minPooledBuffer<<(2*k) < n {
		k++
	}
	if k == bufferClasses {
		return make([]byte, 0, n)
	}
	// Every buffer of class k or above is large enough.
	for c := k; c < bufferClasses; c++ {
		if b := bufferPools[c].get(); b != nil {
			return b
		}
	}
	return make([]byte, 0, max(n, minPooledBuffer<<(2*k)))
}

// putBuffer gives a buffer back to the pool; it must not be used
// afterwards.
func putBuffer(b []byte) {
	if k := bufferClass(cap(b)); k >= 0 {
		bufferPools[k].put(b)
	}
}
