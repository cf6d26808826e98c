package mesh

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func rec(i int, uid PeerUID, version uint64) digestEntry {
	return digestEntry{Name: testPeerName(i), UID: uid, Version: version}
}

func TestWantedKeepsOnlyNewerEntries(t *testing.T) {
	tp := newTestTopology(0)
	tp.apply([]peerUpdate{update(1, 11, 3, conn(2, true))}) // 2 is a placeholder
	got := tp.wanted([]digestEntry{
		rec(0, 1000, 99), // ourselves: never pulled
		rec(1, 11, 3),    // same as ours
		rec(1, 10, 4),    // newer version, whatever the UID
		rec(2, 22, 1),    // we only have a placeholder
		rec(3, 33, 1),    // unknown
		rec(4, 0, 5),     // a placeholder record is no entry
	})
	require.Equal(t, []pullCandidate{
		{announced: rec(1, 10, 4), have: rec(1, 11, 3)},
		{announced: rec(2, 22, 1), have: digestEntry{Name: testPeerName(2)}},
		{announced: rec(3, 33, 1), have: digestEntry{Name: testPeerName(3)}},
	}, got)

	t.Run("same version higher UID", func(t *testing.T) {
		require.Len(t, tp.wanted([]digestEntry{rec(1, 12, 3)}), 1)
		require.Empty(t, tp.wanted([]digestEntry{rec(1, 10, 3)}))
	})
	t.Run("stale copy of a removed peer", func(t *testing.T) {
		tp.addTombstone(&Peer{Name: testPeerName(5), UID: 55, Version: 7})
		require.Empty(t, tp.wanted([]digestEntry{rec(5, 55, 7)}))
		require.Len(t, tp.wanted([]digestEntry{rec(5, 55, 8)}), 1, "a later version is news")
		require.Len(t, tp.wanted([]digestEntry{rec(5, 56, 1)}), 1, "a new incarnation is news")
		// Once a peer we reach reports a connection to it, it is back:
		// its entry is wanted as it is, as apply would take it.
		tp.apply([]peerUpdate{update(1, 11, 9, conn(5, true))})
		require.True(t, tp.get(testPeerName(5)).isPlaceholder())
		require.Len(t, tp.wanted([]digestEntry{rec(5, 55, 7)}), 1)
		res := tp.apply([]peerUpdate{update(5, 55, 7)})
		require.Equal(t, []PeerName{testPeerName(5)}, res.changed)
	})
}

func TestPullsClaimedOnceUntilTimeout(t *testing.T) {
	tp := newTestTopology(0)
	var p pullsInFlight
	const timeout = 100
	a, b := testPeerName(20), testPeerName(21)
	announced := []digestEntry{rec(1, 11, 3), rec(2, 22, 1)}
	first := p.claim(tp.wanted(announced), a, 0, timeout)
	require.Equal(t, []digestEntry{{Name: testPeerName(1)}, {Name: testPeerName(2)}}, first)

	// Another neighbour announces the same versions: nothing to ask.
	require.Empty(t, p.claim(tp.wanted(announced), b, 10, timeout))
	// A later version of an entry we do not have at all is asked of its
	// announcer too: whichever answers first makes the peer known.
	require.Equal(t, []digestEntry{{Name: testPeerName(1)}}, p.claim(tp.wanted([]digestEntry{rec(1, 11, 4)}), b, 20, timeout))

	// Peer 2's entry arrives: a later announcement of it is asked for.
	tp.apply([]peerUpdate{update(2, 22, 1)})
	_, again := p.received(tp.get(testPeerName(2)), 25)
	require.False(t, again)
	require.Equal(t, []digestEntry{rec(2, 22, 1)}, p.claim(tp.wanted([]digestEntry{rec(2, 22, 2)}), b, 30, timeout))

	// Unanswered requests expire and may go to another neighbour.
	require.Equal(t, 1, p.expire(125, timeout), "the request for peer 1 made at 20")
	require.Equal(t, []digestEntry{{Name: testPeerName(1)}}, p.claim(tp.wanted([]digestEntry{rec(1, 11, 4)}), b, 126, timeout))
}

func TestPullsOfLaterVersions(t *testing.T) {
	const timeout = 100
	a, b, c := testPeerName(20), testPeerName(21), testPeerName(22)
	setup := func() (*topology, *pullsInFlight) {
		tp := newTestTopology(0)
		tp.apply([]peerUpdate{update(1, 11, 3)})
		var p pullsInFlight
		require.Equal(t, []digestEntry{rec(1, 11, 3)}, p.claim(tp.wanted([]digestEntry{rec(1, 11, 4)}), a, 0, timeout))
		// b, then c announce later versions while a's answer is out.
		require.Empty(t, p.claim(tp.wanted([]digestEntry{rec(1, 11, 6)}), b, 10, timeout))
		require.Empty(t, p.claim(tp.wanted([]digestEntry{rec(1, 11, 5)}), c, 20, timeout), "older than b's")
		return tp, &p
	}

	t.Run("answer older than the latest announced", func(t *testing.T) {
		tp, p := setup()
		tp.apply([]peerUpdate{update(1, 11, 4)})
		o, ok := p.received(tp.get(testPeerName(1)), 30)
		require.True(t, ok)
		require.Equal(t, pullOrder{to: b, have: rec(1, 11, 4)}, o)
		// That request is out now: no other.
		require.Empty(t, p.claim(tp.wanted([]digestEntry{rec(1, 11, 6)}), c, 40, timeout))
		tp.apply([]peerUpdate{update(1, 11, 6)})
		_, ok = p.received(tp.get(testPeerName(1)), 50)
		require.False(t, ok)
		require.Empty(t, p.m)
	})
	t.Run("answer as new as the latest announced", func(t *testing.T) {
		tp, p := setup()
		tp.apply([]peerUpdate{update(1, 11, 6)}) // a's answer is its entry when it answers
		_, ok := p.received(tp.get(testPeerName(1)), 30)
		require.False(t, ok)
		require.Empty(t, p.m)
	})
	t.Run("an entry older than asked keeps the request", func(t *testing.T) {
		_, p := setup()
		_, ok := p.received(&Peer{Name: testPeerName(1), UID: 11, Version: 3}, 30)
		require.False(t, ok)
		require.Len(t, p.m, 1)
	})
	t.Run("expired: asked of the later announcer", func(t *testing.T) {
		tp, p := setup()
		var orders []pullOrder
		require.Equal(t, 1, p.expireOrders(150, timeout, tp.record, &orders))
		require.Equal(t, []pullOrder{{to: b, have: rec(1, 11, 3)}}, orders)
		require.Equal(t, b, p.m[testPeerName(1)].from)
		require.Equal(t, 0, p.expireOrders(200, timeout, tp.record, &orders), "asked again at 150")
	})
	t.Run("neighbour gone: asked of the later announcer", func(t *testing.T) {
		tp, p := setup()
		var orders []pullOrder
		require.Equal(t, 0, p.neighbourGone(c, 30, tp.record, &orders), "nothing was asked of c")
		require.Equal(t, 1, p.neighbourGone(a, 30, tp.record, &orders))
		require.Equal(t, []pullOrder{{to: b, have: rec(1, 11, 3)}}, orders)
		// b goes too, with no later version known: the request is dropped,
		// and the next announcement is asked for at once.
		orders = nil
		require.Equal(t, 1, p.neighbourGone(b, 40, tp.record, &orders))
		require.Empty(t, orders)
		require.Empty(t, p.m)
		require.Equal(t, []digestEntry{rec(1, 11, 3)}, p.claim(tp.wanted([]digestEntry{rec(1, 11, 6)}), c, 50, timeout))
	})
	t.Run("the record of an unknown or placeholder entry", func(t *testing.T) {
		tp, _ := setup()
		require.Equal(t, digestEntry{Name: testPeerName(9)}, tp.record(testPeerName(9)))
		tp.apply([]peerUpdate{update(1, 11, 7, conn(8, true))})
		require.Equal(t, digestEntry{Name: testPeerName(8)}, tp.record(testPeerName(8)))
	})
}

func TestPullsBounded(t *testing.T) {
	var p pullsInFlight
	cands := make([]pullCandidate, maxPullsInFlight+10)
	for i := range cands {
		cands[i] = pullCandidate{announced: rec(i+1, 1, 1), have: digestEntry{Name: testPeerName(i + 1)}}
	}
	require.Len(t, p.claim(cands, testPeerName(20), 0, 100), len(cands))
	require.LessOrEqual(t, len(p.m), maxPullsInFlight)
}

func TestAnswerPull(t *testing.T) {
	tp := newTestTopology(0)
	many := func(version uint64, extra ...int) peerUpdate {
		var conns []connectionSummary
		for i := range deltaMinConns {
			conns = append(conns, conn(100+i, true))
		}
		for _, i := range extra {
			conns = append(conns, conn(i, true))
		}
		return update(4, 44, version, conns...)
	}
	tp.apply([]peerUpdate{update(1, 11, 3, conn(2, true)), update(3, 33, 5), many(7)})
	tp.apply([]peerUpdate{update(1, 11, 4, conn(2, true), conn(5, true)), many(8, 6)})
	require.Nil(t, tp.get(testPeerName(1)).prev, "a small entry keeps no previous version")
	require.Equal(t, uint64(7), tp.get(testPeerName(4)).prev.Version)
	var enc topoEncoder
	var deltas []entryDelta
	whole, err := enc.answers(&Peers{topo: tp}, []digestEntry{
		{Name: testPeerName(1)}, // the requester has nothing
		rec(3, 33, 5),           // the requester is up to date
		rec(2, 0, 0),            // we only have a placeholder
		rec(9, 0, 0),            // unknown here
		rec(0, 999, 0),          // ourselves, an older incarnation there
		rec(4, 44, 7),           // one version behind on a large entry
	}, func(b []byte) error {
		d, err := parseDelta(b, topologyLimits{MaxConnections: 100})
		require.NoError(t, err)
		deltas = append(deltas, d)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []PeerName{testPeerName(1), testPeerName(0)}, whole)
	require.Len(t, deltas, 1)
	require.Equal(t, []connectionSummary{conn(6, true)}, deltas[0].Add)
	require.Equal(t, uint64(7), deltas[0].From)

	// A version we never had: the whole entry.
	whole, err = enc.answers(&Peers{topo: tp}, []digestEntry{rec(4, 44, 6)}, func([]byte) error {
		t.Fatal("no delta from a version not kept")
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []PeerName{testPeerName(4)}, whole)

	// The last deltaBases versions are kept: a requester up to that far
	// behind gets a delta from its own version, one further behind the
	// whole entry.
	for v := uint64(9); v <= 14; v++ {
		tp.apply([]peerUpdate{many(v, 6, int(v))})
	}
	depth := 0
	for b := tp.get(testPeerName(4)).prev; b != nil; b = b.prev {
		depth++
		require.Equal(t, uint64(14-depth), b.Version)
	}
	require.Equal(t, deltaBases, depth)
	deltas = nil
	whole, err = enc.answers(&Peers{topo: tp}, []digestEntry{rec(4, 44, 14-deltaBases)}, func(b []byte) error {
		d, err := parseDelta(b, topologyLimits{MaxConnections: 100})
		require.NoError(t, err)
		deltas = append(deltas, d)
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, whole)
	require.Len(t, deltas, 1)
	require.Equal(t, uint64(14-deltaBases), deltas[0].From)
	require.Equal(t, uint64(14), deltas[0].To)
	base := tp.get(testPeerName(4)).base(44, 14-deltaBases)
	require.NotNil(t, base)
	u, res := (&topology{byName: map[PeerName]*Peer{base.Name: base}}).deltaUpdate(&deltas[0])
	require.Equal(t, deltaApplies, res)
	require.Equal(t, tp.get(testPeerName(4)).conns, sortConnections(u.Connections), "the delta turns the base into the current entry")
	whole, err = enc.answers(&Peers{topo: tp}, []digestEntry{rec(4, 44, 13-deltaBases)}, func([]byte) error {
		t.Fatal("no delta from a version no longer kept")
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []PeerName{testPeerName(4)}, whole)
}

// A peer we removed, named again by an entry we merge, is to be asked
// for: its own entry may never be announced to us again.
func TestRevivedPlaceholder(t *testing.T) {
	tp := newTestTopology(0)
	tp.addTombstone(&Peer{Name: testPeerName(5), UID: 55, Version: 7})
	res := tp.apply([]peerUpdate{update(1, 11, 1, conn(5, true), conn(6, true))})
	require.Equal(t, []PeerName{testPeerName(5)}, res.revived)
	require.Equal(t, 2, res.placeholders)
	// Its entry, unchanged since we removed it, is then taken.
	require.Len(t, tp.wanted([]digestEntry{rec(5, 55, 7)}), 1)
}

func TestPullsMapKeptSmall(t *testing.T) {
	claim := func(p *pullsInFlight, n int) {
		cands := make([]pullCandidate, n)
		for i := range cands {
			cands[i] = pullCandidate{announced: rec(i+1, 1, 1), have: digestEntry{Name: testPeerName(i + 1)}}
		}
		require.Len(t, p.claim(cands, testPeerName(0), 0, 100), n)
	}
	var p pullsInFlight
	claim(&p, keepPulls)
	require.Equal(t, keepPulls, p.expire(100, 100))
	require.NotNil(t, p.m, "a small map is kept for the next requests")
	claim(&p, keepPulls+1)
	require.Equal(t, keepPulls+1, p.expire(100, 100))
	require.Nil(t, p.m, "a large one is dropped once empty")
}

// A topology is learning while it holds a placeholder, or while the entry
// of a peer it has none of, or a placeholder of, is asked for; not while
// only newer versions of entries it has are.
func TestTopologyLearning(t *testing.T) {
	tp := newTestTopology(0)
	var pulls pullsInFlight
	require.False(t, tp.learning(&pulls), "alone")

	tp.apply([]peerUpdate{update(1, 11, 3, conn(0, true))})
	require.False(t, tp.learning(&pulls))

	pulls.claim([]pullCandidate{{announced: rec(1, 11, 4), have: rec(1, 11, 3)}}, testPeerName(1), 0, 100)
	require.False(t, tp.learning(&pulls), "a newer version of an entry we have")

	pulls.claim([]pullCandidate{{announced: rec(3, 33, 1), have: digestEntry{Name: testPeerName(3)}}}, testPeerName(1), 0, 100)
	require.True(t, tp.learning(&pulls), "the entry of a peer we do not know")
	pulls.forget(testPeerName(3))
	require.False(t, tp.learning(&pulls))

	tp.apply([]peerUpdate{update(1, 11, 5, conn(0, true), conn(2, true))}) // 2 is a placeholder
	require.True(t, tp.learning(&pulls), "a peer known by name only")
	tp.apply([]peerUpdate{update(2, 22, 1, conn(1, true))})
	require.False(t, tp.learning(&pulls))

	// An unknown peer's entry asked for, then received older than asked:
	// still awaited, but the peer is known.
	pulls.claim([]pullCandidate{{announced: rec(4, 44, 2), have: digestEntry{Name: testPeerName(4)}}}, testPeerName(1), 0, 100)
	require.True(t, tp.learning(&pulls))
	tp.apply([]peerUpdate{update(4, 44, 1, conn(1, true))})
	_, again := pulls.received(tp.get(testPeerName(4)), 1)
	require.False(t, again)
	require.Contains(t, pulls.m, testPeerName(4), "the version asked for is still awaited")
	require.False(t, tp.learning(&pulls))

	// Requests released with their neighbour no longer count.
	pulls.claim([]pullCandidate{{announced: rec(5, 55, 1), have: digestEntry{Name: testPeerName(5)}}}, testPeerName(2), 0, 100)
	require.True(t, tp.learning(&pulls))
	pulls.neighbourGone(testPeerName(2), 1, tp.record, nil)
	require.False(t, tp.learning(&pulls))

	// A placeholder removed no longer counts.
	tp.apply([]peerUpdate{update(1, 11, 6, conn(0, true), conn(6, true))})
	require.True(t, tp.learning(&pulls))
	tp.remove(tp.get(testPeerName(6)))
	require.False(t, tp.learning(&pulls))
	require.Zero(t, tp.placeholders)
}
