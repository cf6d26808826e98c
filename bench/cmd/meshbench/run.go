package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/gossip-mesh/mesh/bench/internal/harness"
	"github.com/gossip-mesh/mesh/bench/internal/stats"
)

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	FileLimit uint64 `json:"file_limit"`
	// LoadAvg is /proc/loadavg when the run started and when it ended:
	// other work on the machine skews every figure.
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	// Library is the git revision of the mesh checkout the run used.
	Library string `json:"library"`
}

// Results is everything a run measured, as written by -json.
type Results struct {
	Date      string                    `json:"date"`
	Machine   Machine                   `json:"machine"`
	Quick     bool                      `json:"quick"`
	Formation []harness.FormationResult `json:"formation,omitempty"`
	Broadcast []harness.BroadcastResult `json:"broadcast,omitempty"`
	Update    []harness.UpdateResult    `json:"update,omitempty"`
	Limit     []harness.LimitResult     `json:"limit,omitempty"`
	Unicast   []harness.UnicastResult   `json:"unicast,omitempty"`
	Idle      []harness.IdleResult      `json:"idle,omitempty"`
	Scale     []harness.ScaleResult     `json:"scale,omitempty"`
	Targets   []Target                  `json:"targets,omitempty"`
}

// unicastSizes are the payload sizes of the unicast and limit scenarios.
var unicastSizes = []int{100, 1024, 64 << 10}

// run runs the selected scenarios and prints a table for each.
func run(cfg *config) error {
	limit, err := harness.RaiseFileLimit()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench: raising the open file limit:", err)
	}
	res := &Results{
		Date:  time.Now().Format("2006-01-02"),
		Quick: cfg.quick,
		Machine: Machine{
			CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(),
			OS: runtime.GOOS + "/" + runtime.GOARCH, FileLimit: limit, LoadAvgStart: loadAvg(),
			Library: libraryRevision(),
		},
	}
	fmt.Printf("meshbench %s: mesh %s; %d CPUs (%s), %s, %s, open files %d, load average %s\n",
		res.Date, res.Machine.Library, res.Machine.CPUs, res.Machine.CPUModel, res.Machine.GoVersion, res.Machine.OS, limit, res.Machine.LoadAvgStart)
	started := time.Now()
	var errs []error
	for _, sc := range allScenarios {
		if !has(cfg.scenarios, sc) {
			continue
		}
		t0 := time.Now()
		var t *table
		switch sc {
		case "formation":
			t = runFormation(cfg, res)
		case "broadcast":
			t = runBroadcast(cfg, res)
		case "update":
			t = runUpdate(cfg, res)
		case "limit":
			t = runLimit(cfg, res)
		case "unicast":
			t = runUnicast(cfg, res)
		case "idle":
			t = runIdle(cfg, res)
		case "scale":
			t = runScale(cfg, res)
		}
		progress("%s done in %s", sc, stats.Duration(time.Since(t0).Round(time.Millisecond)))
		if err := t.print(os.Stdout, cfg.markdown); err != nil {
			errs = append(errs, err)
		}
	}
	res.Targets = evaluateTargets(res)
	if len(res.Targets) > 0 {
		if err := targetTable(res.Targets).print(os.Stdout, cfg.markdown); err != nil {
			errs = append(errs, err)
		}
	}
	res.Machine.LoadAvgEnd = loadAvg()
	fmt.Printf("\ntotal %s, load average at the end %s\n", stats.Duration(time.Since(started).Round(time.Millisecond)), res.Machine.LoadAvgEnd)
	if cfg.jsonFile != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(cfg.jsonFile, append(b, '\n'), 0o644)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("writing %s: %w", cfg.jsonFile, err))
		}
	}
	return errors.Join(errs...)
}

// progress reports what is running on stderr, so stdout keeps the tables.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// libraryRevision describes the mesh checkout the bench module builds
// against (its go.mod replaces the library with ../): the commit, and
// whether files of the library outside bench/ have uncommitted changes.
func libraryRevision() string {
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "revision unknown"
	}
	dir := strings.TrimSpace(string(root))
	rev, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "revision unknown"
	}
	out := "commit " + strings.TrimSpace(string(rev))
	dirty, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench").Output()
	if err == nil && len(bytes.TrimSpace(dirty)) > 0 {
		out += " with uncommitted changes"
	}
	return out
}

// loadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func status(converged bool, errMsg string) string {
	switch {
	case errMsg != "":
		return "error: " + errMsg
	case !converged:
		return "timeout"
	}
	return "ok"
}

func runFormation(cfg *config, res *Results) *table {
	t := &table{
		title:  "formation: time from the last peer's start until every peer knows all N",
		header: []string{"system", "bootstrap", "N", "formation", "start span", "bytes sent", "bytes/peer", "known min/median", "status"},
	}
	for _, b := range cfg.bootstraps {
		for _, n := range cfg.sizes {
			for _, sys := range cfg.systems {
				progress("formation %s %s N=%d", sys, b, n)
				r := harness.Formation(harness.System(sys), harness.Bootstrap(b), n, cfg.timeout)
				res.Formation = append(res.Formation, r)
				formed := stats.Seconds(r.Seconds)
				if !r.Converged {
					formed = "> " + stats.Duration(cfg.timeout)
				}
				t.add(sys, b, fmt.Sprint(n), formed, stats.Seconds(r.StartSpanSeconds),
					stats.Bytes(float64(r.BytesSent)), stats.Bytes(float64(r.BytesSent)/float64(n)),
					known(r.MinKnown, r.MedianKnown), status(r.Converged, r.Error))
			}
		}
	}
	t.note("start span: from the first peer's start to the last's. Bytes: everything written from the first start until formation (memberlist: UDP and TCP).")
	return t
}

func runBroadcast(cfg *config, res *Results) *table {
	o := harness.DefaultBroadcastOptions
	o.Count, o.Interval, o.Settle, o.FormationTimeout = cfg.bcastCount, cfg.bcastInterval, cfg.settle, cfg.timeout
	t := &table{
		title:  fmt.Sprintf("broadcast: %d messages of %d B from the last peer, %s apart, star; time until all N-1 others have each", o.Count, o.Size, o.Interval),
		header: []string{"system", "N", "complete", "delivered", "p50", "p99", "max", "status"},
	}
	for _, n := range cfg.sizes {
		for _, sys := range cfg.systems {
			progress("broadcast %s N=%d", sys, n)
			r := harness.Broadcast(harness.System(sys), n, o)
			res.Broadcast = append(res.Broadcast, r)
			st := "ok"
			if r.Error != "" {
				st = "error: " + r.Error
			}
			if r.Sent == 0 {
				t.add(sys, fmt.Sprint(n), "-", "-", "-", "-", "-", st)
				continue
			}
			t.add(sys, fmt.Sprint(n), fmt.Sprintf("%d/%d", r.Complete, r.Sent), fmt.Sprintf("%.1f%%", r.DeliveredPct),
				latency(r.P50Ms, o.Timeout), latency(r.P99Ms, o.Timeout), latency(r.MaxMs, o.Timeout), st)
		}
	}
	t.note("complete: messages that reached every other peer within %s; delivered: share of (message, peer) pairs. Sent %s after formation.", stats.Duration(o.Timeout), stats.Duration(o.Settle))
	return t
}

func runUpdate(cfg *config, res *Results) *table {
	o := harness.DefaultUpdateOptions
	o.FormationTimeout = cfg.timeout
	t := &table{
		title:  "update (mesh only): star of N without peer discovery, then a newcomer connects to the hub; what each leaf receives",
		header: []string{"N", "hub connections", "entries and deltas per leaf", "digests per leaf", "reached every leaf", "status"},
	}
	for _, n := range cfg.sizes {
		progress("update N=%d", n)
		r := harness.Update(n, o)
		res.Update = append(res.Update, r)
		st := "ok"
		switch {
		case r.Error != "":
			st = "error: " + r.Error
		case !r.Quiet:
			st = "traffic did not stop"
		}
		if r.Error != "" {
			t.add(fmt.Sprint(n), fmt.Sprintf("%d to %d", n-1, n), "-", "-", "-", st)
			continue
		}
		t.add(fmt.Sprint(n), fmt.Sprintf("%d to %d", n-1, n), stats.Bytes(r.EntryBytesPerPeer), stats.Bytes(r.DigestBytesPerPeer),
			stats.Duration(time.Duration(r.Seconds*float64(time.Second)).Round(time.Microsecond)), st)
	}
	t.note("received from the newcomer's start until the hub's new connection reached every leaf and the leaves received nothing for %s. Entries and deltas: the hub's change and the newcomer's entry; sent whole, the hub's entry alone would grow by about 30 bytes per connection. Digests: announcements, pulls, and any anti-entropy digest that fell in the window.", stats.Duration(o.Quiet))
	return t
}

// known formats the least and median number of peers known; -1 means the
// count did not finish in time.
func known(lowest, median int) string {
	if lowest < 0 {
		return "not counted (locks busy)"
	}
	return fmt.Sprintf("%d/%d", lowest, median)
}

// count formats a count that is -1 when it could not be taken in time.
func count(n int) string {
	if n < 0 {
		return "not counted"
	}
	return fmt.Sprint(n)
}

func latency(ms float64, timeout time.Duration) string {
	if ms < 0 {
		return "> " + stats.Duration(timeout)
	}
	return stats.Duration(time.Duration(ms * float64(time.Millisecond)))
}

func sizeLabel(n int) string {
	switch {
	case n >= 1024 && n%1024 == 0:
		return fmt.Sprintf("%d KiB", n/1024)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func runLimit(cfg *config, res *Results) *table {
	t := &table{
		title:  "limit: secretbox seal + length-prefixed frames over one loopback TCP connection + open, one goroutine each side",
		header: []string{"size", "msgs/s", "MB/s", "status"},
	}
	for _, size := range unicastSizes {
		progress("limit %s", sizeLabel(size))
		r := harness.Limit(size, cfg.duration)
		res.Limit = append(res.Limit, r)
		st := "ok"
		if r.Error != "" {
			st = "error: " + r.Error
		}
		t.add(sizeLabel(size), stats.Count(r.MsgsPerSec), fmt.Sprintf("%.1f", r.MBPerSec), st)
	}
	return t
}

func runUnicast(cfg *config, res *Results) *table {
	t := &table{
		title:  fmt.Sprintf("unicast: one sender goroutine, two peers, %s per run, counted at the receiver", stats.Duration(cfg.duration)),
		header: []string{"system", "size", "mode", "msgs/s", "MB/s", "% of limit", "status"},
	}
	limitOf := make(map[int]float64)
	for _, l := range res.Limit {
		if l.Error == "" {
			limitOf[l.Size] = l.MsgsPerSec
		}
	}
	for _, size := range unicastSizes {
		for _, enc := range []bool{false, true} {
			for _, sys := range cfg.systems {
				mode := "plain"
				if enc {
					mode = "encrypted"
				}
				progress("unicast %s %s %s", sys, sizeLabel(size), mode)
				r := harness.Unicast(harness.System(sys), size, enc, cfg.duration)
				res.Unicast = append(res.Unicast, r)
				pct := "-"
				if l := limitOf[size]; enc && l > 0 {
					pct = fmt.Sprintf("%.0f%%", 100*r.MsgsPerSec/l)
				}
				st := "ok"
				if r.Error != "" {
					st = "error: " + r.Error
				}
				t.add(sys, sizeLabel(size), mode, stats.Count(r.MsgsPerSec), fmt.Sprintf("%.1f", r.MBPerSec), pct, st)
			}
		}
	}
	t.note("MB = 10^6 bytes of payload. %% of limit: encrypted msgs/s against the limit table at the same size. mesh password / memberlist 32-byte SecretKey (AES-GCM).")
	return t
}

// childSpec describes one measurement run in a child process.
type childSpec struct {
	Kind   string               `json:"kind"` // "idle" or "scale"
	System harness.System       `json:"system"`
	N      int                  `json:"n"`
	Idle   harness.IdleOptions  `json:"idle"`
	Scale  harness.ScaleOptions `json:"scale"`
}

// runChild runs the measurement spec describes and prints its result as
// JSON on stdout. It returns the exit status.
func runChild(spec string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench child: bad spec:", err)
		return 2
	}
	if _, err := harness.RaiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench child: raising the open file limit:", err)
	}
	harness.Log = func(format string, args ...any) { progress("  "+format, args...) }
	// MESHBENCH_CPUPROFILE=prefix writes a CPU profile of each child run to
	// prefix-<kind>-<n>.pprof, for finding where the time goes.
	if prefix := os.Getenv("MESHBENCH_CPUPROFILE"); prefix != "" {
		f, err := os.Create(fmt.Sprintf("%s-%s-%d.pprof", prefix, s.Kind, s.N))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() {
				pprof.StopCPUProfile()
				f.Close()
			}()
		}
	}
	var out any
	switch s.Kind {
	case "idle":
		out = harness.Idle(s.System, s.N, s.Idle)
	case "scale":
		out = harness.Scale(s.N, s.Scale)
	default:
		fmt.Fprintf(os.Stderr, "meshbench child: unknown kind %q\n", s.Kind)
		return 2
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench child:", err)
		return 1
	}
	return 0
}

// inChild runs spec in a child process (this executable again) within
// timeout and decodes its result into out.
func inChild(spec childSpec, timeout time.Duration, out any) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-"+childFlag, string(b))
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("child process killed after %v", timeout)
		}
		return fmt.Errorf("child process: %w", err)
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("child process output: %w", err)
	}
	return nil
}

func runIdle(cfg *config, res *Results) *table {
	o := harness.IdleOptions{Idle: cfg.idle, FormationTimeout: cfg.timeout, Settle: settleOptions(cfg)}
	t := &table{
		title:  fmt.Sprintf("idle: formed star cluster left alone for %s (own process)", stats.Duration(cfg.idle)),
		header: []string{"system", "N", "settled", "CPU-s", "CPU-s/30s", "RSS", "Go heap", "goroutines", "routers", "conn ends", "g/conn end", "bytes/peer/s", "status"},
	}
	var perRouter int
	for _, n := range cfg.idleSizes {
		for _, sys := range cfg.systems {
			progress("idle %s N=%d (%s)", sys, n, stats.Duration(cfg.idle))
			var r harness.IdleResult
			if err := inChild(childSpec{Kind: "idle", System: harness.System(sys), N: n, Idle: o}, o.FormationTimeout+o.Settle.Max+o.Idle+4*time.Minute, &r); err != nil {
				r = harness.IdleResult{System: harness.System(sys), N: n, Error: err.Error()}
			}
			res.Idle = append(res.Idle, r)
			ends, gpe := "-", "-"
			if r.System == harness.Mesh {
				ends = count(r.ConnectionEnds)
				if r.ConnectionEnds > 0 {
					gpe = fmt.Sprintf("%.2f", r.GoroutinesPerConnEnd)
				}
				perRouter = r.RouterGoroutines
			}
			t.add(sys, fmt.Sprint(n), settled(r.SettleSeconds, r.Settled), fmt.Sprintf("%.2f", r.CPUSeconds), fmt.Sprintf("%.2f", r.CPUPer30s),
				megabytes(r.RSSBytes), megabytes(int64(r.HeapBytes)), fmt.Sprint(r.Goroutines), fmt.Sprint(r.Routers),
				ends, gpe, stats.Count(r.BytesPerPeerPerSec), status(r.Converged, r.Error))
		}
	}
	t.note("settled: time from formation to the window: at least %s and, for mesh, until neither the number of connection ends nor the count of entries merged has changed for %s (at most %s). CPU: user+system of the whole process over the window. RSS: VmRSS at the end (MB = 10^6 bytes).",
		stats.Duration(o.Settle.Min), stats.Duration(o.Settle.Stable), stats.Duration(o.Settle.Max))
	if perRouter > 0 {
		t.note("g/conn end (mesh): (goroutines - goroutines before the routers - routers x %d) / connection ends, %d being what one router with one channel and no connection runs.", perRouter, perRouter)
	}
	return t
}

// settleOptions derives when idle and scale windows start from the flags.
func settleOptions(cfg *config) harness.SettleOptions {
	return harness.SettleOptions{Min: 3 * cfg.settle, Stable: 5 * cfg.settle, Max: max(cfg.settleMax, 3*cfg.settle)}
}

// settled describes how long a cluster took to settle after formation.
func settled(secs float64, ok bool) string {
	if !ok {
		return "not stable after " + stats.Seconds(secs)
	}
	return stats.Seconds(secs)
}

func megabytes(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

func runScale(cfg *config, res *Results) *table {
	o := harness.ScaleOptions{ConnLimit: cfg.scaleConnLimit, FormationTimeout: cfg.scaleTimeout, Settle: settleOptions(cfg), Idle: cfg.scaleIdle, Seed: 1}
	t := &table{
		title:  fmt.Sprintf("scale (mesh only): ConnLimit %d, each peer knows 2 random earlier peers, peer discovery on (own process)", o.ConnLimit),
		header: []string{"N", "formation", "start span", "known min/median", "settled", "RSS", "RSS/peer", "CPU-s idle", "CPU/peer", "bytes/peer/s", "conn ends", "goroutines", "status"},
	}
	if !has(cfg.systems, "mesh") {
		t.note("skipped: mesh is not among -systems")
		return t
	}
	for _, n := range cfg.scaleSizes {
		progress("scale mesh N=%d", n)
		var r harness.ScaleResult
		if err := inChild(childSpec{Kind: "scale", N: n, Scale: o}, o.FormationTimeout+o.Settle.Max+o.Idle+4*time.Minute, &r); err != nil {
			r = harness.ScaleResult{N: n, ConnLimit: o.ConnLimit, Error: err.Error()}
		}
		res.Scale = append(res.Scale, r)
		formed := stats.Seconds(r.FormationSeconds)
		if !r.Converged {
			formed = "> " + stats.Duration(o.FormationTimeout)
		}
		t.add(fmt.Sprint(n), formed, stats.Seconds(r.StartSpanSeconds), known(r.MinKnown, r.MedianKnown),
			settled(r.SettleSeconds, r.Settled), megabytes(r.RSSBytes), stats.Bytes(r.RSSPerPeerBytes), fmt.Sprintf("%.2f", r.CPUSeconds),
			fmt.Sprintf("%.2fms", r.CPUPerPeerMs), stats.Count(r.BytesPerPeerPerSec), count(r.ConnectionEnds),
			fmt.Sprint(r.Goroutines), status(r.Converged, r.Error))
	}
	t.note("settled as in the idle table. RSS/peer: (RSS at the end - RSS before the routers) / N. CPU: over a %s window once settled; CPU/peer is over the whole window.", stats.Duration(o.Idle))
	return t
}
