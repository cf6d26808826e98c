//go:build linux

package mesh_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
	"github.com/stretchr/testify/require"
)

// setnsTrap is the number of the setns system call, which package syscall
// does not name on every architecture.
var setnsTrap = map[string]uintptr{
	"386": 346, "amd64": 308, "arm": 375, "arm64": 268, "loong64": 268,
	"ppc64le": 350, "riscv64": 268, "s390x": 339,
}[runtime.GOARCH]

// netnsTransport is TCP inside a network namespace: its sockets are
// created on an OS thread that entered the namespace, and keep to it
// whichever thread uses them later.
type netnsTransport struct {
	ns  string // name under /var/run/netns
	tcp mesh.TCPTransport
}

var _ mesh.Transport = (*netnsTransport)(nil)

// inNamespace runs f on a new OS thread that entered the namespace; the
// thread ends with the goroutine, so no other goroutine runs in it.
func (t *netnsTransport) inNamespace(f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		fd, err := syscall.Open("/var/run/netns/"+t.ns, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer syscall.Close(fd)
		if _, _, e := syscall.RawSyscall(setnsTrap, uintptr(fd), syscall.CLONE_NEWNET, 0); e != 0 {
			errc <- fmt.Errorf("setns %s: %w", t.ns, e)
			return
		}
		f()
		errc <- nil
	}()
	return <-errc
}

func (t *netnsTransport) Listen(address string) (ln net.Listener, err error) {
	if nsErr := t.inNamespace(func() { ln, err = t.tcp.Listen(address) }); nsErr != nil {
		return nil, nsErr
	}
	return ln, err
}

func (t *netnsTransport) DialContext(ctx context.Context, address string) (c net.Conn, err error) {
	if nsErr := t.inNamespace(func() { c, err = t.tcp.DialContext(ctx, address) }); nsErr != nil {
		return nil, nsErr
	}
	return c, err
}

// netnsLab creates network namespaces and veth links between them, and
// removes them at the end of the test.
type netnsLab struct {
	t      *testing.T
	prefix string
}

func (l *netnsLab) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	require.NoError(l.t, err, "ip %s: %s", strings.Join(args, " "), out)
}

func (l *netnsLab) ns(name string) string { return l.prefix + name }

// link joins namespaces a and b with a veth pair, a at aAddr and b at
// bAddr (CIDR notation), and returns the name of a's end.
func (l *netnsLab) link(a, b, aAddr, bAddr string) string {
	ea, eb := "v"+a+b, "v"+b+a
	l.ip("link", "add", ea, "netns", l.ns(a), "type", "veth", "peer", "name", eb, "netns", l.ns(b))
	l.ip("-n", l.ns(a), "addr", "add", aAddr, "dev", ea)
	l.ip("-n", l.ns(b), "addr", "add", bAddr, "dev", eb)
	l.ip("-n", l.ns(a), "link", "set", ea, "up")
	l.ip("-n", l.ns(b), "link", "set", eb, "up")
	return ea
}

// newNetnsLab skips the test unless network namespaces can be made here:
// root, iproute2, and a kernel that allows them.
func newNetnsLab(t *testing.T) *netnsLab {
	if testing.Short() {
		t.Skip("network namespace test skipped with -short")
	}
	if setnsTrap == 0 {
		t.Skipf("network namespace test: setns unknown on %s", runtime.GOARCH)
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespace test needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace test needs the ip command (iproute2)")
	}
	l := &netnsLab{t: t, prefix: fmt.Sprintf("meshtest%d", os.Getpid())}
	probe := l.ns("probe")
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("network namespaces unavailable: ip netns add: %v: %s", err, out)
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
	return l
}

func (l *netnsLab) addNamespaces(names ...string) {
	for _, n := range names {
		l.ip("netns", "add", l.ns(n))
		ns := l.ns(n)
		l.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		l.ip("-n", ns, "link", "set", "lo", "up")
	}
}

// Three peers in three network namespaces joined pairwise by veth links.
// When the link between A and C goes down, their connection times out and
// they go on through B; when it comes back, A connects to C again.
func TestNetnsLinkDown(t *testing.T) {
	lab := newNetnsLab(t)
	checkNoGoroutineLeak(t)
	lab.addNamespaces("a", "b", "c")
	lab.link("a", "b", "10.231.1.1/30", "10.231.1.2/30")
	lab.link("b", "c", "10.231.2.1/30", "10.231.2.2/30")
	ac := lab.link("a", "c", "10.231.3.1/30", "10.231.3.2/30")

	nodes := make([]*node, 3)
	for i, ns := range []string{"a", "b", "c"} {
		config := mesh.Config{
			Host:              "0.0.0.0",
			Port:              mesh.Port,
			HeartbeatInterval: 200 * time.Millisecond,
			HandshakeTimeout:  time.Second,
			Transport:         &netnsTransport{ns: lab.ns(ns), tcp: mesh.TCPTransport{DialTimeout: time.Second}},
		}
		r, err := mesh.NewRouter(config, name(i), "peer-"+ns, nil, testLogger{t})
		require.NoError(t, err)
		rec := newRecorder()
		g, err := r.NewGossip("test", rec)
		require.NoError(t, err)
		require.NoError(t, r.Start())
		t.Cleanup(func() { r.Stop() })
		nodes[i] = &node{t: t, index: i, router: r, gossip: g, rec: rec}
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	require.Empty(t, a.router.ConnectionMaker.InitiateConnections([]string{"10.231.1.2:6783", "10.231.3.2:6783"}, false))
	require.Empty(t, b.router.ConnectionMaker.InitiateConnections([]string{"10.231.2.2:6783"}, false))
	eventually(t, "the triangle settles", func() (bool, string) {
		for _, n := range nodes {
			if got := len(n.router.Ourself.Connections()); got != 2 {
				return false, fmt.Sprintf("peer %d has %d connections", n.index, got)
			}
		}
		if ok, msg := routeVia(a, c, c); !ok {
			return false, msg
		}
		return settled(nodes)
	})

	lab.ip("-n", lab.ns("a"), "link", "set", ac, "down")
	took := eventually(t, "A and C go through B", func() (bool, string) {
		if connectedTo(a, c) || connectedTo(c, a) {
			return false, "A and C still connected"
		}
		if ok, msg := routeVia(a, c, b); !ok {
			return false, msg
		}
		return routeVia(c, a, b)
	})
	t.Logf("A and C went through B %v after their link went down", took)
	exchange(t, nodes, a, c, "via-b")

	lab.ip("-n", lab.ns("a"), "link", "set", ac, "up")
	took = eventually(t, "A and C connected again", func() (bool, string) {
		if ok, msg := routeVia(a, c, c); !ok {
			return false, msg
		}
		return routeVia(c, a, a)
	})
	t.Logf("A and C connected again %v after their link came back", took)
	exchange(t, nodes, a, c, "direct")
}
