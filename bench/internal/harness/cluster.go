// Package harness runs the benchmark scenarios of meshbench against mesh
// and hashicorp/memberlist clusters in one process on 127.0.0.1.
//
// Every scenario starts its own cluster, measures, and stops every router
// or memberlist node it started before it returns, whatever happens; every
// wait has a timeout, so a scenario reports "timeout" rather than hang.
package harness

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/gossip-mesh/mesh/bench/internal/stats"
)

// System names a library under test.
type System string

// The systems.
const (
	Mesh       System = "mesh"
	Memberlist System = "memberlist"
)

// cluster is what the scenarios need of a running mesh or memberlist
// cluster.
type cluster interface {
	size() int
	// memberComplete reports whether member i knows every member.
	memberComplete(i int) bool
	// progress returns how many members each member knows.
	progress() []int
	// bytesSent returns the bytes sent by all members so far.
	bytesSent() int64
	// startTimes returns when the first member started and when the last
	// member's start (including its join) began.
	startTimes() (first, origin time.Time)
	stop() error
}

// clusterSpec describes a cluster to start.
type clusterSpec struct {
	System    System
	N         int
	Bootstrap Bootstrap
	// ConnLimit applies to mesh only; 0 is its default.
	ConnLimit int
	Encrypted bool
	Seed      uint64
	// Recorders, when not nil, gives each member a broadcast recorder
	// (len(Recorders) == N); otherwise members count unicasts.
	Recorders []*recorder
}

// benchPassword is the mesh password of the encrypted runs.
var benchPassword = []byte("meshbench password")

// benchKey is the memberlist key (AES-256) of the encrypted runs.
var benchKey = []byte("meshbench key of 32 bytes length")

// startCluster starts the cluster described by s; its members receive on
// the bench channel (mesh) or through a delegate (memberlist).
func startCluster(s clusterSpec) (cluster, error) {
	switch s.System {
	case Mesh:
		o := meshOptions{N: s.N, Bootstrap: s.Bootstrap, ConnLimit: s.ConnLimit, Seed: s.Seed}
		if s.Encrypted {
			o.Password = benchPassword
		}
		o.Gossiper = func(i int) mesh.Gossiper {
			g := &benchGossiper{}
			if s.Recorders != nil {
				g.bcast = s.Recorders[i]
			}
			return g
		}
		c, err := startMesh(o)
		if err != nil {
			return nil, err
		}
		return c, nil
	case Memberlist:
		o := mlOptions{N: s.N, Bootstrap: s.Bootstrap, Seed: s.Seed}
		if s.Encrypted {
			o.SecretKey = benchKey
		}
		o.Delegate = func(i int) *mlDelegate {
			d := &mlDelegate{}
			if s.Recorders != nil {
				d.bcast = s.Recorders[i]
			}
			return d
		}
		c, err := startML(o)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("unknown system %q", s.System)
}

// pollInterval is how often each member is checked while a cluster of n
// forms: every 2 ms in small clusters, for millisecond resolution, and
// less often in large ones, so that checking takes little of the CPU it
// measures: 4 ms at 200 members, 100 ms at 1000. (A mesh router is read
// whole only once it counts all n peers: see meshCluster.memberComplete.)
func pollInterval(n int) time.Duration {
	return max(2*time.Millisecond, time.Duration(n*n)*100*time.Nanosecond)
}

// waitFormed waits until every member knows every other one, or until
// timeout has passed since the last member's start. It returns the time
// from that start until the last member was first seen knowing all the
// others. Each member is checked by a goroutine of its own, every
// pollInterval: a check may wait for the member's lock, and on a loaded
// machine for a core after it, so checking the members in turn would add
// those waits up (half a minute at a thousand busy routers) and count them
// in the formation time. Once all members have been seen complete, all
// are checked once more; one that lost a peer meanwhile is watched again,
// and formation ends when it is complete again. A check still running at
// the deadline is abandoned (it ends at the latest when the cluster is
// stopped).
func waitFormed(c cluster, timeout time.Duration) (time.Duration, bool) {
	_, origin := c.startTimes()
	n := c.size()
	interval := pollInterval(n)
	deadline := time.NewTimer(time.Until(origin.Add(timeout)))
	defer deadline.Stop()
	stop := make(chan struct{})
	defer close(stop)
	// complete gets, for each member, when it was first seen complete.
	complete := make(chan time.Duration, n)
	watch := func(i int) {
		go func() {
			for {
				if c.memberComplete(i) {
					complete <- time.Since(origin)
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(interval):
				}
			}
		}()
	}
	for i := range n {
		watch(i)
	}
	pending := n
	var last time.Duration
	for {
		select {
		case at := <-complete:
			last = max(last, at)
			if pending--; pending > 0 {
				continue
			}
			for i := range n {
				if !c.memberComplete(i) {
					pending++
					watch(i)
				}
			}
			if pending == 0 {
				return last, true
			}
		case <-deadline.C:
			return time.Since(origin), false
		}
	}
}

// progressTimeout bounds the final count of what every member knows.
const progressTimeout = 15 * time.Second

// progressWithin returns c.progress(), or nil when it takes longer than
// timeout.
func progressWithin(c cluster, timeout time.Duration) []int {
	result := make(chan []int, 1)
	go func() { result <- c.progress() }()
	select {
	case p := <-result:
		return p
	case <-time.After(timeout):
		return nil
	}
}

// minMedianKnown returns the least and the median number of members known
// by a member, or -1, -1 when they could not be counted in time.
func minMedianKnown(c cluster) (lowest, median int) {
	p := progressWithin(c, progressTimeout)
	if p == nil {
		return -1, -1
	}
	return stats.MinMedian(p)
}

// benchGossiper is the mesh Gossiper of the scenarios: it counts unicasts
// and, with a recorder, records broadcasts and relays each the first time.
type benchGossiper struct {
	bcast *recorder

	mu    sync.Mutex
	msgs  int64
	bytes int64
}

var _ mesh.Gossiper = (*benchGossiper)(nil)

// OnGossipUnicast implements mesh.Gossiper.
func (g *benchGossiper) OnGossipUnicast(_ mesh.PeerName, msg []byte) error {
	g.mu.Lock()
	g.msgs++
	g.bytes += int64(len(msg))
	g.mu.Unlock()
	return nil
}

// received returns the unicast messages and bytes received so far.
func (g *benchGossiper) received() (msgs, bytes int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.msgs, g.bytes
}

// OnGossipBroadcast implements mesh.Gossiper: a message seen for the first
// time is recorded and passed on along the broadcast tree.
func (g *benchGossiper) OnGossipBroadcast(_ mesh.PeerName, update []byte) (mesh.GossipData, error) {
	if g.bcast == nil || len(update) < 8 || !g.bcast.record(update) {
		return nil, nil
	}
	return &bcastData{msgs: [][]byte{append([]byte(nil), update...)}}, nil
}

// Gossip implements mesh.Gossiper: there is no state to gossip.
func (g *benchGossiper) Gossip() mesh.GossipData { return nil }

// OnGossip implements mesh.Gossiper.
func (g *benchGossiper) OnGossip([]byte) (mesh.GossipData, error) { return nil, nil }

// bcastData is a set of broadcast messages. It is immutable: Merge returns
// a new value, so the same data may sit in several send queues.
type bcastData struct{ msgs [][]byte }

var _ mesh.GossipData = (*bcastData)(nil)

// Encode implements mesh.GossipData: one message per frame.
func (d *bcastData) Encode() [][]byte { return d.msgs }

// Merge implements mesh.GossipData.
func (d *bcastData) Merge(other mesh.GossipData) mesh.GossipData {
	o, ok := other.(*bcastData)
	if !ok {
		return d
	}
	msgs := make([][]byte, 0, len(d.msgs)+len(o.msgs))
	return &bcastData{msgs: append(append(msgs, d.msgs...), o.msgs...)}
}

// recorder remembers when each broadcast message (identified by its first
// 8 bytes) first arrived.
type recorder struct {
	mu   sync.Mutex
	seen map[uint64]time.Time
}

func newRecorder() *recorder { return &recorder{seen: make(map[uint64]time.Time)} }

// record notes the arrival of msg now and reports whether it is the first.
func (r *recorder) record(msg []byte) bool {
	now := time.Now()
	id := binary.BigEndian.Uint64(msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[id]; ok {
		return false
	}
	r.seen[id] = now
	return true
}

// arrival returns when message id first arrived.
func (r *recorder) arrival(id uint64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.seen[id]
	return t, ok
}

// Both clusters satisfy cluster.
var (
	_ cluster = (*meshCluster)(nil)
	_ cluster = (*mlCluster)(nil)
)
