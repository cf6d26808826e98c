package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// mlOptions configures a cluster of memberlist nodes.
type mlOptions struct {
	N         int
	Bootstrap Bootstrap
	// SecretKey enables encryption when non-nil (16, 24 or 32 bytes).
	SecretKey []byte
	// Seed seeds the Sparse bootstrap.
	Seed uint64
	// Delegate, when not nil, returns the delegate of node i; it may use
	// the node it is given once Create returns (see mlDelegate).
	Delegate func(i int) *mlDelegate
}

// mlCluster is N memberlist nodes on 127.0.0.1, each with
// memberlist.DefaultLANConfig() bound to its own port and a counting
// transport.
type mlCluster struct {
	nodes      []*memberlist.Memberlist
	transports []*mlTransport
	delegates  []*mlDelegate
	addrs      []string

	firstStart, origin time.Time
}

// joinTimeout bounds one memberlist Join; Join itself has no deadline
// beyond the TCP timeout of the push/pull.
const joinTimeout = 30 * time.Second

// startML creates the nodes and bootstraps them. On error every node
// already created is shut down.
func startML(o mlOptions) (c *mlCluster, err error) {
	if o.N < 1 {
		return nil, fmt.Errorf("memberlist cluster needs at least one node, not %d", o.N)
	}
	c = &mlCluster{}
	defer func() {
		if err != nil {
			_ = c.stop()
			c = nil
		}
	}()
	rnd := rand.New(rand.NewPCG(o.Seed, 0x6d6c))
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
			if err := c.join(i, peers); err != nil {
				return c, err
			}
		}
	}
	if o.Bootstrap == Ring {
		if o.N == 1 {
			c.origin = time.Now()
		}
		for i := 0; i < o.N && o.N > 1; i++ {
			if i == o.N-1 {
				c.origin = time.Now()
			}
			if err := c.join(i, []string{c.addrs[(i+1)%o.N]}); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

// join makes node i join the given addresses, within joinTimeout.
func (c *mlCluster) join(i int, peers []string) error {
	m := c.nodes[i]
	errc := make(chan error, 1)
	go func() {
		_, err := m.Join(peers)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("node %d joining %v: %w", i, peers, err)
		}
		return nil
	case <-time.After(joinTimeout):
		return fmt.Errorf("node %d joining %v: no answer after %v", i, peers, joinTimeout)
	}
}

// add creates node i.
func (c *mlCluster) add(i int, o mlOptions) error {
	tr, err := newMLTransport()
	if err != nil {
		return fmt.Errorf("node %d: %w", i, err)
	}
	port := tr.Port()
	conf := memberlist.DefaultLANConfig()
	conf.Name = fmt.Sprintf("n%d", i)
	conf.BindAddr = "127.0.0.1"
	conf.BindPort = port
	conf.AdvertiseAddr = "127.0.0.1"
	conf.AdvertisePort = port
	conf.Transport = tr
	conf.Logger = discardLogger
	conf.SecretKey = o.SecretKey
	var d *mlDelegate
	if o.Delegate != nil {
		d = o.Delegate(i)
		d.retransmitMult = conf.RetransmitMult
		conf.Delegate = d
	}
	m, err := memberlist.Create(conf)
	if err != nil {
		_ = tr.Shutdown()
		return fmt.Errorf("node %d: %w", i, err)
	}
	if d != nil {
		d.node.Store(m)
	}
	c.nodes = append(c.nodes, m)
	c.transports = append(c.transports, tr)
	c.delegates = append(c.delegates, d)
	c.addrs = append(c.addrs, hostPort(port))
	return nil
}

func (c *mlCluster) size() int { return len(c.nodes) }

// memberComplete reports whether node i counts all N members.
func (c *mlCluster) memberComplete(i int) bool {
	return c.nodes[i].NumMembers() >= len(c.nodes)
}

// progress returns, for every node, how many members it counts.
func (c *mlCluster) progress() []int {
	out := make([]int, len(c.nodes))
	for i, m := range c.nodes {
		out[i] = m.NumMembers()
	}
	return out
}

func (c *mlCluster) bytesSent() int64 {
	var n int64
	for _, t := range c.transports {
		n += t.Sent()
	}
	return n
}

func (c *mlCluster) startTimes() (first, origin time.Time) { return c.firstStart, c.origin }

// stop shuts every node down, all at once, within stopTimeout. Nodes do
// not leave first: the cluster is dropped as a whole.
func (c *mlCluster) stop() error {
	if c == nil {
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, m := range c.nodes {
		wg.Add(1)
		go func(m *memberlist.Memberlist) {
			defer wg.Done()
			if err := m.Shutdown(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}(m)
	}
	if err := waitTimeout(&wg, stopTimeout, "shutting down memberlist nodes"); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// mlDelegate is the memberlist.Delegate of the broadcast and unicast
// scenarios.
type mlDelegate struct {
	node           atomic.Pointer[memberlist.Memberlist]
	retransmitMult int

	// bcast, when not nil, records broadcasts (the first 8 bytes of a
	// message are its id) and re-queues each the first time it is seen.
	bcast *recorder
	queue *memberlist.TransmitLimitedQueue
	qOnce sync.Once

	// Unicast counters.
	msgs  atomic.Int64
	bytes atomic.Int64
}

var _ memberlist.Delegate = (*mlDelegate)(nil)

// transmitQueue returns the node's broadcast queue, created on first use.
func (d *mlDelegate) transmitQueue() *memberlist.TransmitLimitedQueue {
	d.qOnce.Do(func() {
		d.queue = &memberlist.TransmitLimitedQueue{
			NumNodes: func() int {
				if m := d.node.Load(); m != nil {
					return m.NumMembers()
				}
				return 1
			},
			RetransmitMult: d.retransmitMult,
		}
	})
	return d.queue
}

// NodeMeta implements memberlist.Delegate.
func (d *mlDelegate) NodeMeta(int) []byte { return nil }

// NotifyMsg implements memberlist.Delegate.
func (d *mlDelegate) NotifyMsg(b []byte) {
	if d.bcast == nil {
		d.msgs.Add(1)
		d.bytes.Add(int64(len(b)))
		return
	}
	if len(b) < 8 {
		return
	}
	if d.bcast.record(b) {
		d.transmitQueue().QueueBroadcast(&mlBroadcast{msg: append([]byte(nil), b...)})
	}
}

// GetBroadcasts implements memberlist.Delegate.
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	if d.bcast == nil {
		return nil
	}
	return d.transmitQueue().GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate.
func (d *mlDelegate) LocalState(bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (d *mlDelegate) MergeRemoteState([]byte, bool) {}

// mlBroadcast is one message in a TransmitLimitedQueue.
type mlBroadcast struct{ msg []byte }

var _ memberlist.Broadcast = (*mlBroadcast)(nil)

func (b *mlBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *mlBroadcast) Message() []byte                       { return b.msg }
func (b *mlBroadcast) Finished()                             {}
