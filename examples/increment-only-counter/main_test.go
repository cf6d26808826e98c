package main

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
)

const (
	nameA = mesh.PeerName(0x0a)
	nameB = mesh.PeerName(0x0b)
	nameC = mesh.PeerName(0x0c)
)

// stateOf builds a state holding counts.
func stateOf(self mesh.PeerName, counts map[mesh.PeerName]int) *state {
	st := newState(self)
	maps.Copy(st.counts, counts)
	return st
}

// countsOf returns the counts of a GossipData that must be a *state.
func countsOf(t *testing.T, d mesh.GossipData) map[mesh.PeerName]int {
	t.Helper()
	st, ok := d.(*state)
	if !ok || st == nil {
		t.Fatalf("got %T(%v), want a non-nil *state", d, d)
	}
	return st.snapshot()
}

func TestStateIncrReturnsDeltaOfOwnEntry(t *testing.T) {
	st := stateOf(nameA, map[mesh.PeerName]int{nameB: 5})
	d1 := st.incr()
	d2 := st.incr()
	if got, want := d1.snapshot(), map[mesh.PeerName]int{nameA: 1}; !maps.Equal(got, want) {
		t.Errorf("first delta = %v, want %v", got, want)
	}
	if got, want := d2.snapshot(), map[mesh.PeerName]int{nameA: 2}; !maps.Equal(got, want) {
		t.Errorf("second delta = %v, want %v", got, want)
	}
	if got := st.get(); got != 7 {
		t.Errorf("get = %d, want 7", got)
	}
	// The delta is a copy: raising the state later leaves it unchanged.
	st.incr()
	if got := d2.snapshot()[nameA]; got != 2 {
		t.Errorf("delta changed to %d after a later increment", got)
	}
}

func TestStateMergeReturnsOnlyWhatIsNew(t *testing.T) {
	st := stateOf(nameA, map[mesh.PeerName]int{nameA: 3, nameB: 2})
	in := map[mesh.PeerName]int{nameA: 1, nameB: 4, nameC: 1}
	inCopy := maps.Clone(in)

	for _, merge := range []struct {
		name string
		f    func(*state, map[mesh.PeerName]int) *state
	}{
		{"mergeReceived", (*state).mergeReceived},
		{"mergeDelta", (*state).mergeDelta},
		{"mergeComplete", (*state).mergeComplete},
	} {
		t.Run(merge.name, func(t *testing.T) {
			st := st.copyState()
			delta := merge.f(st, in)
			if delta == nil {
				t.Fatal("delta is nil, want the new entries")
			}
			if got, want := delta.snapshot(), map[mesh.PeerName]int{nameB: 4, nameC: 1}; !maps.Equal(got, want) {
				t.Errorf("delta = %v, want %v", got, want)
			}
			if got, want := st.snapshot(), map[mesh.PeerName]int{nameA: 3, nameB: 4, nameC: 1}; !maps.Equal(got, want) {
				t.Errorf("state = %v, want %v", got, want)
			}
			if !maps.Equal(in, inCopy) {
				t.Errorf("merge modified its argument: %v, was %v", in, inCopy)
			}
			if again := merge.f(st, in); again != nil {
				t.Errorf("merging the same counts again returned %v, want nil", again)
			}
			if none := merge.f(st, nil); none != nil {
				t.Errorf("merging nothing returned %v, want nil", none)
			}
		})
	}
}

func TestStateMergeIsIdempotent(t *testing.T) {
	a := stateOf(nameA, map[mesh.PeerName]int{nameA: 3, nameB: 1})
	b := stateOf(nameB, map[mesh.PeerName]int{nameB: 4, nameC: 2})
	once := countsOf(t, a.copyState().Merge(b))
	twice := countsOf(t, a.copyState().Merge(b).Merge(b))
	if !maps.Equal(once, twice) {
		t.Errorf("merging twice = %v, once = %v", twice, once)
	}
	self := countsOf(t, a.copyState().Merge(a))
	if !maps.Equal(self, a.snapshot()) {
		t.Errorf("merging a state with itself = %v, want %v", self, a.snapshot())
	}
}

func TestStateMergeIsCommutativeAndAssociative(t *testing.T) {
	a := stateOf(nameA, map[mesh.PeerName]int{nameA: 3, nameB: 1})
	b := stateOf(nameB, map[mesh.PeerName]int{nameB: 4, nameC: 2})
	c := stateOf(nameC, map[mesh.PeerName]int{nameA: 1, nameC: 7})

	ab := countsOf(t, a.copyState().Merge(b))
	ba := countsOf(t, b.copyState().Merge(a))
	if !maps.Equal(ab, ba) {
		t.Errorf("a+b = %v, b+a = %v", ab, ba)
	}
	left := countsOf(t, a.copyState().Merge(b).Merge(c))
	right := countsOf(t, a.copyState().Merge(b.copyState().Merge(c)))
	if !maps.Equal(left, right) {
		t.Errorf("(a+b)+c = %v, a+(b+c) = %v", left, right)
	}
	if want := map[mesh.PeerName]int{nameA: 3, nameB: 4, nameC: 7}; !maps.Equal(left, want) {
		t.Errorf("a+b+c = %v, want %v", left, want)
	}
}

func TestStateMergeReturnsReceiverAndLeavesOtherAlone(t *testing.T) {
	a := stateOf(nameA, map[mesh.PeerName]int{nameA: 1})
	b := stateOf(nameB, map[mesh.PeerName]int{nameB: 2})
	if got := a.Merge(b); got != mesh.GossipData(a) {
		t.Errorf("Merge returned %p, want its receiver %p", got, a)
	}
	if got, want := b.snapshot(), map[mesh.PeerName]int{nameB: 2}; !maps.Equal(got, want) {
		t.Errorf("Merge modified its argument: %v, want %v", got, want)
	}
	if got := a.Merge(nil); got != mesh.GossipData(a) {
		t.Errorf("Merge(nil) returned %v, want the receiver", got)
	}
}

func TestStateEncodeRoundTrip(t *testing.T) {
	st := stateOf(nameA, map[mesh.PeerName]int{nameA: 3, nameB: 9})
	msgs := st.Encode()
	if len(msgs) != 1 {
		t.Fatalf("Encode returned %d messages, want 1", len(msgs))
	}
	got, err := decodeCounts(msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, st.snapshot()) {
		t.Errorf("decoded %v, want %v", got, st.snapshot())
	}
}

func TestDecodeCountsRejectsBadInput(t *testing.T) {
	if _, err := decodeCounts([]byte("not gob")); err == nil {
		t.Error("garbage decoded without an error")
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(map[mesh.PeerName]int{nameA: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeCounts(buf.Bytes()); err == nil {
		t.Error("a negative count decoded without an error")
	}
}

// recordingGossip is a mesh.Gossip that records broadcasts.
type recordingGossip struct {
	broadcasts []mesh.GossipData
}

func (g *recordingGossip) GossipUnicast(mesh.PeerName, []byte) error { return nil }
func (g *recordingGossip) GossipBroadcast(d mesh.GossipData)         { g.broadcasts = append(g.broadcasts, d) }
func (g *recordingGossip) GossipNeighbourSubset(mesh.GossipData)     {}

func TestPeerIncrBroadcastsDelta(t *testing.T) {
	p := newPeer(nameA, nil)
	if got := p.incr(); got != 1 {
		t.Errorf("incr before register = %d, want 1", got)
	}
	g := &recordingGossip{}
	p.register(g)
	if got := p.incr(); got != 2 {
		t.Errorf("incr = %d, want 2", got)
	}
	if len(g.broadcasts) != 1 {
		t.Fatalf("%d broadcasts, want 1", len(g.broadcasts))
	}
	if got, want := countsOf(t, g.broadcasts[0]), map[mesh.PeerName]int{nameA: 2}; !maps.Equal(got, want) {
		t.Errorf("broadcast %v, want %v", got, want)
	}
}

func TestPeerGossiperMethods(t *testing.T) {
	p := newPeer(nameA, nil)
	msg := stateOf(nameB, map[mesh.PeerName]int{nameB: 2, nameC: 1}).Encode()[0]

	delta, err := p.OnGossip(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := countsOf(t, delta), map[mesh.PeerName]int{nameB: 2, nameC: 1}; !maps.Equal(got, want) {
		t.Errorf("OnGossip delta = %v, want %v", got, want)
	}
	// Nothing new must give an untyped nil, which the router checks for.
	if delta, err := p.OnGossip(msg); err != nil || delta != nil {
		t.Errorf("OnGossip of known state = %v, %v; want nil, nil", delta, err)
	}
	if received, err := p.OnGossipBroadcast(nameB, msg); err != nil || received != nil {
		t.Errorf("OnGossipBroadcast of known state = %v, %v; want nil, nil", received, err)
	}

	newer := stateOf(nameB, map[mesh.PeerName]int{nameB: 5, nameC: 1}).Encode()[0]
	received, err := p.OnGossipBroadcast(nameB, newer)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := countsOf(t, received), map[mesh.PeerName]int{nameB: 5}; !maps.Equal(got, want) {
		t.Errorf("OnGossipBroadcast received = %v, want %v", got, want)
	}

	complete := stateOf(nameC, map[mesh.PeerName]int{nameC: 4}).Encode()[0]
	if err := p.OnGossipUnicast(nameC, complete); err != nil {
		t.Fatal(err)
	}
	if got := p.get(); got != 9 {
		t.Errorf("get = %d, want 9", got)
	}
	full := countsOf(t, p.Gossip())
	if want := map[mesh.PeerName]int{nameB: 5, nameC: 4}; !maps.Equal(full, want) {
		t.Errorf("Gossip = %v, want %v", full, want)
	}

	if _, err := p.OnGossip([]byte{1, 2, 3}); err == nil {
		t.Error("OnGossip accepted garbage")
	}
	if _, err := p.OnGossipBroadcast(nameB, nil); err == nil {
		t.Error("OnGossipBroadcast accepted an empty message")
	}
	if err := p.OnGossipUnicast(nameB, []byte("x")); err == nil {
		t.Error("OnGossipUnicast accepted garbage")
	}
}

func TestHTTPAPI(t *testing.T) {
	name := mesh.PeerName(0x02_00_00_00_00_aa)
	router, err := mesh.NewRouter(mesh.Config{Host: "127.0.0.1"}, name, "api", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := router.Stop(); err != nil {
			t.Error(err)
		}
	})
	p := newPeer(name, nil)
	srv := httptest.NewServer(newHandler(router, p))
	t.Cleanup(srv.Close)

	do := func(method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}

	if code, body := do("GET", "/"); code != 200 || body != "get => 0\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	if code, body := do("POST", "/"); code != 200 || body != "incr => 1\n" {
		t.Errorf("POST / = %d %q", code, body)
	}
	if code, body := do("GET", "/"); code != 200 || body != "get => 1\n" {
		t.Errorf("GET / after POST = %d %q", code, body)
	}
	if code, _ := do("DELETE", "/"); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE / = %d, want 405", code)
	}
	code, body := do("GET", "/status")
	if code != 200 {
		t.Fatalf("GET /status = %d %q", code, body)
	}
	var status mesh.Status
	if err := json.Unmarshal([]byte(body), &status); err != nil {
		t.Fatalf("GET /status is not JSON: %v\n%s", err, body)
	}
	if status.Name != name.String() || status.NickName != "api" || status.Protocol != mesh.Protocol {
		t.Errorf("status = %+v", status)
	}
	if code, _ := do("POST", "/status"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status = %d, want 405", code)
	}
}

func TestParseMeshAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{":6783", "", 6783, true},
		{"127.0.0.1:0", "127.0.0.1", 0, true},
		{"[::1]:7000", "::1", 7000, true},
		{"6783", "", 0, false},
		{"host:port", "", 0, false},
		{":70000", "", 0, false},
		{":-1", "", 0, false},
	} {
		host, port, err := parseMeshAddr(tc.in)
		if (err == nil) != tc.ok || host != tc.host || port != tc.port {
			t.Errorf("parseMeshAddr(%q) = %q, %d, %v", tc.in, host, port, err)
		}
	}
}

func TestDefaultFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.meshAddr != ":6783" || o.httpAddr != ":8080" || o.channel != "default" || o.password != "" {
		t.Errorf("defaults = %+v", o)
	}
	if _, err := mesh.PeerNameFromUserInput(o.hwaddr); err != nil {
		t.Errorf("default -hwaddr %q is not a peer name: %v", o.hwaddr, err)
	}
	o, err = parseFlags([]string{"-peer", "a:1", "-peer", "b"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.peers, " "); got != "a:1 b" {
		t.Errorf("-peer twice = %q", got)
	}
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Error("a stray argument was accepted")
	}
}

func TestRandomPeerName(t *testing.T) {
	s := randomPeerName()
	hw, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	if hw[0]&0x02 == 0 || hw[0]&0x01 != 0 {
		t.Errorf("%s is not a locally administered unicast address", s)
	}
	if _, err := mesh.PeerNameFromString(s); err != nil {
		t.Errorf("%s is not a peer name: %v", s, err)
	}
}

func TestMemoryLoggerKeepsLastLines(t *testing.T) {
	l := &memoryLogger{max: 3}
	for i := 0; i < 5; i++ {
		l.Printf("line %d\n", i)
	}
	lines := l.lines()
	if len(lines) != 3 {
		t.Fatalf("%d lines kept, want 3", len(lines))
	}
	for i, want := range []string{"line 2", "line 3", "line 4"} {
		if !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d = %q, want suffix %q", i, lines[i], want)
		}
	}
}

// waitForGoroutines fails the test unless the number of goroutines drops to
// at most limit before a deadline.
func waitForGoroutines(t *testing.T, limit int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if poll(ctx, func() bool { return runtime.NumGoroutine() <= limit }) {
		return
	}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	t.Fatalf("%d goroutines still running after the routers stopped, want at most %d:\n%s",
		runtime.NumGoroutine(), limit, buf)
}

func TestDemoConverges(t *testing.T) {
	for _, tc := range []struct {
		name     string
		password []byte
	}{
		{"plaintext", nil},
		{"encrypted", []byte("correct horse battery staple")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			logs := &memoryLogger{max: 200}
			var out bytes.Buffer
			res, err := runDemo(context.Background(), demoConfig{
				Password: tc.password,
				Timeout:  60 * time.Second,
				Logger:   logs,
			}, &out)
			if err != nil {
				t.Fatalf("%v\noutput:\n%s\nlog:\n%s", err, out.String(), strings.Join(logs.lines(), "\n"))
			}
			if res.Value != 6 || len(res.Views) != demoPeers {
				t.Fatalf("result = %+v", res)
			}
			for _, v := range res.Views {
				if v.Value != 6 {
					t.Errorf("%s reads %d, want 6", v.Nick, v.Value)
				}
				want := map[mesh.PeerName]int{
					mesh.PeerName(0x02_00_00_00_00_01): 1,
					mesh.PeerName(0x02_00_00_00_00_02): 2,
					mesh.PeerName(0x02_00_00_00_00_03): 3,
				}
				if !maps.Equal(v.Counts, want) {
					t.Errorf("%s counts %v, want %v", v.Nick, v.Counts, want)
				}
			}
			if !strings.Contains(out.String(), "every peer reads 6") {
				t.Errorf("report does not say the peers agree:\n%s", out.String())
			}
			t.Logf("demo output:\n%s", out.String())
			waitForGoroutines(t, before+2)
		})
	}
}

func TestDemoFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-demo", "-demo-timeout", "60s"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "every peer reads 6") {
		t.Errorf("unexpected output:\n%s", stdout.String())
	}
}

func TestDemoTimesOutWithAClearMessage(t *testing.T) {
	// A context that is already cancelled stands for a deadline that
	// passes before the mesh could form.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := runtime.NumGoroutine()
	_, err := runDemo(ctx, demoConfig{Timeout: time.Minute}, io.Discard)
	if err == nil {
		t.Fatal("the demo succeeded with a cancelled context")
	}
	if !strings.Contains(err.Error(), "did not form") {
		t.Errorf("error = %v", err)
	}
	waitForGoroutines(t, before+2)
}
