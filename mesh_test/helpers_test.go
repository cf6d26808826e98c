// Package mesh_test runs whole meshes of routers in one process: small
// ones over real TCP on 127.0.0.1 (this file), the others on memnet, an
// in-memory network that injects faults (memnet_helpers_test.go), and one
// over veth links between network namespaces where the machine allows it
// (netns_test.go).
package mesh_test

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

// deadline is how long a test waits for a mesh to converge: generous, as
// the machines running the tests are shared and noisy.
const deadline = 60 * time.Second

func name(i int) mesh.PeerName { return mesh.PeerName(0x020000000000 + uint64(i+1)) }

type options struct {
	password  []byte
	discovery bool
	// gossipInterval, when set, replaces the default periodic gossip
	// interval.
	gossipInterval time.Duration
}

// node is one router with a recording gossiper on channel "test".
type node struct {
	t      testing.TB
	index  int
	router *mesh.Router
	gossip mesh.Gossip
	rec    *recorder
}

func startNode(t testing.TB, i int, o options) *node {
	t.Helper()
	config := mesh.Config{
		Host:          "127.0.0.1",
		Port:          0,
		Password:      o.password,
		PeerDiscovery: o.discovery,
	}
	if o.gossipInterval != 0 {
		config.GossipInterval = &o.gossipInterval
	}
	r, err := mesh.NewRouter(config, name(i), fmt.Sprint("peer", i), nil, testLogger{t})
	require.NoError(t, err)
	rec := newRecorder()
	g, err := r.NewGossip("test", rec)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	n := &node{t: t, index: i, router: r, gossip: g, rec: rec}
	t.Cleanup(func() { r.Stop() })
	return n
}

func (n *node) addr() string { return n.router.ListenAddr().String() }

func (n *node) connectTo(others ...*node) {
	var addrs []string
	for _, o := range others {
		addrs = append(addrs, o.addr())
	}
	require.Empty(n.t, n.router.ConnectionMaker.InitiateConnections(addrs, false))
}

// testLogger sends router logs to the test log, only shown on failure or
// with -v.
type testLogger struct{ t testing.TB }

func (l testLogger) Printf(format string, args ...interface{}) {
	defer func() { _ = recover() }() // a log line after the test ended
	l.t.Logf(format, args...)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < deadline {
		ok, msg := cond()
		if ok {
			return time.Since(start)
		}
		last = msg
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %v: %s", what, deadline, last)
	return 0
}

// knowsAll reports whether every running node knows every other one, with
// its current UID.
func knowsAll(nodes []*node) (bool, string) {
	want := make(map[mesh.PeerName]mesh.PeerUID)
	for _, n := range nodes {
		want[n.router.Ourself.Name] = n.router.Ourself.UID
	}
	for _, n := range nodes {
		descs := n.router.Peers.Descriptions()
		got := make(map[mesh.PeerName]mesh.PeerUID, len(descs))
		for _, d := range descs {
			got[d.Name] = d.UID
		}
		if len(got) != len(want) {
			return false, fmt.Sprintf("peer %d knows %d peers, want %d", n.index, len(got), len(want))
		}
		for name, uid := range want {
			if got[name] != uid {
				return false, fmt.Sprintf("peer %d has %s with UID %d, want %d", n.index, name, got[name], uid)
			}
		}
	}
	return true, ""
}

// versionsAgree reports whether every running node has every other one's
// current entry: the version that peer has of its own.
func versionsAgree(nodes []*node) (bool, string) {
	for _, n := range nodes {
		for _, o := range nodes {
			want := o.router.Ourself.Peer()
			got := n.router.Peers.Fetch(want.Name)
			if got == nil || got.UID != want.UID || got.Version != want.Version {
				v := "nothing"
				if got != nil {
					v = fmt.Sprintf("version %d", got.Version)
				}
				return false, fmt.Sprintf("peer %d has %s of peer %d's entry, want version %d", n.index, v, o.index, want.Version)
			}
		}
	}
	return true, ""
}

func waitFullKnowledge(t testing.TB, nodes []*node) time.Duration {
	t.Helper()
	return eventually(t, "every peer knows every peer", func() (bool, string) { return knowsAll(nodes) })
}

// recorder is a Gossiper whose state is a set of strings; it records every
// unicast and counts every broadcast it receives.
type recorder struct {
	mu         sync.Mutex
	set        map[string]struct{}
	unicasts   []string
	broadcasts map[string]int
}

func newRecorder() *recorder {
	return &recorder{set: make(map[string]struct{}), broadcasts: make(map[string]int)}
}

type setData struct {
	mu    sync.Mutex
	items map[string]struct{}
}

func newSetData(items ...string) *setData {
	d := &setData{items: make(map[string]struct{})}
	for _, it := range items {
		d.items[it] = struct{}{}
	}
	return d
}

func (d *setData) Encode() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out [][]byte
	for it := range d.items {
		out = append(out, []byte(it))
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i]) < string(out[j]) })
	return out
}

func (d *setData) Merge(other mesh.GossipData) mesh.GossipData {
	o := other.(*setData)
	o.mu.Lock()
	items := make([]string, 0, len(o.items))
	for it := range o.items {
		items = append(items, it)
	}
	o.mu.Unlock()
	d.mu.Lock()
	for _, it := range items {
		d.items[it] = struct{}{}
	}
	d.mu.Unlock()
	return d
}

func (r *recorder) OnGossipUnicast(src mesh.PeerName, msg []byte) error {
	r.mu.Lock()
	r.unicasts = append(r.unicasts, src.String()+":"+string(msg))
	r.mu.Unlock()
	return nil
}

// merge adds an item and reports whether it was new.
func (r *recorder) merge(item string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[item]; ok {
		return false
	}
	r.set[item] = struct{}{}
	return true
}

func (r *recorder) OnGossipBroadcast(src mesh.PeerName, update []byte) (mesh.GossipData, error) {
	r.mu.Lock()
	r.broadcasts[string(update)]++
	r.mu.Unlock()
	if r.merge(string(update)) {
		return newSetData(string(update)), nil
	}
	return nil, nil
}

func (r *recorder) Gossip() mesh.GossipData {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := newSetData()
	for it := range r.set {
		d.items[it] = struct{}{}
	}
	return d
}

func (r *recorder) OnGossip(msg []byte) (mesh.GossipData, error) {
	if r.merge(string(msg)) {
		return newSetData(string(msg)), nil
	}
	return nil, nil
}

func (r *recorder) has(item string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[item]
	return ok
}

func (r *recorder) unicastLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.unicasts...)
}

func (r *recorder) broadcastCount(item string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broadcasts[item]
}

// checkNoGoroutineLeak records the goroutines running now and, at cleanup
// (after the routers' own cleanups, which were registered later and so run
// first), waits until no more are running.
func checkNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		start := time.Now()
		for {
			now := runtime.NumGoroutine()
			if now <= before {
				return
			}
			if time.Since(start) > 10*time.Second {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("%d goroutines before, %d after stopping every router:\n%s", before, now, meshStacks(string(buf[:n])))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// meshStacks keeps the goroutine dumps that involve the mesh package.
func meshStacks(dump string) string {
	var out []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "gossip-mesh/mesh.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
