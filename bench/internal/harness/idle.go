package harness

import (
	"errors"
	"runtime"
	"time"

	"github.com/gossip-mesh/mesh"
)

// IdleResult describes a formed cluster doing nothing. It is measured in a
// process of its own, so CPU and memory are the cluster's alone.
type IdleResult struct {
	System           System  `json:"system"`
	N                int     `json:"n"`
	Converged        bool    `json:"converged"`
	FormationSeconds float64 `json:"formation_seconds"`
	IdleSeconds      float64 `json:"idle_seconds"`
	// SettleSeconds is the time from formation to the idle window; Settled
	// is false when the connections were still changing at SettleOptions.Max.
	SettleSeconds float64 `json:"settle_seconds"`
	Settled       bool    `json:"settled"`
	// CPUSeconds is the user+system CPU time of the whole process during
	// the idle window; CPUPer30s scales it to 30 seconds.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPer30s  float64 `json:"cpu_per_30s"`
	// RSSBytes is VmRSS at the end; BaselineRSSBytes before any member
	// started. HeapBytes is the Go heap in use at the end.
	RSSBytes         int64  `json:"rss_bytes"`
	BaselineRSSBytes int64  `json:"baseline_rss_bytes"`
	HeapBytes        uint64 `json:"heap_bytes"`
	// Goroutines at the end; BaselineGoroutines before any member started.
	Goroutines         int `json:"goroutines"`
	BaselineGoroutines int `json:"baseline_goroutines"`
	// RouterGoroutines is how many goroutines one mesh router without
	// connections runs (measured by starting one alone).
	RouterGoroutines int `json:"router_goroutines,omitempty"`
	Routers          int `json:"routers"`
	// ConnectionEnds is the sum over routers of their connections (mesh);
	// -1 when they could not be counted within 15 s.
	ConnectionEnds int `json:"connection_ends,omitempty"`
	// GoroutinesPerConnEnd is (Goroutines - BaselineGoroutines -
	// Routers*RouterGoroutines) / ConnectionEnds (mesh).
	GoroutinesPerConnEnd float64 `json:"goroutines_per_conn_end,omitempty"`
	// BytesPerPeerPerSec is what the members sent during the idle window,
	// per member and second.
	BytesPerPeerPerSec float64 `json:"bytes_per_peer_per_sec"`
	Error              string  `json:"error,omitempty"`
}

// SettleOptions says when a formed cluster counts as settled: at least
// Min after formation and, for mesh, once neither the number of connection
// ends nor the count of entries merged has changed for Stable (peer
// discovery goes on dialling after every router knows every other, and
// the changes it makes take a while to reach every router of a large
// mesh), but no later than Max after formation.
type SettleOptions struct {
	Min, Stable, Max time.Duration
}

// IdleOptions configures the idle scenario.
type IdleOptions struct {
	Idle             time.Duration
	FormationTimeout time.Duration
	Settle           SettleOptions
}

// Idle forms a star cluster of n members, waits until it settles, then measures
// for o.Idle the CPU the process uses and the bytes the members send, and
// at the end its memory and goroutines. Run it in a fresh process.
func Idle(sys System, n int, o IdleOptions) IdleResult {
	res := IdleResult{System: sys, N: n, Routers: n, IdleSeconds: o.Idle.Seconds()}
	var errs []error
	if sys == Mesh {
		g, err := routerGoroutines()
		if err != nil {
			errs = append(errs, err)
		}
		res.RouterGoroutines = g
	}
	settleRuntime()
	res.BaselineGoroutines = runtime.NumGoroutine()
	rss0, err := rssBytes()
	if err != nil {
		errs = append(errs, err)
	}
	res.BaselineRSSBytes = rss0

	c, err := startCluster(clusterSpec{System: sys, N: n, Bootstrap: Star, Seed: uint64(n)})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	elapsed, ok := waitFormed(c, o.FormationTimeout)
	res.Converged, res.FormationSeconds = ok, elapsed.Seconds()
	logf("idle %s N=%d: formed=%v after %v", sys, n, ok, elapsed.Round(time.Millisecond))
	if !ok {
		errs = append(errs, errors.New("formation timed out"))
	}
	settled, ok := settle(c, o.Settle)
	res.SettleSeconds, res.Settled = settled.Seconds(), ok
	logf("idle %s N=%d: settled=%v after %v", sys, n, ok, settled.Round(time.Millisecond))

	w, err := measureWindow(c, o.Idle)
	if err != nil {
		errs = append(errs, err)
	}
	res.CPUSeconds = w.cpu.Seconds()
	if o.Idle > 0 {
		res.CPUPer30s = res.CPUSeconds * 30 / o.Idle.Seconds()
		res.BytesPerPeerPerSec = float64(w.bytes) / float64(n) / w.elapsed.Seconds()
	}
	res.RSSBytes, res.HeapBytes, res.Goroutines = w.rss, w.heap, w.goroutines
	if mc, ok := c.(*meshCluster); ok {
		res.ConnectionEnds = mc.connectionEnds()
		if res.ConnectionEnds > 0 {
			res.GoroutinesPerConnEnd = float64(res.Goroutines-res.BaselineGoroutines-n*res.RouterGoroutines) / float64(res.ConnectionEnds)
		}
	}
	if err := c.stop(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		res.Error = err.Error()
	}
	return res
}

// settle waits until c counts as settled (see SettleOptions) and returns
// how long it waited and whether the connections stopped changing.
func settle(c cluster, o SettleOptions) (time.Duration, bool) {
	start := time.Now()
	time.Sleep(o.Min)
	mc, ok := c.(*meshCluster)
	if !ok {
		return time.Since(start), true
	}
	last, lastUpdates, since := mc.connectionEnds(), mc.topologyUpdates(), time.Now()
	for time.Since(start) < o.Max {
		time.Sleep(min(500*time.Millisecond, o.Stable))
		n, updates := mc.connectionEnds(), mc.topologyUpdates()
		if n != last || n < 0 || updates != lastUpdates {
			last, lastUpdates, since = n, updates, time.Now()
			continue
		}
		if time.Since(since) >= o.Stable {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// window is what a cluster used over a measurement window.
type window struct {
	elapsed    time.Duration
	cpu        time.Duration
	bytes      int64
	rss        int64
	heap       uint64
	goroutines int
}

// measureWindow measures CPU and bytes sent over d, then memory and
// goroutines.
func measureWindow(c cluster, d time.Duration) (window, error) {
	var w window
	cpu0, err := cpuTime()
	if err != nil {
		return w, err
	}
	b0, t0 := c.bytesSent(), time.Now()
	time.Sleep(d)
	cpu1, err := cpuTime()
	if err != nil {
		return w, err
	}
	w.cpu, w.bytes, w.elapsed = cpu1-cpu0, c.bytesSent()-b0, time.Since(t0)
	w.goroutines = runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.heap = ms.HeapInuse
	w.rss, err = rssBytes()
	return w, err
}

// Log receives the progress lines of long scenarios; nil discards them.
var Log func(format string, args ...any)

func logf(format string, args ...any) {
	if Log != nil {
		Log(format, args...)
	}
}

// settleRuntime lets goroutines that are ending end, and collects garbage.
func settleRuntime() {
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
}

// routerGoroutines starts one mesh router, with one channel and no
// connections, and returns how many goroutines it added.
func routerGoroutines() (int, error) {
	settleRuntime()
	before := runtime.NumGoroutine()
	r, err := mesh.NewRouter(mesh.Config{Host: "127.0.0.1", PeerDiscovery: true}, meshName(1<<20), "probe", nil, nil)
	if err != nil {
		return 0, err
	}
	// The routers of the scenarios have one channel registered.
	if _, err := r.NewGossip(benchChannel, &benchGossiper{}); err != nil {
		_ = r.Stop()
		return 0, err
	}
	if err := r.Start(); err != nil {
		_ = r.Stop()
		return 0, err
	}
	time.Sleep(50 * time.Millisecond)
	g := runtime.NumGoroutine() - before
	if err := r.Stop(); err != nil {
		return g, err
	}
	return g, nil
}

// ScaleResult describes a large sparse mesh cluster: its formation, then
// its memory and its CPU use while idle. It is measured in a process of
// its own.
type ScaleResult struct {
	N         int  `json:"n"`
	ConnLimit int  `json:"conn_limit"`
	Converged bool `json:"converged"`
	// FormationSeconds runs from the last router's start until every
	// router knows all N with their UIDs (or until the timeout).
	FormationSeconds float64 `json:"formation_seconds"`
	StartSpanSeconds float64 `json:"start_span_seconds"`
	// MinKnown and MedianKnown are the peers known by the least and the
	// median router when formation ended (N when it converged; -1 when
	// they could not be counted within 15 s).
	MinKnown    int `json:"min_known"`
	MedianKnown int `json:"median_known"`
	// RSSBytes at the end; RSSPerPeerBytes is (RSSBytes -
	// BaselineRSSBytes) / N.
	RSSBytes         int64   `json:"rss_bytes"`
	BaselineRSSBytes int64   `json:"baseline_rss_bytes"`
	RSSPerPeerBytes  float64 `json:"rss_per_peer_bytes"`
	HeapBytes        uint64  `json:"heap_bytes"`
	// SettleSeconds is the time from formation to the idle window; Settled
	// is false when the connections were still changing at SettleOptions.Max.
	SettleSeconds float64 `json:"settle_seconds"`
	Settled       bool    `json:"settled"`
	// CPUSeconds is the process's CPU time over the idle window;
	// CPUPerPeerMs is the same per router, in milliseconds.
	IdleSeconds        float64 `json:"idle_seconds"`
	CPUSeconds         float64 `json:"cpu_seconds"`
	CPUPerPeerMs       float64 `json:"cpu_per_peer_ms"`
	BytesPerPeerPerSec float64 `json:"bytes_per_peer_per_sec"`
	Goroutines         int     `json:"goroutines"`
	ConnectionEnds     int     `json:"connection_ends"`
	Error              string  `json:"error,omitempty"`
}

// ScaleOptions configures the scale scenario.
type ScaleOptions struct {
	ConnLimit        int
	FormationTimeout time.Duration
	Settle           SettleOptions
	Idle             time.Duration
	Seed             uint64
}

// Scale starts n mesh routers with the given connection limit, each
// knowing two random earlier routers, and measures formation, then memory
// and idle CPU. Run it in a fresh process.
func Scale(n int, o ScaleOptions) ScaleResult {
	res := ScaleResult{N: n, ConnLimit: o.ConnLimit, IdleSeconds: o.Idle.Seconds()}
	var errs []error
	settleRuntime()
	rss0, err := rssBytes()
	if err != nil {
		errs = append(errs, err)
	}
	res.BaselineRSSBytes = rss0
	c, err := startMesh(meshOptions{N: n, Bootstrap: Sparse, ConnLimit: o.ConnLimit, Seed: o.Seed})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	logf("scale N=%d: %d routers started", n, n)
	elapsed, ok := waitFormed(c, o.FormationTimeout)
	res.Converged, res.FormationSeconds = ok, elapsed.Seconds()
	logf("scale N=%d: formed=%v after %v", n, ok, elapsed.Round(time.Millisecond))
	first, origin := c.startTimes()
	res.StartSpanSeconds = origin.Sub(first).Seconds()
	if ok {
		res.MinKnown, res.MedianKnown = n, n
	} else {
		res.MinKnown, res.MedianKnown = minMedianKnown(c)
		errs = append(errs, errors.New("formation timed out"))
		logf("scale N=%d: known min/median %d/%d", n, res.MinKnown, res.MedianKnown)
	}
	settled, sok := settle(c, o.Settle)
	res.SettleSeconds, res.Settled = settled.Seconds(), sok
	logf("scale N=%d: settled=%v after %v", n, sok, settled.Round(time.Millisecond))
	w, err := measureWindow(c, o.Idle)
	if err != nil {
		errs = append(errs, err)
	}
	res.CPUSeconds = w.cpu.Seconds()
	res.CPUPerPeerMs = 1000 * res.CPUSeconds / float64(n)
	if w.elapsed > 0 {
		res.BytesPerPeerPerSec = float64(w.bytes) / float64(n) / w.elapsed.Seconds()
	}
	res.RSSBytes, res.HeapBytes, res.Goroutines = w.rss, w.heap, w.goroutines
	res.RSSPerPeerBytes = float64(res.RSSBytes-res.BaselineRSSBytes) / float64(n)
	res.ConnectionEnds = c.connectionEnds()
	logf("scale N=%d: measured; stopping", n)
	if err := c.stop(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		res.Error = err.Error()
	}
	return res
}
