package mesh

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A connection's reading goroutine hands over to a new one when the
// connection falls quiet, and the connection goes on working across the
// hand-overs; the goroutines handed over from end.
func TestQuietReaderHandsOver(t *testing.T) {
	checkGoroutines(t)
	cfg := Config{HeartbeatInterval: 100 * time.Millisecond}
	a := startSecRouter(t, cfg, 1)
	b := startSecRouter(t, cfg, 2)
	a.ConnectionMaker.InitiateConnections([]string{b.addr()}, false)
	waitFor(t, "the connection", func() bool {
		return a.connectionTo(b.Ourself.Name) != nil && b.connectionTo(a.Ourself.Name) != nil
	})
	waitFor(t, "a route", func() bool {
		_, ok := a.Routes.Unicast(b.Ourself.Name)
		return ok
	})
	c := b.connectionTo(a.Ourself.Name)
	// Heartbeats keep coming: the reader hands over every readerRenewal.
	deadline := time.Now().Add(10 * readerRenewal)
	for i := 0; c.readers.Load() < 3; i++ {
		require.False(t, time.Now().After(deadline), "no hand-over after %v", 10*readerRenewal)
		msg := fmt.Sprintf("m%d", i)
		require.NoError(t, a.sendUnicast("vec", b.Ourself.Name, []byte(msg)))
		waitFor(t, "the unicast "+msg, func() bool { return b.received(msg) == 1 })
		time.Sleep(50 * time.Millisecond)
	}
	require.Same(t, c, b.connectionTo(a.Ourself.Name), "the connection survived its hand-overs")
	// One reader per connection end: those handed over from are gone.
	waitFor(t, "one reading goroutine per connection end", func() bool { return readingGoroutines() == 2 })
}

// readingGoroutines counts the goroutines of the process in runReader.
func readingGoroutines() int {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "mesh.(*Router).runReader(")
}

// The list of connections is sorted by name, and follows additions and
// removals.
func TestConnectionListFollowsTheConnections(t *testing.T) {
	hub := startSecRouter(t, Config{}, 10)
	var leaves []*secRouter
	for i := range 4 {
		l := startSecRouter(t, Config{}, 20-i)
		l.ConnectionMaker.InitiateConnections([]string{hub.addr()}, false)
		leaves = append(leaves, l)
	}
	names := func() []PeerName {
		var out []PeerName
		for _, c := range hub.connections() {
			out = append(out, c.remoteName)
		}
		return out
	}
	waitFor(t, "four connections", func() bool { return len(names()) == 4 })
	require.True(t, slices.IsSorted(names()), "%v", names())
	gone := leaves[1].Ourself.Name
	require.NoError(t, leaves[1].Stop())
	waitFor(t, "the connection to go", func() bool { return len(names()) == 3 })
	require.NotContains(t, names(), gone)
	require.True(t, slices.IsSorted(names()), "%v", names())
}
