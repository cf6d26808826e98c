package meshprom_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/gossip-mesh/mesh/meshprom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// counter is a Gossiper that counts the unicasts it receives.
type counter struct{ n atomic.Int64 }

func (c *counter) OnGossipUnicast(mesh.PeerName, []byte) error { c.n.Add(1); return nil }
func (c *counter) OnGossipBroadcast(mesh.PeerName, []byte) (mesh.GossipData, error) {
	return nil, nil
}
func (c *counter) Gossip() mesh.GossipData                  { return nil }
func (c *counter) OnGossip([]byte) (mesh.GossipData, error) { return nil, nil }

func startRouter(t *testing.T, i int) (*mesh.Router, mesh.Gossip, *counter) {
	t.Helper()
	r, err := mesh.NewRouter(mesh.Config{Host: "127.0.0.1"}, mesh.PeerName(0x020000000000+i), fmt.Sprint("peer", i), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{}
	g, err := r.NewGossip("test", c)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r, g, c
}

// eventually polls cond with a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("%s: not reached within a minute", what)
		}
	}
}

// checkGoroutines fails the test if goroutines started during it still
// run once its routers are stopped.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for start := time.Now(); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%d goroutines before, %d after stopping the routers", before, runtime.NumGoroutine())
			}
		}
	})
}

// value finds the value of the series of family name with the given labels.
func value(t *testing.T, families []*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := make(map[string]string)
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestCollector(t *testing.T) {
	checkGoroutines(t)
	a, send, _ := startRouter(t, 1)
	b, _, recv := startRouter(t, 2)
	if errs := b.ConnectionMaker.InitiateConnections([]string{a.ListenAddr().String()}, false); len(errs) > 0 {
		t.Fatal(errs)
	}
	eventually(t, "a route from a to b", func() bool { _, ok := a.Routes.Unicast(b.Ourself.Name); return ok })
	if err := send.GossipUnicast(b.Ourself.Name, []byte(strings.Repeat("x", 500))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unicast at b", func() bool { return recv.n.Load() == 1 })

	// A pedantic registry checks that what is collected matches what is
	// described; two routers in one registry differ by a constant label.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(meshprom.NewCollector(a, prometheus.Labels{"peer": "a"}))
	reg.MustRegister(meshprom.NewCollector(b, prometheus.Labels{"peer": "b"}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mesh_peers", map[string]string{"peer": "a"}, 2},
		{"mesh_reachable_peers", map[string]string{"peer": "b"}, 2},
		{"mesh_connections", map[string]string{"peer": "a"}, 1},
		{"mesh_connections_established_total", map[string]string{"peer": "b"}, 1},
		{"mesh_connection_dials_total", map[string]string{"peer": "b"}, 1},
		{"mesh_connections_accepted_total", map[string]string{"peer": "a"}, 1},
		{"mesh_connection_failures_total", map[string]string{"peer": "a", "reason": "password"}, 0},
		{"mesh_channel_messages_sent_total", map[string]string{"peer": "a", "channel": "test", "kind": "unicast"}, 1},
		{"mesh_channel_messages_received_total", map[string]string{"peer": "b", "channel": "test", "kind": "unicast"}, 1},
		{"mesh_messages_sent_total", map[string]string{"peer": "a", "kind": "unicast"}, 1},
		{"mesh_channel_inbox_dropped_total", map[string]string{"peer": "b", "channel": "test"}, 0},
	} {
		if got := value(t, families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(t, families, "mesh_channel_sent_bytes_total", map[string]string{"peer": "a", "channel": "test", "kind": "unicast"}); got < 500 {
		t.Errorf("unicast bytes sent %v, want at least 500", got)
	}
	if got := value(t, families, "mesh_route_recomputations_total", map[string]string{"peer": "a"}); got < 1 {
		t.Errorf("route recomputations %v, want at least 1", got)
	}
	// Every failure reason is exported, zero or not.
	if n := testutil.CollectAndCount(meshprom.NewCollector(a, nil), "mesh_connection_failures_total"); n != 11 {
		t.Errorf("%d failure reasons exported, want 11", n)
	}
	problems, err := testutil.CollectAndLint(meshprom.NewCollector(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
