package mesh

import "sync"

// slicePool recycles the lists a connection's writer and reader build for
// a batch, between batches and between connections: during a burst of
// topology traffic every batch needs lists as long as the mesh is large,
// and growing fresh ones each time costs more than the work they serve.
// An idle connection gives its lists back rather than keep them.
type slicePool[T any] struct {
	p       sync.Pool
	maxKeep int // lists of a larger capacity are dropped
	// plain is set when T holds no pointers: its lists need no
	// clearing when given back.
	plain bool
}

// get returns an empty list, with some capacity when one was given back.
func (sp *slicePool[T]) get() []T {
	if v, ok := sp.p.Get().(*[]T); ok {
		return (*v)[:0]
	}
	return nil
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
	s = s[:0]
	sp.p.Put(&s)
}

var (
	namesPool   = slicePool[PeerName]{maxKeep: maxDigestRecords, plain: true}
	recordsPool = slicePool[digestEntry]{maxKeep: maxDigestRecords, plain: true}
	updatesPool = slicePool[peerUpdate]{maxKeep: 1 << 14}
	// candidatesPool holds the lists of announced entries newer than ours
	// a reader builds (see pullNewer).
	candidatesPool = slicePool[pullCandidate]{maxKeep: maxDigestRecords, plain: true}
)
