package mesh_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A channel's whole state, sent down each new connection, may take longer
// to send than the read timeout (twice the heartbeat interval): it goes out
// as it is encoded, frame after frame, so the connection lives, and the
// new peers get all of it, each over one connection rather than over and
// over again.
func TestLargeStateOnNewConnections(t *testing.T) {
	checkNoGoroutineLeak(t)
	nw, _ := newMemNetwork(t)
	o := memOptions{heartbeat: 200 * time.Millisecond, quiet: true}
	src := startMemNode(t, nw, 0, o)
	// 640 items of 8 KiB: 5 MiB of state.
	items := make([]string, 640)
	for i := range items {
		items[i] = fmt.Sprintf("%04d", i) + strings.Repeat(".", 8<<10-4)
		src.rec.merge(items[i])
	}
	peers := []*node{src}
	for i := 1; i <= 3; i++ {
		n := startMemNode(t, nw, i, o)
		n.connectToIndexes(0)
		peers = append(peers, n)
	}
	took := eventually(t, "every peer has the whole state", func() (bool, string) {
		for _, n := range peers[1:] {
			for _, it := range items {
				if !n.rec.has(it) {
					return false, fmt.Sprintf("peer %d lacks item %s", n.index, it[:4])
				}
			}
		}
		return true, ""
	})
	// A connection may still time out on a loaded machine (the heartbeat
	// is short here); a loop of reconnections, each sending the whole
	// state again, makes dozens.
	for _, n := range peers {
		m := n.router.Metrics()
		if m.Connections.Dropped > 2 {
			t.Errorf("peer %d: %d connections dropped, %d established", n.index, m.Connections.Dropped, m.Connections.Established)
		}
	}
	t.Logf("5 MiB of state reached 3 new peers in %v", took.Round(time.Millisecond))
}
