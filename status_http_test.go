package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// statusDeadline bounds the waits of these tests: generous, as the
// machines running them are shared and noisy.
const statusDeadline = 60 * time.Second

func statusEventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Since(start) > statusDeadline {
			t.Fatalf("%s: not within %v: %s", what, statusDeadline, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// statusNoGoroutineLeak records how many goroutines run now and, at
// cleanup (after the routers' cleanups, registered later), waits until no
// more run.
func statusNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		start := time.Now()
		for runtime.NumGoroutine() > before {
			if time.Since(start) > 10*time.Second {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines before, %d after stopping every router:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// stallingTransport is TCP, except that dials to stall wait until the
// router stops.
type stallingTransport struct {
	TCPTransport
	stall string
}

func (s *stallingTransport) DialContext(ctx context.Context, address string) (net.Conn, error) {
	if address == s.stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.TCPTransport.DialContext(ctx, address)
}

func startStatusRouter(t *testing.T, i int, transport Transport) *Router {
	t.Helper()
	// The handshake timeout is long enough for a silent connection to
	// stay pending for the whole test.
	config := Config{Host: "127.0.0.1", Password: []byte("secret"), Transport: transport, HandshakeTimeout: 2 * statusDeadline}
	r, err := NewRouter(config, testPeerName(i), fmt.Sprint("peer", i), nil, nil)
	require.NoError(t, err)
	require.NoError(t, r.Start())
	t.Cleanup(func() { r.Stop() })
	return r
}

// statusOf returns the router's status as a program reading the JSON
// would see it.
func statusOf(t *testing.T, r *Router) *Status {
	t.Helper()
	body, err := json.Marshal(NewStatus(r))
	require.NoError(t, err)
	var s Status
	require.NoError(t, json.Unmarshal(body, &s))
	return &s
}

func connectionsByState(s *Status, state string) []LocalConnectionStatus {
	var out []LocalConnectionStatus
	for _, c := range s.Connections {
		if c.State == state {
			out = append(out, c)
		}
	}
	return out
}

// A line of three encrypted peers, 1 – 2 – 3, plus connections of every
// other kind on peer 1: a dial that hangs, an address that refuses, one
// that leads back to peer 1 itself, and a silent inbound connection stuck
// in its handshake.
func TestStatusThreePeers(t *testing.T) {
	statusNoGoroutineLeak(t)
	// An address nothing listens on: dials are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := ln.Addr().String()
	ln.Close()
	const hanging = "127.0.0.1:1"

	p1 := startStatusRouter(t, 1, &stallingTransport{stall: hanging})
	p2 := startStatusRouter(t, 2, nil)
	p3 := startStatusRouter(t, 3, nil)
	p1.ConnectionMaker.InitiateConnections([]string{p2.ListenAddr().String()}, false)
	p3.ConnectionMaker.InitiateConnections([]string{p2.ListenAddr().String()}, false)
	statusEventually(t, "routes along the line", func() (bool, string) {
		s1, s3 := NewStatus(p1), NewStatus(p3)
		return len(s1.UnicastRoutes) == 2 && len(s3.UnicastRoutes) == 2, fmt.Sprint(s1.UnicastRoutes, s3.UnicastRoutes)
	})
	p1.ConnectionMaker.InitiateConnections([]string{hanging, refused, p1.ListenAddr().String()}, false)
	silent, err := net.Dial("tcp", p1.ListenAddr().String())
	require.NoError(t, err)
	defer silent.Close()

	name := func(r *Router) string { return r.Ourself.Name.String() }
	// The address that refuses alternates between being dialled and
	// waiting: the checks below all use one snapshot in which it waits.
	var s *Status
	statusEventually(t, "every kind of connection on peer 1", func() (bool, string) {
		s = statusOf(t, p1)
		var states []string
		for _, c := range s.Connections {
			states = append(states, c.State)
		}
		slices.Sort(states)
		want := []string{ConnectionConnecting, ConnectionEstablished, ConnectionFailed, ConnectionPending, ConnectionWaiting}
		return slices.Equal(states, want), fmt.Sprintf("%+v", s.Connections)
	})
	require.Equal(t, Protocol, s.Protocol)
	require.Equal(t, ProtocolMinVersion, s.ProtocolMinVersion)
	require.Equal(t, ProtocolMaxVersion, s.ProtocolMaxVersion)
	require.True(t, s.Encryption)
	require.Equal(t, name(p1), s.Name)
	require.Equal(t, "peer1", s.NickName)
	require.Equal(t, p1.Ourself.UID, s.UID)
	require.Equal(t, p1.ListenAddr().String(), s.ListenAddr)
	require.Equal(t, p1.ListenAddr().(*net.TCPAddr).Port, s.Port)
	require.Equal(t, DefaultConnLimit, s.ConnLimit)

	// Peers, each with the connections it reports.
	require.Len(t, s.Peers, 3)
	for i, p := range []*Router{p1, p2, p3} {
		ps := s.Peers[i]
		require.Equal(t, name(p), ps.Name)
		require.Equal(t, fmt.Sprint("peer", i+1), ps.NickName)
		require.Equal(t, p.Ourself.UID, ps.UID)
		require.NotZero(t, ps.Version)
	}
	require.Len(t, s.Peers[1].Connections, 2)
	for _, c := range s.Peers[1].Connections {
		require.True(t, c.Established)
		require.Contains(t, []string{"peer1", "peer3"}, c.NickName)
	}

	// Routes: everything goes through peer 2; broadcasts from 2 and 3 end
	// here, a leaf.
	require.Equal(t, []UnicastRouteStatus{{Dest: name(p2), Via: name(p2)}, {Dest: name(p3), Via: name(p2)}}, s.UnicastRoutes)
	require.Empty(t, s.BroadcastRoutes)
	require.False(t, s.BroadcastRoutesPartial)
	wantBroadcast := []BroadcastRouteStatus{{Source: name(p1), Via: []string{name(p3)}}, {Source: name(p3), Via: []string{name(p1)}}}
	statusEventually(t, "peer 2 relays broadcasts between 1 and 3", func() (bool, string) {
		s2 := statusOf(t, p2)
		return slices.EqualFunc(s2.BroadcastRoutes, wantBroadcast, func(a, b BroadcastRouteStatus) bool {
			return a.Source == b.Source && slices.Equal(a.Via, b.Via)
		}), fmt.Sprint(s2.BroadcastRoutes)
	})

	// Connections and targets.
	est := connectionsByState(s, ConnectionEstablished)[0]
	require.Equal(t, name(p2), est.Name)
	require.Equal(t, "peer2", est.NickName)
	require.True(t, est.Outbound)
	require.True(t, est.Encrypted)
	require.Equal(t, ProtocolMaxVersion, est.ProtocolVersion)
	require.Contains(t, est.Info, "encrypted=true")

	pending := connectionsByState(s, ConnectionPending)[0]
	require.Equal(t, silent.LocalAddr().String(), pending.Address)
	require.False(t, pending.Outbound)
	require.Empty(t, pending.Name, "not known before the handshake")

	connecting := connectionsByState(s, ConnectionConnecting)[0]
	require.Equal(t, hanging, connecting.Address)
	require.Equal(t, 1, connecting.Attempts)

	waiting := connectionsByState(s, ConnectionWaiting)[0]
	require.Equal(t, refused, waiting.Address)
	require.Contains(t, waiting.LastError, "refused")
	require.Positive(t, waiting.Attempts)
	require.False(t, waiting.TryAfter.IsZero())
	require.Contains(t, waiting.Info, "retry at")

	failed := connectionsByState(s, ConnectionFailed)[0]
	require.Equal(t, p1.ListenAddr().String(), failed.Address)
	require.Contains(t, failed.LastError, "ourself")
	require.Contains(t, failed.Info, "not retrying")

	wantTargets := []string{hanging, p1.ListenAddr().String(), p2.ListenAddr().String(), refused}
	slices.Sort(wantTargets)
	require.Equal(t, wantTargets, s.Targets)
	require.Len(t, s.TargetStates, 4)
	for _, ts := range s.TargetStates {
		require.True(t, ts.Direct)
		require.Equal(t, ts.State == "waiting", !ts.TryAfter.IsZero(), "%+v", ts)
	}

	// The field names of weave's Status are all there.
	body, err := json.Marshal(NewStatus(p1))
	require.NoError(t, err)
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &raw))
	for _, k := range []string{"Protocol", "ProtocolMinVersion", "ProtocolMaxVersion", "Encryption", "PeerDiscovery", "Name", "NickName", "Port", "Peers", "UnicastRoutes", "BroadcastRoutes", "Connections", "TerminationCount", "Targets", "OverlayDiagnostics", "TrustedSubnets"} {
		require.Contains(t, raw, k)
	}
	var conns []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw["Connections"], &conns))
	for _, c := range conns {
		for _, k := range []string{"Address", "Outbound", "State", "Info", "Attrs"} {
			require.Contains(t, c, k)
		}
	}
	require.NotContains(t, string(body), "0001-01-01", "zero times are left out")
}

// In a small mesh every broadcast tree is listed; in a large one, only
// those in use, and taking the snapshot computes none.
func TestStatusBroadcastRoutes(t *testing.T) {
	newRouter := func(n int) *Router {
		r, err := NewRouter(Config{}, testPeerName(2), "us", nil, nil)
		require.NoError(t, err)
		r.Peers.topo = buildTopology(n, 2, line(n))
		r.Routes = newRoutes(r.Peers)
		return r
	}
	via := func(i int) []string { return []string{testPeerName(i).String()} }

	small := NewStatus(newRouter(5))
	require.False(t, small.BroadcastRoutesPartial)
	require.Equal(t, []BroadcastRouteStatus{
		{Source: testPeerName(0).String(), Via: via(3)},
		{Source: testPeerName(1).String(), Via: via(3)},
		{Source: testPeerName(3).String(), Via: via(1)},
		{Source: testPeerName(4).String(), Via: via(1)},
	}, small.BroadcastRoutes)
	require.Len(t, small.UnicastRoutes, 4)

	const n = 2000 // n·(n+connections) is well over the budget
	r := newRouter(n)
	large := NewStatus(r)
	require.True(t, large.BroadcastRoutesPartial)
	require.Empty(t, large.BroadcastRoutes)
	require.Len(t, large.Peers, n)
	require.Len(t, large.UnicastRoutes, n-1)
	require.Equal(t, via(3), []string{large.UnicastRoutes[n-2].Via})

	// A broadcast from peer 1000 is relayed: its tree is computed, and
	// listed from then on.
	require.Equal(t, []PeerName{testPeerName(1)}, r.Routes.BroadcastAll(testPeerName(1000)))
	large = NewStatus(r)
	require.Equal(t, []BroadcastRouteStatus{{Source: testPeerName(1000).String(), Via: via(1)}}, large.BroadcastRoutes)
	rt := r.Routes.table.Load()
	rt.mu.Lock()
	computed := len(rt.broadcastAll)
	rt.mu.Unlock()
	require.Equal(t, 1, computed, "NewStatus computed broadcast trees")
}

// undiagnosable is an overlay whose diagnostics JSON cannot encode.
type undiagnosable struct{ NullOverlay }

func (undiagnosable) Diagnostics() interface{} { return func() {} }

func TestStatusHandler(t *testing.T) {
	r, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(1), "handled", nil, nil)
	require.NoError(t, err)
	h := StatusHandler(r)
	serve := func(h http.Handler, method string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, "/status", nil))
		return w
	}

	w := serve(h, http.MethodGet)
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	var s Status
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &s))
	require.Equal(t, testPeerName(1).String(), s.Name)
	require.Equal(t, "handled", s.NickName)

	w = serve(h, http.MethodHead)
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))

	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		w := serve(h, m)
		require.Equal(t, http.StatusMethodNotAllowed, w.Code, m)
		require.Equal(t, "GET, HEAD", w.Header().Get("Allow"))
	}

	bad, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(1), "bad", undiagnosable{}, nil)
	require.NoError(t, err)
	w = serve(StatusHandler(bad), http.MethodGet)
	require.Equal(t, http.StatusInternalServerError, w.Code)
}
