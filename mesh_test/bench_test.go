package mesh_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
)

// counter is a Gossiper that counts the unicasts it receives.
type counter struct{ n atomic.Int64 }

func (c *counter) OnGossipUnicast(mesh.PeerName, []byte) error { c.n.Add(1); return nil }
func (c *counter) OnGossipBroadcast(mesh.PeerName, []byte) (mesh.GossipData, error) {
	return nil, nil
}
func (c *counter) Gossip() mesh.GossipData                  { return nil }
func (c *counter) OnGossip([]byte) (mesh.GossipData, error) { return nil, nil }

// BenchmarkUnicast measures unicast between two directly connected routers
// over loopback TCP: msgs/s counts the messages the receiving Gossiper got.
func BenchmarkUnicast(b *testing.B) {
	for _, size := range []int{100, 1024, 64 << 10} {
		for _, pw := range []struct {
			name     string
			password []byte
		}{{"plain", nil}, {"encrypted", []byte("benchmark password")}} {
			b.Run(fmt.Sprintf("size=%d/%s", size, pw.name), func(b *testing.B) {
				benchmarkUnicast(b, size, pw.password)
			})
		}
	}
}

func benchmarkUnicast(b *testing.B, size int, password []byte) {
	nodes := []*node{startNode(b, 0, options{password: password}), startNode(b, 1, options{password: password})}
	recv := &counter{}
	if _, err := nodes[1].router.NewGossip("bench", recv); err != nil {
		b.Fatal(err)
	}
	send, err := nodes[0].router.NewGossip("bench", &counter{})
	if err != nil {
		b.Fatal(err)
	}
	nodes[0].connectTo(nodes[1])
	dst := nodes[1].router.Ourself.Name
	eventually(b, "route", func() (bool, string) {
		_, ok := nodes[0].router.Routes.Unicast(dst)
		return ok, ""
	})
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	start := time.Now()
	sent := 0
	for b.Loop() {
		if err := send.GossipUnicast(dst, msg); err != nil {
			b.Fatal(err)
		}
		sent++
	}
	// Wait for the stragglers: until everything arrived or nothing more does.
	last, lastChange := recv.n.Load(), time.Now()
	for recv.n.Load() < int64(sent) && time.Since(lastChange) < time.Second {
		time.Sleep(time.Millisecond)
		if n := recv.n.Load(); n != last {
			last, lastChange = n, time.Now()
		}
	}
	elapsed := time.Since(start)
	got := recv.n.Load()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(100*float64(int64(sent)-got)/float64(sent), "%dropped")
}
