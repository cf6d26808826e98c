package mesh

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSendQueueAnnouncesNewerVersionsLater(t *testing.T) {
	q := newSendQueue(1 << 20)
	q.pushAnnounce([]PeerName{3, 1})
	q.pushAnnounceLater([]PeerName{2, 3})
	var b sendBatch

	// Without topology, neither goes.
	hasTopo, hasLater := q.take(&b, false, false)
	require.True(t, hasTopo)
	require.True(t, hasLater)
	require.Empty(t, b.announce)

	// With topology but not the later ones: new peers go at once.
	hasTopo, hasLater = q.take(&b, true, false)
	require.False(t, hasTopo)
	require.True(t, hasLater)
	require.Equal(t, []PeerName{1, 3}, b.announce)
	require.False(t, b.later)

	// Both, merged without duplicates.
	q.pushAnnounce([]PeerName{2, 4})
	hasTopo, hasLater = q.take(&b, true, true)
	require.False(t, hasTopo)
	require.False(t, hasLater)
	require.Equal(t, []PeerName{2, 3, 4}, b.announce)
	require.True(t, b.later)

	// Nothing left: a writer may stop.
	require.True(t, q.emptyLocked())
	q.pushAnnounceLater([]PeerName{5})
	require.False(t, q.emptyLocked(), "announcements waiting keep the writer")
	q.close()
	require.True(t, q.emptyLocked())
}
