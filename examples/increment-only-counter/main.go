// Command increment-only-counter is a distributed counter that can only go
// up, replicated over a gossip mesh.
//
// Each process is one peer of the mesh. It counts its own increments and
// gossips them; the value of the counter is the sum over all peers (a
// G-counter CRDT), so every peer reads the same value once the increments
// have spread. The counter is read and incremented over HTTP:
//
//	GET  /        prints "get => N"
//	POST /        increments and prints "incr => N"
//	GET  /status  the mesh router's status, as JSON
//
// With -demo, it instead runs three peers inside one process, increments
// the counter on each of them, checks that they all agree, and exits.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gossip-mesh/mesh"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// options are the command-line settings.
type options struct {
	meshAddr     string
	httpAddr     string
	hwaddr       string
	nickname     string
	password     string
	channel      string
	peers        stringList
	demo         bool
	demoPassword string
	demoTimeout  time.Duration
}

// parseFlags parses the command line. Usage and errors go to stderr.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("increment-only-counter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.meshAddr, "mesh", net.JoinHostPort("", strconv.Itoa(mesh.Port)), "mesh listen `address` (host:port; port 0 picks a free one)")
	fs.StringVar(&o.httpAddr, "http", ":8080", "HTTP listen `address`")
	fs.StringVar(&o.hwaddr, "hwaddr", defaultPeerName(), "peer name, a MAC `address`; defaults to one of this machine's, or a random one")
	fs.StringVar(&o.nickname, "nickname", defaultNickname(), "peer nickname")
	fs.StringVar(&o.password, "password", "", "password shared by the mesh; empty means no encryption")
	fs.StringVar(&o.channel, "channel", "default", "gossip channel name")
	fs.Var(&o.peers, "peer", "`address` (host[:port]) of a peer to join; may be repeated")
	fs.BoolVar(&o.demo, "demo", false, "run three peers in this process, check that they converge, and exit")
	fs.StringVar(&o.demoPassword, "demo-password", "", "with -demo: encrypt the demo mesh with this password")
	fs.DurationVar(&o.demoTimeout, "demo-timeout", 30*time.Second, "with -demo: how long to wait for the mesh to form and for the counter to converge")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return o, nil
}

// run is the whole program; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.demo {
		return runDemoCommand(ctx, o, stdout, stderr)
	}
	if err := serve(ctx, o, stderr); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// serve runs one peer of the mesh and its HTTP API until ctx is done.
func serve(ctx context.Context, o *options, stderr io.Writer) error {
	host, port, err := parseMeshAddr(o.meshAddr)
	if err != nil {
		return err
	}
	name, err := mesh.PeerNameFromUserInput(o.hwaddr)
	if err != nil {
		return fmt.Errorf("-hwaddr: %w", err)
	}
	var password []byte
	if o.password != "" {
		password = []byte(o.password)
	}
	logger := log.New(stderr, o.nickname+"> ", log.LstdFlags)

	router, err := mesh.NewRouter(mesh.Config{
		Host:           host,
		Port:           port,
		Password:       password,
		ConnLimit:      64,
		PeerDiscovery:  true,
		TrustedSubnets: []*net.IPNet{},
	}, name, o.nickname, mesh.NullOverlay{}, logger)
	if err != nil {
		return fmt.Errorf("creating the mesh router: %w", err)
	}
	// Stop the router on every return, after the HTTP server below.
	defer func() {
		if err := router.Stop(); err != nil {
			logger.Printf("stopping the mesh router: %v", err)
		}
	}()

	p := newPeer(name, logger)
	gossip, err := router.NewGossip(o.channel, p)
	if err != nil {
		return fmt.Errorf("registering gossip channel %q: %w", o.channel, err)
	}
	p.register(gossip)

	if err := router.Start(); err != nil {
		return fmt.Errorf("starting the mesh router: %w", err)
	}
	logger.Printf("mesh router %s (%s) listening on %v, channel %q, encryption %v",
		name, o.nickname, router.ListenAddr(), o.channel, password != nil)
	for _, err := range router.ConnectionMaker.InitiateConnections(o.peers, true) {
		logger.Printf("-peer: %v", err)
	}

	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP: %w", err)
	}
	srv := &http.Server{
		Handler:           newHandler(router, p),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Printf("HTTP API listening on %v", ln.Addr())

	var result error
	select {
	case <-ctx.Done():
		logger.Printf("shutting down")
	case err := <-served:
		result = fmt.Errorf("HTTP: %w", err)
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Printf("HTTP shutdown: %v", err)
	}
	return result // the deferred Stop closes the mesh connections
}

// newHandler returns the HTTP API of a peer.
func newHandler(router *mesh.Router, p *peer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "get => %d\n", p.get())
	})
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "incr => %d\n", p.incr())
	})
	mux.Handle("/status", mesh.StatusHandler(router))
	return mux
}

// parseMeshAddr splits a "host:port" listen address. The host may be
// empty (every interface) and the port may be 0 (any free port).
func parseMeshAddr(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("-mesh %q: %w", addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("-mesh %q: invalid port %q", addr, p)
	}
	return host, port, nil
}

// defaultPeerName returns the MAC address of a network interface of this
// machine, or a random locally administered one when there is none.
func defaultPeerName() string {
	if ifaces, err := net.Interfaces(); err == nil {
		for _, iface := range ifaces {
			if iface.Flags&net.FlagLoopback != 0 || len(iface.HardwareAddr) != mesh.NameSize {
				continue
			}
			if mesh.PeerNameFromBin(iface.HardwareAddr) != mesh.UnknownPeerName {
				return iface.HardwareAddr.String()
			}
		}
	}
	return randomPeerName()
}

// randomPeerName returns a random unicast, locally administered MAC
// address.
func randomPeerName() string {
	b := make(net.HardwareAddr, mesh.NameSize)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on supported systems; fall back to a
		// fixed locally administered address all the same.
		b = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	}
	b[0] = (b[0] | 0x02) &^ 0x01
	return b.String()
}

// defaultNickname returns the host name, or "counter" when it is unknown.
func defaultNickname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "counter"
}
