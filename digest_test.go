package mesh

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDigestRoundTrip(t *testing.T) {
	entries := []digestEntry{{Name: testPeerName(1), UID: 11, Version: 3}, {Name: 0xffffffffffff, UID: 1<<64 - 1, Version: 1 << 40}}
	b := appendDigest(nil, entries)
	require.Len(t, b, 2*digestRecordSize)
	got, err := parseDigest(b)
	require.NoError(t, err)
	require.Equal(t, entries, got)
	for _, bad := range [][]byte{b[:digestRecordSize+1], make([]byte, digestRecordSize*(maxDigestRecords+1))} {
		_, err := parseDigest(bad)
		require.ErrorIs(t, err, ErrMalformed)
	}
	empty, err := parseDigest(nil)
	require.NoError(t, err)
	require.Empty(t, empty)
}

func TestWantedFromDigest(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{update(1, 11, 5, conn(0, true), conn(2, true)), update(2, 22, 2, conn(1, true))})
	// The other side knows peer 1 at an older version, peer 2 at a newer
	// one, ourselves at a newer one, a peer we do not know, and one only
	// as a placeholder.
	theirs := []digestEntry{
		{Name: testPeerName(0), UID: 1, Version: 9},
		{Name: testPeerName(1), UID: 11, Version: 4},
		{Name: testPeerName(2), UID: 22, Version: 3},
		{Name: testPeerName(9), UID: 99, Version: 1},
		{Name: testPeerName(8)},
	}
	// We ask for peer 2 (having version 2) and peer 9 (having nothing);
	// our own entry is ours to announce.
	require.Equal(t, []pullCandidate{
		{announced: theirs[2], have: digestEntry{Name: testPeerName(2), UID: 22, Version: 2}},
		{announced: theirs[3], have: digestEntry{Name: testPeerName(9)}},
	}, tp.wanted(theirs))
	// Our digest lists every peer but placeholders.
	tp.apply([]peerUpdate{update(3, 33, 1, conn(7, true))}) // 7 is a placeholder
	names := make([]PeerName, 0)
	for _, e := range tp.digest() {
		names = append(names, e.Name)
	}
	require.Equal(t, []PeerName{testPeerName(0), testPeerName(1), testPeerName(2), testPeerName(3)}, names)
}

func TestUnlistedAnswersASyncRequest(t *testing.T) {
	tp := newTestTopology(0)
	tp.setOurConnections([]connectionSummary{conn(1, true)})
	tp.apply([]peerUpdate{
		update(1, 11, 5, conn(0, true), conn(2, true)),
		update(2, 22, 2, conn(1, true)),
		update(3, 33, 4, conn(7, true)), // 7 is a placeholder
	})
	ours := func(i int) digestEntry { return tp.record(testPeerName(i)) }
	all := []digestEntry{ours(0), ours(1), ours(2), ours(3)}
	require.Empty(t, tp.appendUnlisted(nil, all), "a sender that has all we have lacks nothing")

	theirs := []digestEntry{
		ours(0),
		rec(1, 11, 4), // older than ours
		rec(2, 22, 3), // newer than ours
		rec(2, 22, 1), // listed twice, hostile or not: the newer listing counts
		rec(3, 34, 9), // another incarnation
		rec(5, 55, 1), // unknown to us
		rec(7, 77, 1), // a placeholder here
	}
	require.Equal(t, []digestEntry{ours(1), ours(3)}, tp.appendUnlisted(nil, theirs))
	require.Equal(t, all, tp.appendUnlisted(nil, nil), "an empty request lacks everything")
	require.Equal(t, []digestEntry{ours(0), ours(1)}, tp.appendUnlisted(nil, []digestEntry{ours(2), ours(3)}))
}

func TestSyncRequestIsAnsweredWithWhatTheAskerLacks(t *testing.T) {
	r := newTestRouter(t)
	r.Peers.mu.Lock()
	r.Peers.topo.setOurConnections([]connectionSummary{conn(2, true)})
	r.Peers.topo.apply([]peerUpdate{update(2, 22, 3, conn(1, true)), update(3, 33, 1)})
	r.Peers.mu.Unlock()
	record := func(i int) digestEntry {
		r.Peers.mu.RLock()
		defer r.Peers.mu.RUnlock()
		return r.Peers.topo.record(testPeerName(i))
	}
	c := &LocalConnection{router: r, remoteName: testPeerName(2), q: newSendQueue(1 << 20), digests: true}
	sync := func(records ...digestEntry) []digestEntry {
		require.NoError(t, r.handleSync(c, appendDigest(nil, records)))
		c.q.mu.Lock()
		defer c.q.mu.Unlock()
		require.False(t, c.q.digest, "never our whole digest")
		answer := c.q.syncAnswer
		c.q.syncAnswer = nil
		return answer
	}
	require.Empty(t, sync(record(1), record(2), record(3)), "nothing to answer to a peer that lacks nothing")
	// Listed out of order, with peer 2 older than ours, and without us.
	require.Equal(t, []digestEntry{record(1), record(2)}, sync(record(3), rec(2, 22, 1)))
	// What the asker has newer is asked of it, as of any digest.
	require.Empty(t, sync(record(1), record(2), rec(3, 33, 2)))
	c.q.mu.Lock()
	require.Equal(t, []digestEntry{record(3)}, c.q.pull)
	c.q.mu.Unlock()
}
