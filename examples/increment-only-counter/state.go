package main

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/gossip-mesh/mesh"
)

// state is a grow-only counter (a G-counter CRDT). Every peer owns one
// entry, the number of increments it has made, and only ever raises it.
// The value of the counter is the sum of all entries. Two states merge by
// keeping, for every peer, the larger of the two counts, which makes merging
// idempotent, commutative and associative: peers converge on the same value
// whatever the order in which, and however often, they hear of each other's
// increments.
//
// A state is safe for concurrent use.
type state struct {
	mu     sync.RWMutex
	counts map[mesh.PeerName]int
	self   mesh.PeerName // the peer whose entry incr raises
}

// The state is what travels on the gossip channel.
var _ mesh.GossipData = (*state)(nil)

// newState returns an empty counter owned by self.
func newState(self mesh.PeerName) *state {
	return &state{counts: make(map[mesh.PeerName]int), self: self}
}

// newDelta wraps a set of counts (which it takes ownership of) in a state.
// It is used for the partial states sent to other peers.
func newDelta(self mesh.PeerName, counts map[mesh.PeerName]int) *state {
	return &state{counts: counts, self: self}
}

// get returns the value of the counter: the sum of every peer's count.
func (st *state) get() int {
	st.mu.RLock()
	defer st.mu.RUnlock()
	total := 0
	for _, n := range st.counts {
		total += n
	}
	return total
}

// snapshot returns a copy of the per-peer counts.
func (st *state) snapshot() map[mesh.PeerName]int {
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make(map[mesh.PeerName]int, len(st.counts))
	for name, n := range st.counts {
		out[name] = n
	}
	return out
}

// copyState returns an independent copy of the whole state.
func (st *state) copyState() *state {
	return newDelta(st.self, st.snapshot())
}

// incr adds one to our own entry and returns a delta holding just that
// entry, ready to be broadcast.
func (st *state) incr() *state {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.counts[st.self]++
	return newDelta(st.self, map[mesh.PeerName]int{st.self: st.counts[st.self]})
}

// merge folds counts into the state and returns a delta with the entries
// that raised ours, or nil when counts brought nothing new. counts is not
// modified.
func (st *state) merge(counts map[mesh.PeerName]int) *state {
	st.mu.Lock()
	defer st.mu.Unlock()
	var delta map[mesh.PeerName]int
	for name, n := range counts {
		if n <= st.counts[name] {
			continue
		}
		st.counts[name] = n
		if delta == nil {
			delta = make(map[mesh.PeerName]int)
		}
		delta[name] = n
	}
	if delta == nil {
		return nil
	}
	return newDelta(st.self, delta)
}

// mergeReceived merges the counts of a broadcast. The returned delta (nil
// when nothing was new) is what gets relayed further down the broadcast
// tree.
func (st *state) mergeReceived(counts map[mesh.PeerName]int) *state {
	return st.merge(counts)
}

// mergeDelta merges counts gossiped by a neighbour. The returned delta (nil
// when nothing was new) is gossiped on to other neighbours.
func (st *state) mergeDelta(counts map[mesh.PeerName]int) *state {
	return st.merge(counts)
}

// mergeComplete merges another peer's complete state, sent to us directly.
// It returns what was new (nil when nothing was).
func (st *state) mergeComplete(counts map[mesh.PeerName]int) *state {
	return st.merge(counts)
}

// Encode implements mesh.GossipData: the counts as one gob-encoded message.
func (st *state) Encode() [][]byte {
	counts := st.snapshot()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(counts); err != nil {
		// A map of integers to integers always encodes; should it ever
		// fail, sending nothing is safe, as the next gossip repairs it.
		return nil
	}
	return [][]byte{buf.Bytes()}
}

// Merge implements mesh.GossipData: it folds other into st and returns st.
// other is left unchanged.
func (st *state) Merge(other mesh.GossipData) mesh.GossipData {
	o, ok := other.(*state)
	if !ok || o == nil || o == st {
		return st
	}
	if st == nil {
		return o.copyState()
	}
	// Copy first so that the two locks are never held together.
	st.merge(o.snapshot())
	return st
}

// String lists the entries in name order, e.g. "{00:00:00:00:00:01=2}".
func (st *state) String() string {
	return formatCounts(st.snapshot(), nil)
}

// decodeCounts decodes a message produced by Encode.
func decodeCounts(msg []byte) (map[mesh.PeerName]int, error) {
	var counts map[mesh.PeerName]int
	if err := gob.NewDecoder(bytes.NewReader(msg)).Decode(&counts); err != nil {
		return nil, fmt.Errorf("decoding counter state: %w", err)
	}
	for name, n := range counts {
		if n < 0 {
			return nil, fmt.Errorf("decoding counter state: negative count %d for %s", n, name)
		}
	}
	return counts, nil
}

// formatCounts writes counts in name order as "{a=1 b=2}". Names found in
// nick are shown by nickname instead.
func formatCounts(counts map[mesh.PeerName]int, nick map[mesh.PeerName]string) string {
	names := make([]mesh.PeerName, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
	var b strings.Builder
	b.WriteByte('{')
	for i, name := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		label := name.String()
		if n, ok := nick[name]; ok && n != "" {
			label = n
		}
		fmt.Fprintf(&b, "%s=%d", label, counts[name])
	}
	b.WriteByte('}')
	return b.String()
}
