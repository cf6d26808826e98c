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
	namesPool   = newSizedPool[PeerName](16, maxDigestRecords)
	recordsPool = newSizedPool[digestEntry](16, maxDigestRecords)
	updatesPool = slicePool[peerUpdate]{maxKeep: 1 << 14}
	// candidatesPool holds the lists of announced entries newer than ours
	// a reader builds (see pullNewer).
	candidatesPool = slicePool[pullCandidate]{maxKeep: maxDigestRecords, plain: true}
	// bufferPool holds byte buffers: queued messages, frames, encoded
	// topology. They go back after each batch, so that an idle connection
	// holds no buffer and a busy one reuses warm memory.
	bufferPool = newSizedPool[byte](minPooledBuffer, maxPooledBuffer)
)

// A sizedPool holds lists of pointer-free elements by capacity class, so
// that a user that needs a long list finds one of that size rather than
// growing a short one, when short and long lists are used alike (a few
// names announced, or a digest of the whole mesh; a heartbeat, or an
// encoded topology): class k holds the lists of capacity in
// [min<<(2k), min<<(2k+2)), the last class those up to max. Shorter lists
// are not kept: they cost less to allocate than to pool.
type sizedPool[T any] struct {
	classes  [sizedClasses]slicePool[T]
	min, max int
}

const sizedClasses = 6

func newSizedPool[T any](min, max int) *sizedPool[T] {
	sp := &sizedPool[T]{min: min, max: max}
	for k := range sp.classes {
		sp.classes[k] = slicePool[T]{maxKeep: max, plain: true}
	}
	return sp
}

// class returns the class of a list of capacity c, or -1 for one too
// short or too long to pool.
func (sp *sizedPool[T]) class(c int) int {
	if c < sp.min || c > sp.max {
		return -1
	}
	return min((bits.Len(uint(c))-bits.Len(uint(sp.min)))/2, sizedClasses-1)
}

// get returns an empty list from the pool, the shortest class first, or
// nil.
func (sp *sizedPool[T]) get() []T {
	for k := range sp.classes {
		if s := sp.classes[k].get(); s != nil {
			return s
		}
	}
	return nil
}

// getSize returns an empty list of capacity at least n.
func (sp *sizedPool[T]) getSize(n int) []T {
	k := 0
	for k < sizedClasses && sp.min<<(2*k) < n {
		k++
	}
	if k == sizedClasses {
		return make([]T, 0, n)
	}
	// Every list of class k or above is long enough.
	for c := k; c < sizedClasses; c++ {
		if s := sp.classes[c].get(); s != nil {
			return s
		}
	}
	return make([]T, 0, max(n, sp.min<<(2*k)))
}

// put gives a list back; it must not be used afterwards.
func (sp *sizedPool[T]) put(s []T) {
	if k := sp.class(cap(s)); k >= 0 {
		sp.classes[k].put(s)
	}
}

// grow returns s with room for n more elements. A list that must grow
// is replaced by a pooled one of at least twice its capacity, and given
// back: s must not be used afterwards.
func (sp *sizedPool[T]) grow(s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	ns := append(sp.getSize(max(len(s)+n, 2*cap(s))), s...)
	sp.put(s)
	return ns
}

// Byte buffers are pooled from 1 KiB to 4 MiB.
const (
	minPooledBuffer = 1 << 10
	maxPooledBuffer = 4 << 20
)

func getBuffer() []byte  { return bufferPool.get() }
func putBuffer(b []byte) { bufferPool.put(b) }
