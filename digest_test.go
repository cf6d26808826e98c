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
