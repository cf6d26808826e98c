package mesh

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func peerWith(i int, uid PeerUID, version uint64, conns ...connectionSummary) *Peer {
	u := update(i, uid, version, conns...)
	return &Peer{Name: u.Name, NickName: u.NickName, UID: uid, Version: version, conns: sortConnections(append([]connectionSummary(nil), conns...))}
}

func TestDeltaRoundTripAndApply(t *testing.T) {
	old := peerWith(1, 11, 4, conn(2, true), conn(3, false), conn(4, true), conn(6, true))
	changed := conn(3, true)
	changed.Outbound = true
	cur := peerWith(1, 11, 6, conn(2, true), changed, conn(5, true))
	cur.ShortID, cur.HasShortID = 77, true

	d := diffEntries(old, cur)
	require.Equal(t, []connectionSummary{changed, conn(5, true)}, d.Add)
	require.Equal(t, []PeerName{testPeerName(4), testPeerName(6)}, d.Del)

	b := appendDelta(nil, &d)
	got, err := parseDelta(b, topologyLimits{MaxConnections: 100})
	require.NoError(t, err)
	require.Equal(t, d, got)

	tp := newTestTopology(0)
	tp.apply([]peerUpdate{{peerSummary: old.summary(), Connections: old.conns}})
	u, res := tp.deltaUpdate(&got)
	require.Equal(t, deltaApplies, res)
	require.Equal(t, cur.conns, u.Connections)
	require.Equal(t, uint64(6), u.Version)
	require.Equal(t, PeerShortID(77), u.ShortID)
	require.True(t, u.HasShortID)
	require.Equal(t, old.NickName, u.NickName)

	tp.apply([]peerUpdate{u})
	_, res = tp.deltaUpdate(&got)
	require.Equal(t, deltaStale, res, "already applied")

	t.Run("no base", func(t *testing.T) {
		other := newTestTopology(0)
		_, res := other.deltaUpdate(&got)
		require.Equal(t, deltaNoBase, res, "unknown peer")
		other.apply([]peerUpdate{update(1, 11, 3)})
		_, res = other.deltaUpdate(&got)
		require.Equal(t, deltaNoBase, res, "a version other than the base")
		other.apply([]peerUpdate{update(1, 12, 5)})
		_, res = other.deltaUpdate(&got)
		require.Equal(t, deltaNoBase, res, "another incarnation")
	})
}

// The delta for one more connection has the same size whatever the number
// of connections the peer already has.
func TestDeltaSizeIndependentOfDegree(t *testing.T) {
	size := func(n int) int {
		conns := make([]connectionSummary, n)
		for i := range conns {
			conns[i] = conn(i+2, true)
		}
		old := peerWith(1, 11, 1, conns...)
		cur := peerWith(1, 11, 2, append(conns, conn(n+2, true))...)
		d := diffEntries(old, cur)
		return len(appendDelta(nil, &d))
	}
	require.Equal(t, size(3), size(1000))
	require.Less(t, size(1000), deltaFixedSize+64)
}

func TestParseDeltaRejectsMalformed(t *testing.T) {
	d := entryDelta{Name: testPeerName(1), UID: 11, From: 1, To: 2, Add: []connectionSummary{conn(2, true)}, Del: []PeerName{testPeerName(3)}}
	good := appendDelta(nil, &d)
	limits := topologyLimits{MaxConnections: 100}
	for i := range len(good) {
		_, err := parseDelta(good[:i], limits)
		require.ErrorIs(t, err, ErrMalformed, "truncated at %d", i)
	}
	_, err := parseDelta(append(good, 0), limits)
	require.ErrorIs(t, err, ErrMalformed, "trailing byte")

	for name, d := range map[string]entryDelta{
		"versions backwards": {Name: testPeerName(1), UID: 11, From: 2, To: 2},
		"no UID":             {Name: testPeerName(1), From: 1, To: 2},
		"too many":           {Name: testPeerName(1), UID: 11, From: 1, To: 2, Del: make([]PeerName, 101)},
	} {
		_, err := parseDelta(appendDelta(nil, &d), limits)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
}

func FuzzParseDelta(f *testing.F) {
	d := entryDelta{Name: testPeerName(1), UID: 11, From: 1, To: 2, HasShortID: true, ShortID: 9, Add: []connectionSummary{conn(2, true)}, Del: []PeerName{testPeerName(3)}}
	f.Add(appendDelta(nil, &d))
	two := entryDelta{Name: testPeerName(1), UID: 11, From: 3, To: 7, Add: []connectionSummary{conn(2, true), conn(4, false)}, Del: []PeerName{testPeerName(3), testPeerName(5)}}
	f.Add(appendDelta(nil, &two))
	f.Add([]byte{})
	limits := topologyLimits{MaxPeers: 1000, MaxConnections: 100}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDelta(b, limits)
		if err != nil {
			return
		}
		require.LessOrEqual(t, len(d.Add)+len(d.Del), limits.MaxConnections)
		require.Equal(t, b, appendDelta(nil, &d), "a delta re-encodes to its bytes")
		// Applied to an entry of a few connections, the result is the
		// entry without the connections removed or replaced, plus those
		// added, in name order, one per name, within the limit.
		tp := newTopology(&Peer{Name: testPeerName(0), UID: 1000}, topologyLimits{MaxPeers: 1000, MaxConnections: 8})
		base := []connectionSummary{conn(2, true), conn(3, false), conn(5, true), conn(7, true)}
		tp.apply([]peerUpdate{update(1, d.UID, d.From, base...)})
		want := map[PeerName]connectionSummary{}
		for _, c := range base {
			want[c.Name] = c
		}
		for _, n := range d.Del {
			delete(want, n)
		}
		for i := len(d.Add) - 1; i >= 0; i-- { // the first of a name wins
			want[d.Add[i].Name] = d.Add[i]
		}
		u, res := tp.deltaUpdate(&d)
		if d.Name != testPeerName(1) || d.To <= d.From {
			require.NotEqual(t, deltaApplies, res)
			return
		}
		if len(want) > 8 {
			require.Equal(t, deltaTooLarge, res)
			return
		}
		require.Equal(t, deltaApplies, res)
		require.Len(t, u.Connections, len(want))
		for i, c := range u.Connections {
			require.Equal(t, want[c.Name], c)
			if i > 0 {
				require.Less(t, u.Connections[i-1].Name, c.Name)
			}
		}
		tp.apply([]peerUpdate{u})
	})
}

// A delta cannot make an entry larger than a peer may report.
func TestDeltaBoundedByMaxConnections(t *testing.T) {
	tp := newTopology(&Peer{Name: testPeerName(0), UID: 1000}, topologyLimits{MaxPeers: 100, MaxConnections: 3})
	tp.apply([]peerUpdate{update(1, 11, 1, conn(2, true), conn(3, true), conn(4, true))})
	grow := entryDelta{Name: testPeerName(1), UID: 11, From: 1, To: 2, Add: []connectionSummary{conn(5, true)}}
	_, res := tp.deltaUpdate(&grow)
	require.Equal(t, deltaTooLarge, res)
	swap := entryDelta{Name: testPeerName(1), UID: 11, From: 1, To: 2, Add: []connectionSummary{conn(5, true)}, Del: []PeerName{testPeerName(2)}}
	u, res := tp.deltaUpdate(&swap)
	require.Equal(t, deltaApplies, res)
	require.Len(t, u.Connections, 3)
}

// TestQuietEntriesDropTheirBases: the delta bases of a large entry are
// kept while it changes, and dropped by the second sweep after it stops,
// without changing the entry or the graph.
func TestQuietEntriesDropTheirBases(t *testing.T) {
	tp := newTestTopology(0)
	big := func(v uint64, extra int) peerUpdate {
		conns := []connectionSummary{conn(0, true)}
		for i := 10; i < 10+deltaMinConns+extra; i++ {
			conns = append(conns, conn(i, true))
		}
		return update(1, 11, v, conns...)
	}
	tp.apply([]peerUpdate{big(1, 0)})
	tp.apply([]peerUpdate{big(2, 1)})
	tp.apply([]peerUpdate{big(3, 2)})
	require.NotNil(t, tp.get(testPeerName(1)).base(11, 2))

	// The first sweep only notes the entry; a change before the next one
	// keeps the bases.
	require.Zero(t, tp.dropQuietBases())
	tp.apply([]peerUpdate{big(4, 3)})
	require.Zero(t, tp.dropQuietBases())
	require.NotNil(t, tp.get(testPeerName(1)).base(11, 3))

	// Quiet for a whole interval: the bases go, the entry stays as it was.
	before := tp.get(testPeerName(1))
	routesBefore := newRouteTable(tp, nil)
	require.Equal(t, 1, tp.dropQuietBases())
	after := tp.get(testPeerName(1))
	require.Nil(t, after.prev)
	require.Nil(t, after.base(11, 3))
	require.Equal(t, before.Version, after.Version)
	require.Equal(t, before.conns, after.conns)
	routesAfter := newRouteTable(tp, nil)
	require.Equal(t, routesBefore.unicastAll, routesAfter.unicastAll)
	require.Nil(t, tp.withBases, "nothing left to watch")
	require.Zero(t, tp.dropQuietBases())

	// A new version keeps the one before it as a base again.
	tp.apply([]peerUpdate{big(5, 4)})
	require.NotNil(t, tp.get(testPeerName(1)).base(11, 4))

	// A removed entry is forgotten.
	tp.remove(tp.get(testPeerName(1)))
	require.Empty(t, tp.withBases)
	require.Zero(t, tp.dropQuietBases())
}
