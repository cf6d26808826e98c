package mesh

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHeardSetBits(t *testing.T) {
	var h heardSet
	seen := uint64(0)
	for range 64 {
		b := h.acquire()
		require.NotZero(t, b)
		require.Zero(t, seen&b, "bit given twice")
		seen |= b
	}
	require.Zero(t, h.acquire(), "a 65th neighbour gets no bit")
	h.release(1 << 5)
	require.Equal(t, uint64(1<<5), h.acquire(), "a released bit is given again")
	h.release(0) // no bit: nothing to do
	h.release(1 << 7)
	h.release(1 << 7) // twice: harmless
	require.Equal(t, uint64(1<<7), h.acquire())
	require.Zero(t, h.acquire())
}

func TestHeardSetNoteAndHas(t *testing.T) {
	const x = PeerName(0x10)
	var h heardSet
	a, b, c := h.acquire(), h.acquire(), h.acquire()

	require.False(t, h.has(x, 1, 3, a), "nothing heard yet")
	h.note(x, 1, 3, a)
	require.True(t, h.has(x, 1, 3, a))
	require.True(t, h.has(x, 1, 2, a), "an older version is had too")
	require.False(t, h.has(x, 1, 4, a), "a newer version is not")
	require.False(t, h.has(x, 2, 3, a), "nor the same version of a later incarnation")
	require.False(t, h.has(x, 1, 3, b), "b was not heard")
	require.False(t, h.has(x, 1, 3, 0), "a neighbour without a bit never has anything")

	h.note(x, 1, 3, b)
	require.True(t, h.has(x, 1, 3, b))
	h.note(x, 1, 2, c)
	require.False(t, h.has(x, 1, 3, c), "an older version says nothing of the newer")
	require.True(t, h.has(x, 1, 3, a), "nor takes anything from those that have the newer")

	h.note(x, 1, 5, c)
	require.True(t, h.has(x, 1, 5, c))
	require.True(t, h.has(x, 1, 3, c))
	require.False(t, h.has(x, 1, 5, a), "a newer version starts the set again")
	require.False(t, h.has(x, 1, 3, a), "what a had is forgotten: it costs an announcement, never a miss")

	h.note(x, 0, 9, a) // a record without an incarnation says nothing
	require.False(t, h.has(x, 1, 5, a))
	h.note(x, 1, 9, 0) // nor does a neighbour without a bit
	require.True(t, h.has(x, 1, 5, c))

	h.forget(x)
	require.False(t, h.has(x, 1, 5, c))
	require.Zero(t, h.len())
}

func TestHeardSetReleaseForgetsTheNeighbour(t *testing.T) {
	var h heardSet
	a, b := h.acquire(), h.acquire()
	h.note(1, 1, 1, a)
	h.note(1, 1, 1, b)
	h.note(2, 1, 1, a)
	h.release(a)
	require.Equal(t, 1, h.len(), "an entry only a had is dropped")
	require.True(t, h.has(1, 1, 1, b))
	a2 := h.acquire()
	require.Equal(t, a, a2)
	require.False(t, h.has(1, 1, 1, a2), "a new neighbour with the same bit has nothing")
	require.False(t, h.has(2, 1, 1, a2))
	h.release(b)
	require.Zero(t, h.len())
	require.Nil(t, h.m, "an empty map is dropped")
}

func TestHeardSetSweep(t *testing.T) {
	var h heardSet
	a, b := h.acquire(), h.acquire()
	ours := map[PeerName]digestEntry{3: {Name: 3, UID: 1, Version: 4}}
	have := func(name PeerName) digestEntry { return ours[name] }
	h.note(1, 1, 1, a)
	h.note(2, 1, 1, a)
	h.note(3, 1, 5, a)
	h.sweep(have)
	require.Equal(t, 3, h.len(), "noted since the last sweep, and newer than ours: kept")
	h.note(2, 1, 1, b)
	h.sweep(have)
	require.Equal(t, 1, h.len(), "untouched for a whole sweep: dropped")
	require.True(t, h.has(2, 1, 1, a))
	h.note(3, 1, 6, b)
	ours[3] = digestEntry{Name: 3, UID: 1, Version: 6}
	h.sweep(have)
	require.Zero(t, h.len(), "a version we have: its announcements went long ago")
	require.Nil(t, h.m)
}

// An announcement to a neighbour leaves out the entries it is known to
// have at the announced version or a newer one.
func TestAnnounceSkipsWhatTheNeighbourHas(t *testing.T) {
	tp := newTestTopology(0)
	tp.apply([]peerUpdate{update(1, 11, 3), update(2, 22, 5), update(3, 33, 7), update(4, 44, 2)})
	a := tp.heard.acquire()
	b := tp.heard.acquire()
	tp.heard.note(testPeerName(1), 11, 3, a) // the same version
	tp.heard.note(testPeerName(2), 22, 6, a) // a newer one
	tp.heard.note(testPeerName(3), 33, 6, a) // an older one
	tp.heard.note(testPeerName(4), 44, 2, b) // another neighbour's
	names := []PeerName{testPeerName(1), testPeerName(2), testPeerName(3), testPeerName(4)}
	announced := func(bit uint64) []digestEntry {
		var enc topoEncoder
		msgs := enc.announce(&Peers{topo: tp}, names, &LocalConnection{heardBit: bit})
		var out []digestEntry
		for _, m := range msgs {
			d, err := appendParsedDigest(nil, m)
			require.NoError(t, err)
			out = append(out, d...)
		}
		return out
	}
	require.Equal(t, []digestEntry{rec(3, 33, 7), rec(4, 44, 2)}, announced(a))
	require.Equal(t, []digestEntry{rec(1, 11, 3), rec(2, 22, 5), rec(3, 33, 7)}, announced(b))
	require.Len(t, announced(0), 4, "a neighbour without a bit gets everything")
}

// What a neighbour announces, lists in a digest or sends whole is noted
// as what it has.
func TestRouterNotesWhatNeighboursHave(t *testing.T) {
	r := newTestRouter(t)
	r.Peers.mu.Lock()
	bit := r.Peers.topo.heard.acquire()
	r.Peers.mu.Unlock()
	c := &LocalConnection{router: r, remoteName: testPeerName(2), q: newSendQueue(1 << 20), digests: true, heardBit: bit}
	has := func(name int, uid PeerUID, version uint64) bool {
		r.Peers.mu.RLock()
		defer r.Peers.mu.RUnlock()
		return r.Peers.topo.heard.has(testPeerName(name), uid, version, bit)
	}
	r.pullNewer(c, []digestEntry{rec(3, 33, 4)}, true)
	require.True(t, has(3, 33, 4), "announced")
	r.pullNewer(c, []digestEntry{rec(7, 77, 4)}, false)
	require.True(t, has(7, 77, 4), "in a digest, newer than ours")
	r.mergeUpdates(c, []peerUpdate{update(6, 66, 2)})
	r.Peers.mu.Lock()
	r.Peers.topo.heard.forget(testPeerName(6))
	r.Peers.mu.Unlock()
	r.pullNewer(c, []digestEntry{rec(6, 66, 2)}, false)
	require.False(t, has(6, 66, 2), "in a digest, a version we have already is not worth remembering")
	r.pullNewer(c, []digestEntry{rec(6, 66, 2)}, true)
	require.True(t, has(6, 66, 2), "announced, it is: we may be about to announce it")
	r.mergeUpdates(c, []peerUpdate{update(5, 55, 2, conn(2, true)), update(2, 22, 1, conn(5, true))})
	require.True(t, has(5, 55, 2), "sent whole")
	require.True(t, has(2, 22, 1))
	require.False(t, has(5, 55, 3))
}

func TestHeardSetIsBounded(t *testing.T) {
	h := heardSet{limit: 3}
	a := h.acquire()
	for name := PeerName(1); name <= 10; name++ {
		h.note(name, 1, 1, a)
	}
	require.Equal(t, 3, h.len(), "names beyond the limit are not remembered")
	require.True(t, h.has(1, 1, 1, a))
	require.False(t, h.has(4, 1, 1, a), "a name left out is announced as usual")
	h.note(2, 1, 7, a)
	require.True(t, h.has(2, 1, 7, a), "names already remembered still follow their versions")

	top := newTopology(&Peer{Name: 1, UID: 1}, topologyLimits{})
	require.Equal(t, DefaultMaxPeers, top.heard.limit, "the topology bounds it by the peers it may hold")
	top = newTopology(&Peer{Name: 1, UID: 1}, topologyLimits{MaxPeers: 50})
	require.Equal(t, 50, top.heard.limit)
}

// A relaying peer sends the entries of peers new to it whole to its other
// mesh neighbours, but for those known to have them, and announces newer
// versions of entries.
func TestRelaySendsNewPeersWhole(t *testing.T) {
	r := newTestRouter(t)
	conns := make(map[int]*LocalConnection)
	r.mu.Lock()
	for _, i := range []int{2, 3, 4} {
		r.Peers.mu.Lock()
		bit := r.Peers.topo.heard.acquire()
		r.Peers.mu.Unlock()
		c := &LocalConnection{router: r, remoteName: testPeerName(i), q: newSendQueue(1 << 20), digests: true, heardBit: bit}
		conns[i] = c
		r.conns[c.remoteName] = c
	}
	r.connsChanged()
	r.mu.Unlock()
	r.Peers.mu.Lock()
	r.Peers.topo.heard.note(testPeerName(5), 55, 1, conns[4].heardBit)
	r.Peers.mu.Unlock()

	r.mergeUpdates(conns[2], []peerUpdate{update(5, 55, 1, conn(2, true))})
	taken := func(c *LocalConnection) sendBatch {
		var b sendBatch
		c.q.take(&b, true, true)
		return b
	}
	b := taken(conns[2])
	require.Empty(t, b.relay, "not sent back to the neighbour it came from")
	b = taken(conns[3])
	require.Equal(t, []PeerName{testPeerName(5)}, b.relay)
	require.Empty(t, b.announce)
	require.Equal(t, []PeerName{testPeerName(5)}, appendUnheard(nil, r.Peers, b.relay, conns[3]))
	b = taken(conns[4])
	require.Empty(t, appendUnheard(nil, r.Peers, b.relay, conns[4]), "the neighbour is known to have it")

	r.mergeUpdates(conns[2], []peerUpdate{update(5, 55, 2, conn(2, true))})
	b = taken(conns[3])
	require.Empty(t, b.relay, "a newer version is announced")
	require.Equal(t, []PeerName{testPeerName(5)}, b.announce)
	require.True(t, b.later)
}
