package harness

import (
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gossip-mesh/mesh"
)

// discardLogger swallows the log lines of the libraries under test.
var discardLogger = log.New(io.Discard, "", 0)

// Bootstrap names how the peers of a cluster are told about each other.
type Bootstrap string

// The bootstraps.
const (
	// Star: every peer knows only peer 0, and joins as soon as it starts.
	Star Bootstrap = "star"
	// Ring: all peers start, then peer i joins peer i+1 (mod N).
	Ring Bootstrap = "ring"
	// Sparse: peer i joins two random earlier peers (one for peer 1, none
	// for peer 0) as soon as it starts; the choice is seeded.
	Sparse Bootstrap = "sparse"
)

// benchChannel is the gossip channel the scenarios use.
const benchChannel = "bench"

// meshOptions configures a cluster of mesh routers.
type meshOptions struct {
	N         int
	Bootstrap Bootstrap
	// ConnLimit is Config.ConnLimit; 0 is the library's default.
	ConnLimit int
	// Password enables encryption when non-nil.
	Password []byte
	// Seed seeds the Sparse bootstrap.
	Seed uint64
	// NoDiscovery turns peer discovery off, so that the routers keep the
	// connections of the bootstrap alone.
	NoDiscovery bool
	// Gossiper, when not nil, returns the Gossiper registered on the
	// channel "bench" of router i.
	Gossiper func(i int) mesh.Gossiper
}

// meshCluster is N mesh routers on 127.0.0.1, each with a counting
// transport.
type meshCluster struct {
	routers    []*mesh.Router
	transports []*meshTransport
	gossips    []mesh.Gossip
	gossipers  []mesh.Gossiper
	addrs      []string
	uids       map[mesh.PeerName]mesh.PeerUID

	// firstStart is when the first router was started; origin is when the
	// last peer's start (Start and InitiateConnections) began.
	firstStart, origin time.Time
}

// meshName returns the name of peer i: a locally administered MAC-style
// name, unique per index.
func meshName(i int) mesh.PeerName {
	return mesh.PeerName(0x020000000000 | uint64(i+1))
}

// startMesh creates and starts the routers and bootstraps them. On error
// every router already started is stopped.
func startMesh(o meshOptions) (c *meshCluster, err error) {
	if o.N < 1 {
		return nil, fmt.Errorf("mesh cluster needs at least one peer, not %d", o.N)
	}
	c = &meshCluster{uids: make(map[mesh.PeerName]mesh.PeerUID, o.N)}
	defer func() {
		if err != nil {
			_ = c.stop()
			c = nil
		}
	}()
	rnd := rand.New(rand.NewPCG(o.Seed, 0x6d657368))
	for i := 0; i < o.N; i++ {
		now := time.Now()
		if i == 0 {
			c.firstStart = now
		}
		if i == o.N-1 && o.Bootstrap != Ring {
			c.origin = now
		}
		if err := c.add(i, o); err != nil {
			return c, err
		}
		var peers []string
		switch o.Bootstrap {
		case Star:
			if i > 0 {
				peers = []string{c.addrs[0]}
			}
		case Sparse:
			switch {
			case i == 1:
				peers = []string{c.addrs[0]}
			case i > 1:
				a := rnd.IntN(i)
				b := rnd.IntN(i - 1)
				if b >= a {
					b++
				}
				peers = []string{c.addrs[a], c.addrs[b]}
			}
		case Ring:
		default:
			return c, fmt.Errorf("unknown bootstrap %q", o.Bootstrap)
		}
		if len(peers) > 0 {
			if errs := c.routers[i].ConnectionMaker.InitiateConnections(peers, false); len(errs) > 0 {
				return c, fmt.Errorf("peer %d: %w", i, errors.Join(errs...))
			}
		}
	}
	if o.Bootstrap == Ring {
		for i := 0; i < o.N && o.N > 1; i++ {
			if i == o.N-1 {
				c.origin = time.Now()
			}
			next := c.addrs[(i+1)%o.N]
			if errs := c.routers[i].ConnectionMaker.InitiateConnections([]string{next}, false); len(errs) > 0 {
				return c, fmt.Errorf("peer %d: %w", i, errors.Join(errs...))
			}
		}
		if o.N == 1 {
			c.origin = time.Now()
		}
	}
	return c, nil
}

// add creates and starts router i.
func (c *meshCluster) add(i int, o meshOptions) error {
	tr := &meshTransport{}
	r, err := mesh.NewRouter(mesh.Config{
		Host:          "127.0.0.1",
		Port:          0,
		Password:      o.Password,
		ConnLimit:     o.ConnLimit,
		PeerDiscovery: !o.NoDiscovery,
		Transport:     tr,
		// Every peer of the benchmark dials from 127.0.0.1: the cap on
		// handshakes in progress per remote address, meant for one host,
		// would hold back a star of hundreds of peers on one machine.
		Accept: mesh.AcceptLimits{MaxPendingPerIP: mesh.DefaultMaxPendingHandshakes},
	}, meshName(i), fmt.Sprintf("p%d", i), mesh.NullOverlay{}, nil)
	if err != nil {
		return fmt.Errorf("peer %d: %w", i, err)
	}
	var (
		g   mesh.Gossip
		gsr mesh.Gossiper
	)
	if o.Gossiper != nil {
		gsr = o.Gossiper(i)
		if g, err = r.NewGossip(benchChannel, gsr); err != nil {
			_ = r.Stop()
			return fmt.Errorf("peer %d: %w", i, err)
		}
	}
	if err := r.Start(); err != nil {
		_ = r.Stop()
		return fmt.Errorf("peer %d: %w", i, err)
	}
	addr := r.ListenAddr()
	if addr == nil {
		_ = r.Stop()
		return fmt.Errorf("peer %d: no listen address after Start", i)
	}
	c.routers = append(c.routers, r)
	c.transports = append(c.transports, tr)
	c.gossips = append(c.gossips, g)
	c.gossipers = append(c.gossipers, gsr)
	c.addrs = append(c.addrs, addr.String())
	c.uids[r.Ourself.Name] = r.Ourself.UID
	return nil
}

// size returns the number of routers.
func (c *meshCluster) size() int { return len(c.routers) }

// known returns how many peers router i knows with their current UID
// (itself included).
func (c *meshCluster) known(i int) int {
	n := 0
	c.routers[i].Peers.ForEach(func(p *mesh.Peer) {
		if uid, ok := c.uids[p.Name]; ok && uid == p.UID {
			n++
		}
	})
	return n
}

// memberComplete reports whether router i knows every peer with its
// current UID.
func (c *meshCluster) memberComplete(i int) bool {
	n := len(c.routers)
	// The count first: it is an atomic read, where the peers are read
	// from a snapshot of the router's table, which may wait for its lock.
	return c.routers[i].Peers.Len() >= n && c.known(i) == n
}

// progress returns, for every router, how many peers it knows.
func (c *meshCluster) progress() []int {
	out := make([]int, len(c.routers))
	for i := range c.routers {
		out[i] = c.known(i)
	}
	return out
}

// bytesSent returns the bytes written by all routers so far.
func (c *meshCluster) bytesSent() int64 {
	var n int64
	for _, t := range c.transports {
		n += t.Sent()
	}
	return n
}

// connectionEnds returns the sum over the routers of their connections,
// or -1 when counting takes longer than progressTimeout (the routers'
// locks are that busy).
func (c *meshCluster) connectionEnds() int {
	result := make(chan int, 1)
	go func() {
		n := 0
		for _, r := range c.routers {
			n += len(r.Ourself.Connections())
		}
		result <- n
	}()
	select {
	case n := <-result:
		return n
	case <-time.After(progressTimeout):
		return -1
	}
}

// topologyUpdates returns how many peer entries, received from
// neighbours, all routers have merged so far.
func (c *meshCluster) topologyUpdates() uint64 {
	var n uint64
	for _, r := range c.routers {
		n += r.Metrics().TopologyUpdates
	}
	return n
}

func (c *meshCluster) startTimes() (first, origin time.Time) { return c.firstStart, c.origin }

// stopTimeout bounds how long stopping a cluster may take.
const stopTimeout = 60 * time.Second

// stop stops every router, all at once, and waits (within stopTimeout).
func (c *meshCluster) stop() error {
	if c == nil {
		return nil
	}
	var wg sync.WaitGroup
	for _, r := range c.routers {
		wg.Add(1)
		go func(r *mesh.Router) {
			defer wg.Done()
			_ = r.Stop()
		}(r)
	}
	return waitTimeout(&wg, stopTimeout, "stopping mesh routers")
}

// waitTimeout waits for wg, or returns an error after timeout.
func waitTimeout(wg *sync.WaitGroup, timeout time.Duration, what string) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: still not done after %v", what, timeout)
	}
}

// hostPort joins 127.0.0.1 and a port.
func hostPort(port int) string {
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
}
