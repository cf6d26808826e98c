package mesh_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

// counts is a grow-only counter: a count per peer, merged by taking the
// larger count of each peer.
type counts map[mesh.PeerName]uint64

// countsData carries counts as mesh.GossipData. It has a lock of its own:
// the router may queue one value for several neighbours, and merge into it
// for one while it encodes it for another.
type countsData struct {
	mu sync.Mutex
	c  counts
}

func newCountsData(c counts) *countsData { return &countsData{c: c} }

func (d *countsData) get() counts {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.c)
}

// Encode implements mesh.GossipData: 14 bytes per peer.
func (d *countsData) Encode() [][]byte {
	return [][]byte{d.get().encode()}
}

func (c counts) encode() []byte {
	buf := make([]byte, 0, 14*len(c))
	for name, v := range c {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(name))
		buf = append(buf, b[2:]...)
		buf = binary.BigEndian.AppendUint64(buf, v)
	}
	return buf
}

// Merge implements mesh.GossipData.
func (d *countsData) Merge(other mesh.GossipData) mesh.GossipData {
	o := other.(*countsData).get()
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, v := range o {
		d.c[name] = max(d.c[name], v)
	}
	return d
}

func decodeCounts(msg []byte) (counts, error) {
	if len(msg)%14 != 0 {
		return nil, errors.New("counts: bad length")
	}
	out := make(counts, len(msg)/14)
	for ; len(msg) > 0; msg = msg[14:] {
		var name [8]byte
		copy(name[2:], msg[:6])
		out[mesh.PeerName(binary.BigEndian.Uint64(name[:]))] = binary.BigEndian.Uint64(msg[6:14])
	}
	return out, nil
}

// gcounter is a Gossiper holding a grow-only counter.
type gcounter struct {
	self   mesh.PeerName
	gossip mesh.Gossip

	mu    sync.Mutex
	state counts
}

func newGCounter(t testing.TB, n *node) *gcounter {
	c := &gcounter{self: n.router.Ourself.Name, state: make(counts)}
	g, err := n.router.NewGossip("counter", c)
	require.NoError(t, err)
	c.gossip = g
	return c
}

// increment adds one to our own count and broadcasts the new count.
func (c *gcounter) increment() {
	c.mu.Lock()
	c.state[c.self]++
	delta := counts{c.self: c.state[c.self]}
	c.mu.Unlock()
	c.gossip.GossipBroadcast(newCountsData(delta))
}

// merge folds update in and returns what was new, or nil.
func (c *gcounter) merge(msg []byte) (mesh.GossipData, error) {
	update, err := decodeCounts(msg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := make(counts)
	for name, v := range update {
		if v > c.state[name] {
			c.state[name] = v
			delta[name] = v
		}
	}
	if len(delta) == 0 {
		return nil, nil
	}
	return newCountsData(delta), nil
}

func (c *gcounter) snapshot() counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.state)
}

func (c *gcounter) OnGossipUnicast(mesh.PeerName, []byte) error {
	return errors.New("counter: unexpected unicast")
}

func (c *gcounter) OnGossipBroadcast(_ mesh.PeerName, update []byte) (mesh.GossipData, error) {
	return c.merge(update)
}

func (c *gcounter) Gossip() mesh.GossipData {
	if s := c.snapshot(); len(s) > 0 {
		return newCountsData(s)
	}
	return nil
}

func (c *gcounter) OnGossip(msg []byte) (mesh.GossipData, error) { return c.merge(msg) }

// countersEqual reports whether every counter holds exactly want.
func countersEqual(counters []*gcounter, want counts) (bool, string) {
	for _, c := range counters {
		if got := c.snapshot(); !maps.Equal(got, want) {
			return false, fmt.Sprintf("%s has %v, want %v", c.self, got, want)
		}
	}
	return true, ""
}

func TestCountsEncoding(t *testing.T) {
	c := counts{name(0): 3, name(41): 1 << 40}
	got, err := decodeCounts(newCountsData(c).Encode()[0])
	require.NoError(t, err)
	require.Equal(t, c, got)
}

// A mesh split in two halves goes on as two meshes, each forgetting the
// other half, and state changed on both sides meanwhile converges once the
// halves can reach each other again.
func TestPartitionAndHeal(t *testing.T) {
	checkNoGoroutineLeak(t)
	const size = 20
	nw, _ := newMemNetwork(t)
	nodes := startMemNodes(t, nw, size, memOptions{
		discovery:      true,
		heartbeat:      200 * time.Millisecond,
		gossipInterval: time.Second,
	})
	counters := make([]*gcounter, size)
	for i, n := range nodes {
		counters[i] = newGCounter(t, n)
	}
	// A ring, and every peer also knows the first one.
	for i, n := range nodes {
		n.connectToIndexes((i+1)%size, 0)
	}
	took := eventually(t, "the mesh settles", func() (bool, string) { return settled(nodes) })
	t.Logf("%d peers converged in %v", size, took)

	left, right := nodes[:size/2], nodes[size/2:]
	nw.Partition(hostsOf(left), hostsOf(right))
	took = eventually(t, "each half knows exactly itself", func() (bool, string) {
		if ok, msg := knowsAll(left); !ok {
			return false, msg
		}
		return knowsAll(right)
	})
	t.Logf("each half forgot the other in %v", took)

	want := [2]counts{make(counts), make(counts)}
	for i, c := range counters {
		for range i%3 + 1 {
			c.increment()
		}
		want[i/(size/2)][c.self] = uint64(i%3 + 1)
	}
	took = eventually(t, "each half has its own counts", func() (bool, string) {
		if ok, msg := countersEqual(counters[:size/2], want[0]); !ok {
			return false, msg
		}
		return countersEqual(counters[size/2:], want[1])
	})
	t.Logf("each half converged on its counts in %v", took)

	nw.HealPartition()
	all := maps.Clone(want[0])
	maps.Copy(all, want[1])
	start := time.Now()
	waitFullKnowledge(t, nodes)
	knew := time.Since(start)
	eventually(t, "every peer has every count", func() (bool, string) { return countersEqual(counters, all) })
	t.Logf("after the partition healed: every peer knew every peer in %v, had every count in %v", knew, time.Since(start))
}
