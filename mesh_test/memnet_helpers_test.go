package mesh_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/gossip-mesh/mesh/memnet"
	"github.com/stretchr/testify/require"
)

// longTests reports whether the long versions of the partition, churn and
// scale tests were asked for, with MESH_LONG=1.
func longTests() bool { return os.Getenv("MESH_LONG") == "1" }

// newMemNetwork returns an in-memory network whose seed is logged, and
// taken from MEMNET_SEED when set, so that a failing run can be repeated.
// The test's random choices come from the returned source, seeded alike.
func newMemNetwork(t testing.TB) (*memnet.Network, *rand.Rand) {
	return newMemNetworkConfig(t, memnet.Config{})
}

// newMemNetworkConfig is newMemNetwork with settings of the test's own;
// the seed of cfg is ignored.
func newMemNetworkConfig(t testing.TB, cfg memnet.Config) (*memnet.Network, *rand.Rand) {
	cfg.Seed = 0
	if s := os.Getenv("MEMNET_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "MEMNET_SEED")
		cfg.Seed = v
	}
	nw := memnet.New(cfg)
	t.Logf("%v: run again with MEMNET_SEED=%d to repeat its random choices", nw, nw.Seed())
	return nw, rand.New(rand.NewPCG(nw.Seed(), 1))
}

// memOptions configures the routers of a test on memnet.
type memOptions struct {
	discovery bool
	// connLimit, heartbeat, handshakeTimeout and gossipInterval replace
	// the router defaults when set.
	connLimit        int
	heartbeat        time.Duration
	handshakeTimeout time.Duration
	gossipInterval   time.Duration
	// quiet drops the router logs (large meshes log too much to keep).
	quiet bool
}

// memHost is the address of the host of peer i.
func memHost(i int) string { return fmt.Sprintf("10.0.%d.%d", (i+1)>>8, (i+1)&0xff) }

// memAddr is where peer i listens.
func memAddr(i int) string { return memHost(i) + ":" + strconv.Itoa(mesh.Port) }

// startMemNode starts peer i on its host of nw, listening on the default
// port, with a recording gossiper on channel "test", and stops it when the
// test ends. A peer started again with the same index has the same name
// and address and a new UID.
func startMemNode(t testing.TB, nw *memnet.Network, i int, o memOptions) *node {
	t.Helper()
	n := newMemNode(t, nw, i, o)
	t.Cleanup(func() {
		n.router.Stop()
	})
	return n
}

// newMemNode is startMemNode without the cleanup: the caller stops it.
func newMemNode(t testing.TB, nw *memnet.Network, i int, o memOptions) *node {
	t.Helper()
	config := mesh.Config{
		Host:              memHost(i),
		Port:              mesh.Port,
		PeerDiscovery:     o.discovery,
		ConnLimit:         o.connLimit,
		HeartbeatInterval: o.heartbeat,
		HandshakeTimeout:  o.handshakeTimeout,
		Transport:         nw.Host(memHost(i)),
	}
	if o.gossipInterval != 0 {
		config.GossipInterval = &o.gossipInterval
	}
	var logger mesh.Logger = testLogger{t}
	if o.quiet {
		logger = nil
	}
	r, err := mesh.NewRouter(config, name(i), fmt.Sprint("peer", i), nil, logger)
	require.NoError(t, err)
	rec := newRecorder()
	g, err := r.NewGossip("test", rec)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	require.Equal(t, memAddr(i), r.ListenAddr().String())
	return &node{t: t, index: i, router: r, gossip: g, rec: rec}
}

func startMemNodes(t testing.TB, nw *memnet.Network, count int, o memOptions) []*node {
	nodes := make([]*node, count)
	for i := range nodes {
		nodes[i] = startMemNode(t, nw, i, o)
	}
	return nodes
}

// connectToIndexes asks n to connect to the peers with the given indexes.
func (n *node) connectToIndexes(indexes ...int) {
	addrs := make([]string, 0, len(indexes))
	for _, i := range indexes {
		addrs = append(addrs, memAddr(i))
	}
	require.Empty(n.t, n.router.ConnectionMaker.InitiateConnections(addrs, false))
}

func hostsOf(nodes []*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = memHost(n.index)
	}
	return out
}

// eventuallyWithin polls cond every interval until it holds or limit
// passes, and returns how long it took.
func eventuallyWithin(t testing.TB, limit, interval time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < limit {
		ok, msg := cond()
		if ok {
			return time.Since(start)
		}
		last = msg
		time.Sleep(interval)
	}
	t.Fatalf("%s: not reached within %v: %s", what, limit, last)
	return 0
}

// peerVersion is what one router knows of a peer.
type peerVersion struct {
	uid     mesh.PeerUID
	version uint64
}

func topologyOf(r *mesh.Router) map[mesh.PeerName]peerVersion {
	out := make(map[mesh.PeerName]peerVersion)
	r.Peers.ForEach(func(p *mesh.Peer) { out[p.Name] = peerVersion{p.UID, p.Version} })
	return out
}

// topologyAgrees reports whether every node knows exactly the nodes given,
// with their current UIDs (no ghost, no one missing), and every node holds
// the same version of every entry.
func topologyAgrees(nodes []*node) (bool, string) {
	if ok, msg := knowsAll(nodes); !ok {
		return false, msg
	}
	first := topologyOf(nodes[0].router)
	for _, n := range nodes[1:] {
		for name, pv := range topologyOf(n.router) {
			if first[name] != pv {
				return false, fmt.Sprintf("peer %d has %s at version %d, peer %d at version %d",
					n.index, name, pv.version, nodes[0].index, first[name].version)
			}
		}
	}
	return true, ""
}

// settled reports whether the nodes agree on the topology (see
// topologyAgrees) and every node has a route to every other. A route is
// computed in the same pass that marks peers as reachable, so from then on
// each node removes an unreachable peer after the short grace period.
func settled(nodes []*node) (bool, string) {
	if ok, msg := topologyAgrees(nodes); !ok {
		return false, msg
	}
	return routesEverywhere(nodes)
}

// routesEverywhere reports whether every node has a route to every other.
func routesEverywhere(nodes []*node) (bool, string) {
	for _, n := range nodes {
		for _, o := range nodes {
			if _, ok := n.router.Routes.UnicastAll(o.router.Ourself.Name); !ok && n != o {
				return false, fmt.Sprintf("peer %d has no route to peer %d", n.index, o.index)
			}
		}
	}
	return true, ""
}

// routerGoroutines counts the goroutines the given routers may be
// running at most: the accept loop, the topology loop, the heartbeat loop,
// the connection maker and one per gossip channel each; a reader per
// connection, and a writer too once it is registered (while it has
// something to send); and a dialler per dial under way.
func routerGoroutines(nodes []*node, channels int) int {
	total := 0
	for _, n := range nodes {
		total += 4 + channels
		for _, c := range mesh.NewStatus(n.router).Connections {
			switch c.State {
			case "pending", "connecting":
				total++
			case "connected", "established":
				total += 2
			}
		}
	}
	return total
}
