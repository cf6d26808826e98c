package mesh

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// mitmProxy sits between a dialling router and the router it dials. What
// the acceptor sends goes through unchanged; what the dialler sends after
// its header, encryption flag and public key is cut into frames, and each
// frame is passed to a hook that returns what to forward instead.
type mitmProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	hook  func(conn, frame int, body []byte) [][]byte // nil forwards as is
	conns int
	wg    sync.WaitGroup
}

func startMITM(t *testing.T, target string) *mitmProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &mitmProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *mitmProxy) addr() string { return p.ln.Addr().String() }

func (p *mitmProxy) setHook(h func(conn, frame int, body []byte) [][]byte) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

func (p *mitmProxy) acceptLoop() {
	defer p.wg.Done()
	var open []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		mu.Lock()
		open = append(open, in, out)
		mu.Unlock()
		p.mu.Lock()
		p.conns++
		n := p.conns
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(in, out)
			in.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forward(n, in, out)
			out.Close()
		}()
	}
}

// forward copies the dialler's side, frame by frame, through the hook.
func (p *mitmProxy) forward(conn int, in io.Reader, out io.Writer) {
	// Header, encryption flag and public key.
	intro := make([]byte, headerLen+1+32)
	if _, err := io.ReadFull(in, intro); err != nil {
		return
	}
	if _, err := out.Write(intro); err != nil {
		return
	}
	for frame := 0; ; frame++ {
		var hdr [4]byte
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(in, body); err != nil {
			return
		}
		p.mu.Lock()
		hook := p.hook
		p.mu.Unlock()
		frames := [][]byte{body}
		if hook != nil {
			frames = hook(conn, frame, body)
		}
		for _, b := range frames {
			if _, err := out.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b)))); err != nil {
				return
			}
			if _, err := out.Write(b); err != nil {
				return
			}
		}
	}
}

// settleGossiper waits until everything delivered to r's channel "vec" so
// far has reached its Gossiper, by sending r a marker through the same
// inbox.
func settleGossiper(t *testing.T, r *secRouter, n int) {
	t.Helper()
	marker := fmt.Sprintf("marker %d", n)
	require.NoError(t, r.sendUnicast("vec", r.Ourself.Name, []byte(marker)))
	waitFor(t, "the marker", func() bool { return r.received(marker) == 1 })
}

// TestMITMTamperingEndsConnection puts a man in the middle that replays,
// reorders or carries over sealed frames of an established encrypted
// connection: the receiving router ends the connection at the first such
// frame, its Gossiper never sees a message twice or out of place, and the
// routers reconnect once the proxy lets frames through again.
func TestMITMTamperingEndsConnection(t *testing.T) {
	checkGoroutines(t)
	pw := []byte("a password long enough to be fine")
	payload := func(tag string, n int) []byte {
		return append([]byte(tag), bytes.Repeat([]byte{'.'}, n-len(tag))...)
	}
	// sealedLen is the length on the wire of a unicast on "vec".
	sealedLen := func(src, dst PeerName, msg []byte) int {
		return len(gossipBody(tagGossipUnicast, "vec", src, dst, msg)) + 16
	}

	tests := []struct {
		name string
		// hook builds the proxy's hook; lens are the sealed lengths of
		// the two messages sent.
		hook func(l1, l2 int) func(conn, frame int, body []byte) [][]byte
		// what the acceptor's Gossiper gets of the two messages
		want1, want2 int
	}{
		{"replayed", func(l1, _ int) func(int, int, []byte) [][]byte {
			done := false
			return func(_, _ int, b []byte) [][]byte {
				if !done && len(b) == l1 {
					done = true
					return [][]byte{b, b}
				}
				return [][]byte{b}
			}
		}, 1, 0},
		{"reordered", func(l1, _ int) func(int, int, []byte) [][]byte {
			var held []byte
			done := false
			return func(_, _ int, b []byte) [][]byte {
				switch {
				case held != nil:
					h := held
					held = nil
					return [][]byte{b, h}
				case !done && len(b) == l1:
					done = true
					held = b
					return nil
				}
				return [][]byte{b}
			}
		}, 0, 0},
		{"dropped", func(l1, _ int) func(int, int, []byte) [][]byte {
			done := false
			return func(_, _ int, b []byte) [][]byte {
				if !done && len(b) == l1 {
					done = true
					return nil
				}
				return [][]byte{b}
			}
		}, 0, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acceptor := startSecRouter(t, Config{Password: pw}, 2*i+1)
			proxy := startMITM(t, acceptor.addr())
			dialler := startSecRouter(t, Config{Password: pw}, 2*i+2)
			dialler.ConnectionMaker.InitiateConnections([]string{proxy.addr()}, false)
			waitFor(t, "a unicast route through the proxy", func() bool {
				_, ok := dialler.Routes.Unicast(acceptor.Ourself.Name)
				return ok
			})
			before := acceptor.terminations.Load()

			m1, m2 := payload("first", 777), payload("second", 801)
			src, dst := dialler.Ourself.Name, acceptor.Ourself.Name
			proxy.setHook(tt.hook(sealedLen(src, dst, m1), sealedLen(src, dst, m2)))
			require.NoError(t, dialler.sendUnicast("vec", dst, m1))
			// The acceptor may already have ended the connection at the
			// first message, and the dialler lost its route.
			if err := dialler.sendUnicast("vec", dst, m2); err != nil {
				require.ErrorIs(t, err, ErrNoRoute)
				require.Zero(t, tt.want2)
			}

			waitFor(t, "the acceptor to end the connection", func() bool { return acceptor.terminations.Load() > before })
			waitFor(t, "the log line", func() bool {
				return len(acceptor.log.matching("connection shutting down", "failed authentication")) == 1
			})
			require.Empty(t, acceptor.log.matching("different passwords"), "a frame after the first is not a password mismatch")
			settleGossiper(t, acceptor, 1)
			require.Equal(t, tt.want1, acceptor.received(string(m1)))
			require.Equal(t, tt.want2, acceptor.received(string(m2)))

			// Let frames through again: the dialler reconnects and a
			// message goes through once.
			proxy.setHook(nil)
			m3 := payload("third", 500)
			waitFor(t, "a message after reconnecting", func() bool {
				if acceptor.received(string(m3)) > 0 {
					return true
				}
				if _, ok := dialler.Routes.Unicast(dst); ok && acceptor.connectionTo(src) != nil {
					_ = dialler.sendUnicast("vec", dst, m3)
				}
				return false
			})
			settleGossiper(t, acceptor, 2)
			require.Equal(t, tt.want1, acceptor.received(string(m1)), "nothing replayed later")
			require.Equal(t, tt.want2, acceptor.received(string(m2)))
		})
	}

	// A frame recorded on one connection and replayed on the next does not
	// open there: every connection has keys of its own.
	t.Run("replayed on the next connection", func(t *testing.T) {
		acceptor := startSecRouter(t, Config{Password: pw}, 21)
		proxy := startMITM(t, acceptor.addr())
		dialler := startSecRouter(t, Config{Password: pw}, 22)
		m1 := payload("recorded", 777)
		src, dst := dialler.Ourself.Name, acceptor.Ourself.Name
		l1 := sealedLen(src, dst, m1)
		var mu sync.Mutex
		var recorded []byte
		injected := false
		proxy.setHook(func(conn, frame int, b []byte) [][]byte {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case conn == 1 && len(b) == l1 && recorded == nil:
				recorded = bytes.Clone(b)
			case conn > 1 && frame > 0 && recorded != nil && !injected:
				// After the features: the recorded frame in place of
				// the next one.
				injected = true
				return [][]byte{recorded}
			}
			return [][]byte{b}
		})
		dialler.ConnectionMaker.InitiateConnections([]string{proxy.addr()}, false)
		waitFor(t, "a unicast route through the proxy", func() bool {
			_, ok := dialler.Routes.Unicast(dst)
			return ok
		})
		require.NoError(t, dialler.sendUnicast("vec", dst, m1))
		waitFor(t, "the recorded message", func() bool { return acceptor.received(string(m1)) == 1 })
		// End the first connection; the dialler comes back through the
		// proxy, which replays the recorded frame.
		before := acceptor.terminations.Load()
		acceptor.connectionTo(src).shutdown(fmt.Errorf("test ends the first connection"))
		waitFor(t, "the replay to be refused", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return injected && len(acceptor.log.matching("failed authentication")) == 1
		})
		require.Greater(t, acceptor.terminations.Load(), before)
		settleGossiper(t, acceptor, 1)
		require.Equal(t, 1, acceptor.received(string(m1)))
	})
}
