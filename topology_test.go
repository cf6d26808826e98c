package mesh

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// testPeerName returns a deterministic name for peer number i.
func testPeerName(i int) PeerName { return PeerName(0x020000000000 + uint64(i)) }

func conn(to int, established bool) connectionSummary {
	return connectionSummary{Name: testPeerName(to), RemoteTCPAddr: fmt.Sprintf("127.0.0.1:%d", 7000+to), Established: established}
}

func update(i int, uid PeerUID, version uint64, conns ...connectionSummary) peerUpdate {
	return peerUpdate{
		peerSummary: peerSummary{Name: testPeerName(i), NickName: fmt.Sprint("p", i), UID: uid, Version: version},
		Connections: conns,
	}
}

func newTestTopology(ourIndex int) *topology {
	return newTopology(&Peer{Name: testPeerName(ourIndex), NickName: "us", UID: 1000 + PeerUID(ourIndex)}, topologyLimits{MaxPeers: 1000, MaxConnections: 100})
}

func TestTopologyMergeRules(t *testing.T) {
	tp := newTestTopology(0)
	res := tp.apply([]peerUpdate{update(1, 11, 3, conn(0, true), conn(2, true))})
	require.Equal(t, []PeerName{testPeerName(1)}, res.changed)
	require.Equal(t, 1, res.placeholders, "peer 2 is known only through peer 1's connection")
	require.True(t, tp.get(testPeerName(2)).isPlaceholder())

	t.Run("older version ignored", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(1, 11, 2)})
		require.Empty(t, res.changed)
		require.Len(t, tp.get(testPeerName(1)).conns, 2)
	})
	t.Run("same version lower uid ignored", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(1, 10, 3)})
		require.Empty(t, res.changed)
	})
	t.Run("same version higher uid wins", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(1, 12, 3, conn(0, true))})
		require.Equal(t, []PeerName{testPeerName(1)}, res.changed)
		require.Equal(t, PeerUID(12), tp.get(testPeerName(1)).UID)
	})
	t.Run("short id breaks the last tie", func(t *testing.T) {
		u := update(1, 12, 3, conn(0, true))
		u.HasShortID, u.ShortID = true, 7
		res := tp.apply([]peerUpdate{u})
		require.Equal(t, []PeerName{testPeerName(1)}, res.changed)
		res = tp.apply([]peerUpdate{update(1, 12, 3)})
		require.Empty(t, res.changed)
	})
	t.Run("connection list replaced whole and sorted", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(1, 12, 9, conn(5, true), conn(0, true), conn(5, false))})
		require.Len(t, res.changed, 1)
		p := tp.get(testPeerName(1))
		require.Equal(t, []PeerName{testPeerName(0), testPeerName(5)}, []PeerName{p.conns[0].Name, p.conns[1].Name})
	})
	t.Run("placeholder does not override", func(t *testing.T) {
		res := tp.apply([]peerUpdate{{peerSummary: peerSummary{Name: testPeerName(1)}}})
		require.Empty(t, res.changed)
		require.Equal(t, PeerUID(12), tp.get(testPeerName(1)).UID)
	})
	t.Run("real entry replaces placeholder", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(2, 22, 1)})
		require.Equal(t, []PeerName{testPeerName(2)}, res.changed)
	})
}

func TestTopologyMergeTellsRenewals(t *testing.T) {
	tp := newTestTopology(0)
	res := tp.apply([]peerUpdate{update(1, 11, 3, conn(2, true))})
	require.Equal(t, []bool{false}, res.renewed, "a peer new to us")
	res = tp.apply([]peerUpdate{update(2, 22, 1), update(1, 11, 4), update(3, 33, 1)})
	require.Equal(t, []PeerName{testPeerName(2), testPeerName(1), testPeerName(3)}, res.changed)
	require.Equal(t, []bool{false, true, false}, res.renewed, "a placeholder replaced, a newer version, an unknown peer")
	res = tp.apply([]peerUpdate{update(1, 12, 4)})
	require.Equal(t, []bool{false}, res.renewed, "a new incarnation")
}

func TestTopologyOldIncarnationOfOurselves(t *testing.T) {
	tp := newTestTopology(0)
	before := tp.ourself().Version
	res := tp.apply([]peerUpdate{update(0, 1, 100)})
	require.True(t, res.ourVersionBumped)
	require.Equal(t, uint64(101), tp.ourself().Version)
	require.Equal(t, PeerUID(1000), tp.ourself().UID, "our UID never changes")
	require.Less(t, before, tp.ourself().Version)
	// An entry of our own incarnation that is not newer changes nothing.
	res = tp.apply([]peerUpdate{update(0, 1000, 5)})
	require.False(t, res.ourVersionBumped)
}

func TestTopologyRestartedPeerRelearned(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{update(1, 11, 50, conn(0, true))})
	// The new incarnation starts at a low version: it loses until it has
	// raised its version above the old one, which it does when it hears
	// of it.
	res := tp.apply([]peerUpdate{update(1, 99, 2, conn(0, true))})
	require.Empty(t, res.changed)
	res = tp.apply([]peerUpdate{update(1, 99, 51, conn(0, true))})
	require.Equal(t, []PeerName{testPeerName(1)}, res.changed)
	require.Equal(t, PeerUID(99), tp.get(testPeerName(1)).UID)
}

func TestTopologyGC(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{
		update(1, 11, 1, conn(0, true), conn(2, true)),
		update(2, 22, 1, conn(1, true)),
	})
	require.Empty(t, tp.gc(0, 10))
	require.Equal(t, 3, tp.len())

	// Peer 1 drops its connection to 2: 2 becomes unreachable even though
	// its own stale entry still lists 1.
	tp.apply([]peerUpdate{update(1, 11, 2, conn(0, true))})
	require.Empty(t, tp.gc(100, 10), "kept during the grace period")
	require.True(t, tp.pendingGC())
	removed := tp.gc(110, 10)
	require.Len(t, removed, 1)
	require.Equal(t, testPeerName(2), removed[0].Name)
	require.Nil(t, tp.get(testPeerName(2)))

	t.Run("stale copy is not learnt again", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(2, 22, 1, conn(1, true))})
		require.Empty(t, res.changed)
		require.Nil(t, tp.get(testPeerName(2)))
	})
	t.Run("newer version of the removed peer is learnt", func(t *testing.T) {
		res := tp.apply([]peerUpdate{update(2, 22, 3, conn(1, true))})
		require.Equal(t, []PeerName{testPeerName(2)}, res.changed)
	})
	t.Run("newer version still unreachable goes at the short grace", func(t *testing.T) {
		// It had been reachable before: no long grace for a peer never
		// reached, and a tombstone at the newer version.
		require.Empty(t, tp.gc(200, 10))
		removed := tp.gc(210, 10)
		require.Len(t, removed, 1)
		require.Nil(t, tp.get(testPeerName(2)))
		require.Equal(t, uint64(3), tp.tombstones[testPeerName(2)].version)
		res := tp.apply([]peerUpdate{update(2, 22, 3, conn(1, true))})
		require.Empty(t, res.changed, "the copy of the removed version is stale")
	})
	t.Run("new incarnation is learnt", func(t *testing.T) {
		// Learnt but never linked: kept for the longer grace, and not
		// tombstoned.
		res := tp.apply([]peerUpdate{update(2, 23, 1, conn(1, true))})
		require.Equal(t, []PeerName{testPeerName(2)}, res.changed)
		tp.gc(300, 10)
		tp.gc(400, 10)
		require.NotNil(t, tp.get(testPeerName(2)))
		tp.gc(300+unlinkedGraceFactor*10, 10)
		require.Nil(t, tp.get(testPeerName(2)))
		res = tp.apply([]peerUpdate{update(2, 23, 1, conn(1, true))})
		require.Equal(t, []PeerName{testPeerName(2)}, res.changed)
	})
	t.Run("reachable again before the grace ends", func(t *testing.T) {
		tp := newTestTopology(0)
		tp.setOurConnections([]connectionSummary{conn(1, true)})
		tp.apply([]peerUpdate{update(1, 11, 1, conn(0, true)), update(2, 22, 1, conn(1, true))})
		require.Empty(t, tp.gc(0, 10))
		tp.apply([]peerUpdate{update(1, 11, 2, conn(0, true), conn(2, true))})
		require.Empty(t, tp.gc(20, 10))
		require.False(t, tp.pendingGC())
		require.NotNil(t, tp.get(testPeerName(2)))
	})
}

func TestTopologyLimits(t *testing.T) {
	tp := newTopology(&Peer{Name: testPeerName(0), UID: 1}, topologyLimits{MaxPeers: 3, MaxConnections: 10})
	res := tp.apply([]peerUpdate{update(1, 1, 1), update(2, 1, 1), update(3, 1, 1), update(4, 1, 1, conn(9, true))})
	require.Len(t, res.changed, 2)
	require.Equal(t, 3, tp.len())
}

func TestTombstonesBounded(t *testing.T) {
	tp := newTestTopology(0)
	for i := 0; i < 3*maxTombstones; i++ {
		tp.addTombstone(&Peer{Name: testPeerName(i % (maxTombstones + 10)), UID: PeerUID(i + 1), Version: 1})
	}
	require.LessOrEqual(t, len(tp.tombstones), maxTombstones)
	require.LessOrEqual(t, len(tp.tombstoneOrder), 2*maxTombstones+1)
}

func TestUpdatesForEncodesCurrentEntries(t *testing.T) {
	tp := newTestTopology(0)
	tp.apply([]peerUpdate{update(1, 11, 1, conn(0, true))})
	all := tp.updatesFor(nil, nil)
	require.Len(t, all, 2)
	some := tp.updatesFor([]PeerName{testPeerName(1), testPeerName(42)}, nil)
	require.Len(t, some, 1)
	require.Equal(t, PeerUID(11), some[0].UID)
	// Encoding and decoding gives back the same entries.
	decoded, err := decodeTopology(appendTopology(nil, all), topologyLimits{MaxPeers: 10, MaxConnections: 10})
	require.NoError(t, err)
	require.Len(t, decoded, 2)
	require.Equal(t, all[1].peerSummary, decoded[1].peerSummary)
	require.Equal(t, all[1].Connections, decoded[1].Connections)
}

// A peer learnt before any path to it is known is not removed at the short
// grace, and not tombstoned: its entry is accepted again later.
func TestTopologyUnlinkedPeerKeptLonger(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{update(1, 11, 1, conn(0, true)), update(5, 55, 4, conn(4, true))})
	require.Empty(t, tp.gc(0, 10))
	require.Empty(t, tp.gc(100, 10), "unlinked: longer grace")
	removed := tp.gc(unlinkedGraceFactor*10, 10)
	require.Len(t, removed, 2, "peer 5 and the placeholder of peer 4")
	require.Empty(t, tp.tombstones, "never linked, so no tombstone")
	res := tp.apply([]peerUpdate{update(5, 55, 4, conn(4, true))})
	require.Equal(t, []PeerName{testPeerName(5)}, res.changed)
}

// With a long grace period, a peer never linked is still kept
// maxUnlinkedGrace, no longer.
func TestTopologyUnlinkedGraceIsBounded(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{update(1, 11, 1, conn(0, true)), update(5, 55, 4, conn(4, true))})
	const grace = int64(10e9)
	require.Empty(t, tp.gc(0, grace))
	require.Empty(t, tp.gc(maxUnlinkedGrace-1, grace))
	require.Len(t, tp.gc(maxUnlinkedGrace, grace), 2)

	// A grace longer than the bound applies whole.
	tp.apply([]peerUpdate{update(6, 66, 1, conn(7, true))})
	require.Empty(t, tp.gc(0, 2*maxUnlinkedGrace))
	require.Empty(t, tp.gc(2*maxUnlinkedGrace-1, 2*maxUnlinkedGrace))
	require.Len(t, tp.gc(2*maxUnlinkedGrace, 2*maxUnlinkedGrace), 2)
}

// The grace period before an unreachable peer is removed grows with the
// mesh, within bounds.
func TestGCGraceGrowsWithTheMesh(t *testing.T) {
	r := newTestRouter(t)
	require.Equal(t, gcGrace, r.gcGrace())
	add := func(from, to int) {
		var updates []peerUpdate
		for i := from; i < to; i++ {
			updates = append(updates, update(i, PeerUID(i), 1))
		}
		r.Peers.mu.Lock()
		r.Peers.topo.apply(updates)
		r.Peers.mu.Unlock()
	}
	add(2, 1001)
	require.Equal(t, 1000, r.Peers.count())
	require.Equal(t, 1000*gcGracePerPeer, r.gcGrace())
	add(1001, 3001)
	require.Equal(t, maxGCGrace, r.gcGrace())
}

// TestGCWithRoutesMatchesSearch: garbage collection given the routes of
// the current topology removes exactly what it removes with a search of
// its own.
func TestGCWithRoutesMatchesSearch(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 5))
	for round := range 50 {
		n := 3 + rnd.IntN(20)
		var edges [][2]int
		for k := rnd.IntN(2 * n); k > 0; k-- {
			a, b := rnd.IntN(n), rnd.IntN(n)
			if a != b {
				edges = append(edges, [2]int{a, b})
			}
		}
		a, b := buildTopology(n, 0, edges), buildTopology(n, 0, edges)
		reach := newRouteTable(b, nil).unicastAll
		names := func(ps []*Peer) []PeerName {
			var out []PeerName
			for _, p := range ps {
				out = append(out, p.Name)
			}
			return out
		}
		want := names(a.gc(0, 0))
		got := names(b.gcWith(0, 0, reach))
		require.Equal(t, want, got, "round %d", round)
		require.Equal(t, a.len(), b.len())
		// Next hops of another topology (of another length) are not used.
		// a and b have lost the same peers, so reach is longer than both.
		a.setOurConnections(nil)
		b.setOurConnections(nil)
		require.Equal(t, names(a.gc(1, 0)), names(b.gcWith(1, 0, append(reach, 0))))
	}
}

// An update the decoder skipped the connections of is not applied, even
// when the entry it was held against has gone since.
func TestTopologyIgnoresSkippedEntries(t *testing.T) {
	tp := newTestTopology(0)
	u := update(1, 11, 3, conn(0, true))
	u.Connections, u.connsSkipped = nil, true
	res := tp.apply([]peerUpdate{u})
	require.Empty(t, res.changed)
	require.Nil(t, tp.get(testPeerName(1)))
}

// Entries share the strings held already: each connection's address with
// every other connection to the same peer, and the nickname with the
// entry replaced. What is kept never points into the decoder's blocks.
func TestTopologyEntriesShareStrings(t *testing.T) {
	tp := newTestTopology(0)
	b := appendTopology(nil, []peerUpdate{
		update(1, 11, 1, conn(3, true), conn(4, true)),
		update(2, 12, 1, conn(3, true), conn(4, false)),
	})
	ups, err := decodeTopology(b, testLimits)
	require.NoError(t, err)
	nickInBlock := unsafe.StringData(ups[0].NickName)
	addrInBlock := unsafe.StringData(ups[0].Connections[0].RemoteTCPAddr)
	tp.apply(ups)
	p1, p2 := tp.get(testPeerName(1)), tp.get(testPeerName(2))
	for i := range 2 {
		require.Equal(t, p1.conns[i].RemoteTCPAddr, p2.conns[i].RemoteTCPAddr)
		require.Same(t, unsafe.StringData(p1.conns[i].RemoteTCPAddr), unsafe.StringData(p2.conns[i].RemoteTCPAddr))
	}
	require.Equal(t, "p1", p1.NickName)
	require.NotSame(t, nickInBlock, unsafe.StringData(p1.NickName), "the nickname is copied out of the decoded block")
	require.NotSame(t, addrInBlock, unsafe.StringData(p1.conns[0].RemoteTCPAddr), "the address is copied out of the decoded block")

	nick := unsafe.StringData(p1.NickName)
	b = appendTopology(nil, []peerUpdate{update(1, 11, 2, conn(3, true))})
	ups, err = decodeTopology(b, testLimits)
	require.NoError(t, err)
	tp.apply(ups)
	p1 = tp.get(testPeerName(1))
	require.Equal(t, uint64(2), p1.Version)
	require.Same(t, nick, unsafe.StringData(p1.NickName))
	require.Same(t, unsafe.StringData(p2.conns[0].RemoteTCPAddr), unsafe.StringData(p1.conns[0].RemoteTCPAddr))

	// A new address for a peer is copied, and held from then on.
	moved := update(5, 15, 1, conn(3, true))
	moved.Connections[0].RemoteTCPAddr = "10.9.9.9:6783"
	tp.apply([]peerUpdate{moved})
	require.Equal(t, "10.9.9.9:6783", tp.get(testPeerName(5)).conns[0].RemoteTCPAddr)
	require.Equal(t, "10.9.9.9:6783", tp.addrs[testPeerName(3)])
	require.Equal(t, "127.0.0.1:7003", p1.conns[0].RemoteTCPAddr, "entries already held keep theirs")

	// The table of addresses is bounded like the entries.
	small := newTopology(&Peer{Name: testPeerName(0), UID: 1}, topologyLimits{MaxPeers: 4, MaxConnections: 100})
	var conns []connectionSummary
	for i := 1; i <= 10; i++ {
		conns = append(conns, conn(i, true))
	}
	small.apply([]peerUpdate{update(1, 11, 1, conns...)})
	require.LessOrEqual(t, len(small.addrs), 4)
}

// A snapshot of the peers is dropped once the table changed, so that it
// keeps no replaced entry alive; one still current is kept.
func TestStaleViewIsDropped(t *testing.T) {
	peers := newPeers(&Peer{Name: testPeerName(0), UID: 1}, testLimits)
	v := peers.view()
	peers.dropStaleView()
	require.Same(t, v, peers.snap.Load(), "a current snapshot is kept")
	peers.mu.Lock()
	peers.topo.apply([]peerUpdate{update(1, 11, 1, conn(0, true))})
	peers.mu.Unlock()
	peers.dropStaleView()
	require.Nil(t, peers.snap.Load())
	require.Equal(t, 2, len(peers.Names()), "the next view is taken afresh")
}

// While the router changes the table, readers use the last snapshot only
// if it is recent; an older one is brought up to date.
func TestViewStalenessIsBounded(t *testing.T) {
	peers := newPeers(&Peer{Name: testPeerName(0), UID: 1}, testLimits)
	v := peers.view()
	peers.mu.Lock()
	peers.topo.apply([]peerUpdate{update(1, 11, 1, conn(0, true))})
	require.Same(t, v, peers.view(), "a recent snapshot is used while the table is locked")
	require.Equal(t, 2, peers.Len(), "the count is always current")
	v.taken = v.taken.Add(-2 * maxViewAge)
	got := make(chan *peersView)
	go func() { got <- peers.view() }()
	select {
	case <-got:
		t.Fatal("an old snapshot was used while the table is locked")
	case <-time.After(20 * time.Millisecond):
	}
	peers.mu.Unlock()
	fresh := <-got
	require.NotSame(t, v, fresh)
	require.Equal(t, 2, fresh.peers.Len())
}
