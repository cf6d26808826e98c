package mesh

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests replay, byte for byte, what real weave mesh v0.4 routers and
// a peer talking to them wrote on the wire, into a running Router, and
// check that it accepts all of it and delivers the messages.

type recordedCall struct {
	kind string
	src  PeerName
	msg  string
}

type recordingGossiper struct {
	mu    sync.Mutex
	calls []recordedCall
}

func (g *recordingGossiper) record(kind string, src PeerName, msg []byte) {
	g.mu.Lock()
	g.calls = append(g.calls, recordedCall{kind, src, string(msg)})
	g.mu.Unlock()
}

func (g *recordingGossiper) OnGossipUnicast(src PeerName, msg []byte) error {
	g.record("unicast", src, msg)
	return nil
}

func (g *recordingGossiper) OnGossipBroadcast(src PeerName, msg []byte) (GossipData, error) {
	g.record("broadcast", src, msg)
	return nil, nil
}

func (g *recordingGossiper) Gossip() GossipData { return nil }

func (g *recordingGossiper) OnGossip(msg []byte) (GossipData, error) {
	g.record("gossip", UnknownPeerName, msg)
	return nil, nil
}

func (g *recordingGossiper) snapshot() []recordedCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]recordedCall(nil), g.calls...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startInteropRouter(t *testing.T, name, nick string) (*Router, *recordingGossiper) {
	t.Helper()
	pn, err := PeerNameFromString(name)
	require.NoError(t, err)
	r, err := NewRouter(Config{Host: "127.0.0.1", ProtocolMinVersion: 1}, pn, nick, nil, nil)
	require.NoError(t, err)
	g := &recordingGossiper{}
	_, err = r.NewGossip("vec", g)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Stop() })
	return r, g
}

// TestInteropReplayPeerStream plays the side that talked to weave: the
// router takes weave's place (same name) and receives the exact bytes.
func TestInteropReplayPeerStream(t *testing.T) {
	v := loadVectors(t)
	for _, sc := range []string{"v2-plain-probe-dials", "v1-plain"} {
		t.Run(sc, func(t *testing.T) {
			s := v.scenario(t, sc)
			r, g := startInteropRouter(t, "02:00:00:00:00:01", "weaveA")
			conn, err := net.Dial("tcp", r.ListenAddr().String())
			require.NoError(t, err)
			defer conn.Close()
			go io.Copy(io.Discard, conn) //nolint:errcheck // drain what the router sends
			_, err = conn.Write(s.stream(t, "probe", 0))
			require.NoError(t, err)

			probe, _ := PeerNameFromString(v.Probe.Name)
			want := []recordedCall{
				{"unicast", probe, "hello-from-probe"},
				{"broadcast", probe, "bcast-from-probe"},
				{"gossip", UnknownPeerName, "gossip-from-probe"},
			}
			waitFor(t, "the three messages", func() bool { return len(g.snapshot()) >= 3 })
			require.Equal(t, want, g.snapshot())

			p := r.Peers.Fetch(probe)
			require.NotNil(t, p)
			uid, _ := strconv.ParseUint(v.Probe.UID, 10, 64)
			require.Equal(t, PeerUID(uid), p.UID)
			require.Equal(t, "probe", p.NickName)
			require.Equal(t, uint64(1), p.Version, "the probe's own topology was merged")
			_, ok := p.connectionTo(r.Ourself.Name)
			require.True(t, ok)
			// Heartbeats, empty frames, unknown tags, unregistered channels
			// and unicasts to unknown peers leave the connection up.
			_, ok = r.Ourself.ConnectionTo(probe)
			require.True(t, ok)
			waitFor(t, "a route to the peer", func() bool {
				_, ok := r.Routes.Unicast(probe)
				return ok
			})
		})
	}
}

// TestInteropReplayWeaveStream plays weave's side: the router takes the
// place of the peer that talked to weave and receives weave's exact bytes,
// dialling or accepting as that peer did.
func TestInteropReplayWeaveStream(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range []struct {
		scenario    string
		routerDials bool
		want        []string
	}{
		{"v2-plain-probe-dials", true, []string{"unicast:hello", "broadcast:bcast", "gossip:gossip", "broadcast:part1", "broadcast:part2"}},
		{"v2-plain-weave-dials", false, []string{"unicast:hello"}},
		{"v1-plain", true, []string{"unicast:hello", "broadcast:bcast", "gossip:gossip"}},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			s := v.scenario(t, tc.scenario)
			r, g := startInteropRouter(t, v.Probe.Name, "probe")
			if tc.scenario == "v1-plain" {
				r.maxVersion = 1 // the peer in this capture offered only version 1
			}
			var conn net.Conn
			if tc.routerDials {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(t, err)
				defer ln.Close()
				require.Empty(t, r.ConnectionMaker.InitiateConnections([]string{ln.Addr().String()}, false))
				conn, err = ln.Accept()
				require.NoError(t, err)
			} else {
				var err error
				conn, err = net.Dial("tcp", r.ListenAddr().String())
				require.NoError(t, err)
			}
			defer conn.Close()
			go io.Copy(io.Discard, conn) //nolint:errcheck // drain what the router sends
			_, err := conn.Write(s.stream(t, "weave", 0))
			require.NoError(t, err)

			weave, _ := PeerNameFromString("02:00:00:00:00:01")
			waitFor(t, "weave's messages", func() bool { return len(g.snapshot()) >= len(tc.want) })
			var got []string
			for _, c := range g.snapshot() {
				if c.kind != "gossip" {
					require.Equal(t, weave, c.src)
				}
				got = append(got, c.kind+":"+c.msg)
			}
			require.Equal(t, tc.want, got)
			p := r.Peers.Fetch(weave)
			require.NotNil(t, p)
			require.Equal(t, "weaveA", p.NickName)
			require.NotZero(t, p.UID)
			require.Greater(t, p.Version, uint64(0), "weave's topology was merged")
			_, ok := r.Ourself.ConnectionTo(weave)
			require.True(t, ok, "connection still up")
		})
	}
}

// TestInteropRouterSpeaksFirst checks the first bytes a router writes when
// a weave peer connects: the header at once, then the flag byte, then the
// features frame, which parses as weave's does.
func TestInteropRouterSpeaksFirst(t *testing.T) {
	v := loadVectors(t)
	s := v.scenario(t, "v2-plain-probe-dials")
	r, _ := startInteropRouter(t, "02:00:00:00:00:01", "weaveA")
	conn, err := net.Dial("tcp", r.ListenAddr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
	header := make([]byte, 7)
	_, err = io.ReadFull(conn, header)
	require.NoError(t, err)
	require.Equal(t, "weave\x01\x02", string(header), "header sent before hearing from the peer")
	// Send the peer's header and flag; the router answers with its flag and
	// its features.
	probe := s.stream(t, "probe", 0)
	_, err = conn.Write(probe[:8])
	require.NoError(t, err)
	flag := make([]byte, 1)
	_, err = io.ReadFull(conn, flag)
	require.NoError(t, err)
	require.Equal(t, byte(0), flag[0])
	var length [4]byte
	_, err = io.ReadFull(conn, length[:])
	require.NoError(t, err)
	body := make([]byte, int(length[0])<<24|int(length[1])<<16|int(length[2])<<8|int(length[3]))
	_, err = io.ReadFull(conn, body)
	require.NoError(t, err)
	features, err := decodeFeatures(body)
	require.NoError(t, err)
	pf, err := parseFeatures(features)
	require.NoError(t, err, fmt.Sprint(features))
	require.Equal(t, r.Ourself.Name, pf.Name)
	require.Equal(t, r.Ourself.UID, pf.UID)
	require.Equal(t, "mac", features["PeerNameFlavour"])
	require.Equal(t, "false", features["Trusted"])
}

// TestHeartbeatsAndIdleTimeout: an idle connection gets heartbeats, and a
// peer that sends nothing after the handshake is dropped after twice the
// heartbeat interval.
func TestHeartbeatsAndIdleTimeout(t *testing.T) {
	v := loadVectors(t)
	s := v.scenario(t, "v2-plain-probe-dials")
	r, conn := dialNewRouter(t, Config{Host: "127.0.0.1", HeartbeatInterval: 100 * time.Millisecond})
	var err error
	var handshake []byte
	for _, vec := range s.Vectors[:6] {
		if vec.Sender == "probe" {
			handshake = append(handshake, vec.bytes(t)...)
		}
	}
	_, err = conn.Write(handshake)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	br := bufio.NewReader(conn)
	_, err = io.ReadFull(br, make([]byte, 8)) // header and flag
	require.NoError(t, err)
	start := time.Now()
	heartbeats := 0
	for {
		var length [4]byte
		if _, err = io.ReadFull(br, length[:]); err != nil {
			break
		}
		n := int(length[0])<<24 | int(length[1])<<16 | int(length[2])<<8 | int(length[3])
		body := make([]byte, n)
		if _, err = io.ReadFull(br, body); err != nil {
			break
		}
		if n == 1 && body[0] == tagHeartbeat {
			heartbeats++
		}
	}
	require.Error(t, err, "the router closed the silent connection")
	require.GreaterOrEqual(t, heartbeats, 1)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "not before the read timeout")
	waitFor(t, "connection removed", func() bool {
		_, ok := r.Ourself.ConnectionTo(PeerName(0x020000000099))
		return !ok
	})
}

// TestHandshakeDeadlineHoldsAgainstTrickle: a peer that sends its handshake
// one byte at a time, too slowly, is cut off at the handshake deadline.
func TestHandshakeDeadlineHoldsAgainstTrickle(t *testing.T) {
	_, conn := dialNewRouter(t, Config{Host: "127.0.0.1", HandshakeTimeout: 300 * time.Millisecond})
	go io.Copy(io.Discard, conn) //nolint:errcheck // drain the router's header
	start := time.Now()
	var werr error
	for _, b := range []byte("weave\x01") { // never complete
		if _, werr = conn.Write([]byte{b}); werr != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "the connection to be dropped", func() bool {
		if werr != nil {
			return true
		}
		_, werr = conn.Write([]byte{0})
		return werr != nil
	})
	require.Less(t, time.Since(start), 5*time.Second)
}

// dialNewRouter starts a router named 02:00:00:00:00:01 with config and
// returns it with a raw TCP connection to it; both are closed at cleanup.
func dialNewRouter(t *testing.T, config Config) (*Router, net.Conn) {
	t.Helper()
	pn, _ := PeerNameFromString("02:00:00:00:00:01")
	r, err := NewRouter(config, pn, "weaveA", nil, nil)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Stop() })
	conn, err := net.Dial("tcp", r.ListenAddr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return r, conn
}
