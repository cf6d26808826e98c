package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gossip-mesh/mesh"
)

// demoPeers is the number of peers the demo runs.
const demoPeers = 3

// demoPollInterval is how often the demo checks for progress.
const demoPollInterval = 5 * time.Millisecond

// demoConfig sets up a demo run.
type demoConfig struct {
	// Password encrypts the demo mesh when non-nil.
	Password []byte
	// Timeout bounds the whole run: forming the mesh and converging.
	Timeout time.Duration
	// Logger receives the routers' and peers' log lines; nil discards them.
	Logger mesh.Logger
}

// demoNode is one of the demo's peers.
type demoNode struct {
	nick   string
	name   mesh.PeerName
	router *mesh.Router
	peer   *peer
}

// demoView is what one peer of the demo reads at the end.
type demoView struct {
	Nick   string
	Name   mesh.PeerName
	Addr   string
	Value  int
	Counts map[mesh.PeerName]int
}

// demoResult summarises a successful demo run.
type demoResult struct {
	Views     []demoView
	Value     int           // the value every peer converged on
	Formed    time.Duration // from the start until every peer knew every other
	Converged time.Duration // from the first increment until every peer agreed
	Total     time.Duration
}

// runDemo starts three routers on 127.0.0.1 in this process, has the
// second and third join the first, waits until every router knows all
// three peers, increments the counter on each peer (once on the first,
// twice on the second, three times on the third) and waits until every
// peer reads the total. It reports its progress on out. The routers are
// stopped before it returns.
func runDemo(ctx context.Context, cfg demoConfig, out io.Writer) (res *demoResult, err error) {
	start := time.Now()
	if cfg.Timeout <= 0 {
		return nil, errors.New("demo timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	nodes := make([]*demoNode, 0, demoPeers)
	defer func() {
		for _, n := range nodes {
			if stopErr := n.router.Stop(); stopErr != nil && err == nil {
				err = fmt.Errorf("stopping %s: %w", n.nick, stopErr)
			}
		}
	}()

	mode := "plaintext"
	if cfg.Password != nil {
		mode = "encrypted with a password"
	}
	fmt.Fprintf(out, "Starting %d peers on 127.0.0.1 (%s):\n", demoPeers, mode)
	for i := 0; i < demoPeers; i++ {
		n, err := startDemoNode(i, cfg)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
		joining := ""
		if i > 0 {
			target := nodes[0].router.ListenAddr().String()
			if errs := n.router.ConnectionMaker.InitiateConnections([]string{target}, false); len(errs) > 0 {
				return nil, fmt.Errorf("%s joining %s: %w", n.nick, target, errors.Join(errs...))
			}
			joining = ", joining " + nodes[0].nick
		}
		fmt.Fprintf(out, "  %s  %s  listening on %v%s\n", n.nick, n.name, n.router.ListenAddr(), joining)
	}

	// The mesh is formed when every router knows every peer (not just as a
	// name another peer mentions, but from that peer's own announcement)
	// and has a route to each of the others.
	if !poll(ctx, func() bool { return meshFormed(nodes) }) {
		return nil, demoFailure(ctx, "the mesh did not form", describeTopology(nodes))
	}
	formed := time.Since(start)
	fmt.Fprintf(out, "Mesh formed after %v: every peer knows all %d peers.\n", round(formed), demoPeers)

	want := 0
	var incs []string
	for i := range nodes {
		want += i + 1
		incs = append(incs, fmt.Sprintf("%s +%d", nodes[i].nick, i+1))
	}
	fmt.Fprintf(out, "Incrementing: %s (expected total %d).\n", strings.Join(incs, ", "), want)
	incrStart := time.Now()
	for i, n := range nodes {
		for j := 0; j <= i; j++ {
			n.peer.incr()
		}
	}

	agreed := func() bool {
		for _, n := range nodes {
			if n.peer.get() != want {
				return false
			}
		}
		return true
	}
	if !poll(ctx, agreed) {
		return nil, demoFailure(ctx, fmt.Sprintf("the peers did not all reach %d", want), describeViews(nodes))
	}
	converged := time.Since(incrStart)

	res = &demoResult{Value: want, Formed: formed, Converged: converged}
	for _, n := range nodes {
		res.Views = append(res.Views, demoView{
			Nick:   n.nick,
			Name:   n.name,
			Addr:   n.router.ListenAddr().String(),
			Value:  n.peer.get(),
			Counts: n.peer.st.snapshot(),
		})
	}
	fmt.Fprintf(out, "Converged after %v: every peer reads %d.\n", round(converged), want)
	fmt.Fprint(out, describeViews(nodes))
	res.Total = time.Since(start)
	fmt.Fprintf(out, "Done in %v.\n", round(res.Total))
	return res, nil
}

// startDemoNode creates and starts demo peer number i.
func startDemoNode(i int, cfg demoConfig) (*demoNode, error) {
	n := &demoNode{
		nick: fmt.Sprintf("peer-%d", i+1),
		name: mesh.PeerName(0x02_00_00_00_00_01 + uint64(i)),
	}
	router, err := mesh.NewRouter(mesh.Config{
		Host:     "127.0.0.1",
		Port:     0,
		Password: cfg.Password,
	}, n.name, n.nick, nil, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", n.nick, err)
	}
	n.router = router
	n.peer = newPeer(n.name, cfg.Logger)
	gossip, err := router.NewGossip("default", n.peer)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("registering the counter on %s: %w", n.nick, err), router.Stop())
	}
	n.peer.register(gossip)
	if err := router.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("starting %s: %w", n.nick, err), router.Stop())
	}
	return n, nil
}

// meshFormed reports whether every router knows every demo peer and has a
// route to each of the others.
func meshFormed(nodes []*demoNode) bool {
	for _, n := range nodes {
		known := make(map[mesh.PeerName]bool)
		for _, d := range n.router.Peers.Descriptions() {
			if d.UID != 0 { // zero is a peer known only by name so far
				known[d.Name] = true
			}
		}
		for _, other := range nodes {
			if !known[other.name] {
				return false
			}
			if other == n {
				continue
			}
			if _, ok := n.router.Routes.Unicast(other.name); !ok {
				return false
			}
		}
	}
	return true
}

// poll calls cond until it returns true or ctx is done, and reports whether
// cond held.
func poll(ctx context.Context, cond func() bool) bool {
	if cond() {
		return true
	}
	ticker := time.NewTicker(demoPollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return cond()
		case <-ticker.C:
			if cond() {
				return true
			}
		}
	}
}

// demoFailure builds the error returned when a phase of the demo did not
// complete, with the state of the peers at that moment.
func demoFailure(ctx context.Context, what, detail string) error {
	why := "before the deadline"
	if errors.Is(ctx.Err(), context.Canceled) {
		why = "before being interrupted"
	}
	return fmt.Errorf("%s %s; at that point:\n%s", what, why, strings.TrimRight(detail, "\n"))
}

// describeTopology lists, for every router, the peers it knows and the
// state of its connections.
func describeTopology(nodes []*demoNode) string {
	var b strings.Builder
	for _, n := range nodes {
		var known []string
		for _, d := range n.router.Peers.Descriptions() {
			known = append(known, fmt.Sprintf("%s(%s, %d connections)", d.Name, d.NickName, d.NumConnections))
		}
		fmt.Fprintf(&b, "  %s knows %d peers: %s\n", n.nick, len(known), strings.Join(known, ", "))
		for _, c := range mesh.NewStatus(n.router).Connections {
			dir := "inbound"
			if c.Outbound {
				dir = "outbound"
			}
			fmt.Fprintf(&b, "    %s connection %s: %s %s\n", dir, c.Address, c.State, c.Info)
		}
	}
	return b.String()
}

// describeViews lists the value every peer reads and the counts behind it.
func describeViews(nodes []*demoNode) string {
	nick := make(map[mesh.PeerName]string, len(nodes))
	for _, n := range nodes {
		nick[n.name] = n.nick
	}
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "  %s reads %d = %s\n", n.nick, n.peer.get(), formatCounts(n.peer.st.snapshot(), nick))
	}
	return b.String()
}

// round shortens a duration for display.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d
}

// runDemoCommand runs the demo for the -demo flag and returns the exit
// status. The mesh's log lines are kept in memory and shown only when the
// demo fails.
func runDemoCommand(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	logs := &memoryLogger{max: 500}
	cfg := demoConfig{Timeout: o.demoTimeout, Logger: logs}
	if o.demoPassword != "" {
		cfg.Password = []byte(o.demoPassword)
	}
	if _, err := runDemo(ctx, cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "demo failed: %v\n", err)
		if lines := logs.lines(); len(lines) > 0 {
			fmt.Fprintf(stderr, "mesh log (last %d lines):\n", len(lines))
			for _, l := range lines {
				fmt.Fprintf(stderr, "  %s\n", l)
			}
		}
		return 1
	}
	return 0
}

// memoryLogger is a mesh.Logger that keeps the last max lines in memory.
type memoryLogger struct {
	max int

	mu   sync.Mutex
	buf  []string
	next int // where the next line goes once buf is full
}

var _ mesh.Logger = (*memoryLogger)(nil)

// Printf implements mesh.Logger.
func (l *memoryLogger) Printf(format string, args ...interface{}) {
	if l.max <= 0 {
		return
	}
	line := time.Now().Format("15:04:05.000") + " " + strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) < l.max {
		l.buf = append(l.buf, line)
		return
	}
	l.buf[l.next] = line
	l.next = (l.next + 1) % len(l.buf)
}

// lines returns the kept lines, oldest first.
func (l *memoryLogger) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.buf))
	out = append(out, l.buf[l.next:]...)
	return append(out, l.buf[:l.next]...)
}
