// Command meshbench compares github.com/gossip-mesh/mesh with
// github.com/hashicorp/memberlist on one machine, over 127.0.0.1: how fast
// clusters form, how fast broadcasts spread, what one change of a
// connection costs mesh's peers, how much one connection carries, what an
// idle cluster costs, and how mesh scales to a thousand routers. See
// bench/README.md.
//
// Usage:
//
//	go run ./cmd/meshbench [-quick] [-scenarios formation,broadcast,...]
//	    [-systems mesh,memberlist] [-n 10,30,60,100,200] [-bootstrap star,ring]
//	    [-duration 5s] [-idle 30s] [-json FILE] [-markdown]
//
// Measurements that need clean CPU and memory figures (idle, scale) run in
// a child process: the command runs itself again with a hidden flag, and
// the child prints its result as JSON on its standard output.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// config is the parsed command line.
type config struct {
	scenarios      []string
	systems        []string
	sizes          []int
	bootstraps     []string
	duration       time.Duration
	idle           time.Duration
	idleSizes      []int
	scaleSizes     []int
	scaleConnLimit int
	scaleIdle      time.Duration
	timeout        time.Duration
	scaleTimeout   time.Duration
	jsonFile       string
	markdown       bool
	quick          bool

	// Broadcast and settle timings; -quick shortens them.
	bcastCount    int
	bcastInterval time.Duration
	settle        time.Duration
	settleMax     time.Duration
}

// allScenarios lists the scenarios in the order they run.
var allScenarios = []string{"formation", "broadcast", "update", "limit", "unicast", "idle", "scale"}

// childFlag is the hidden flag that makes the command a child process.
const childFlag = "child"

func main() {
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	child := fs.String(childFlag, "", "internal: run one measurement described by this JSON and print the result")
	cfg, err := parseFlags(fs, os.Args[1:])
	if err == flag.ErrHelp {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(2)
	}
	if *child != "" {
		os.Exit(runChild(*child))
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(1)
	}
}

// parseFlags parses args into a config. fs may already define flags of
// its own (the hidden child flag), which the usage text leaves out.
func parseFlags(fs *flag.FlagSet, args []string) (*config, error) {
	var (
		scenarios  = fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios: formation, broadcast, update, unicast, limit, idle, scale")
		systems    = fs.String("systems", "mesh,memberlist", "comma-separated systems: mesh, memberlist")
		sizes      = fs.String("n", "10,30,60,100,200", "cluster sizes of the formation, broadcast and update scenarios")
		bootstraps = fs.String("bootstrap", "star,ring", "formation bootstraps: star, ring")
		duration   = fs.Duration("duration", 5*time.Second, "measured length of each throughput run (unicast, limit)")
		idle       = fs.Duration("idle", 30*time.Second, "length of the idle window")
		idleSizes  = fs.String("idle-n", "30,60", "cluster sizes of the idle scenario")
		scaleSizes = fs.String("scale-n", "500,1000", "cluster sizes of the scale scenario (mesh only)")
		scaleLimit = fs.Int("scale-connlimit", 8, "ConnLimit of the scale scenario")
		scaleIdle  = fs.Duration("scale-idle", 10*time.Second, "idle window of the scale scenario")
		timeout    = fs.Duration("timeout", 60*time.Second, "formation timeout per run")
		scaleTO    = fs.Duration("scale-timeout", 120*time.Second, "formation timeout of the scale scenario")
		jsonFile   = fs.String("json", "", "write all results as JSON to this `file`")
		markdown   = fs.Bool("markdown", false, "print the tables as Markdown")
		quick      = fs.Bool("quick", false, "smoke run: small sizes and short durations (under a minute)")
		settle     = fs.Duration("settle", time.Second, "pause after formation before the broadcasts; idle and scale windows start at least 3 times as long after formation")
		settleMax  = fs.Duration("settle-max", time.Minute, "idle and scale: longest wait after formation for mesh's connections and topology to stop changing (for 5 times -settle)")
	)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: meshbench [flags]\n\nCompares mesh with hashicorp/memberlist on 127.0.0.1.\n\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == childFlag {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			if name != "" {
				name = " " + name
			}
			fmt.Fprintf(out, "  -%s%s\n    \t%s", f.Name, name, usage)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(out)
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		// Shorter everything, unless given explicitly.
		quickDefaults := map[string]string{
			"n": "10,30", "duration": "500ms", "idle": "2s", "idle-n": "10",
			"scale-n": "50", "scale-idle": "2s", "timeout": "10s", "scale-timeout": "20s", "settle": "300ms", "settle-max": "5s",
		}
		for name, v := range quickDefaults {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	cfg := &config{
		duration: *duration, idle: *idle, scaleConnLimit: *scaleLimit, scaleIdle: *scaleIdle,
		timeout: *timeout, scaleTimeout: *scaleTO, jsonFile: *jsonFile, markdown: *markdown, quick: *quick,
		bcastCount: 20, bcastInterval: 100 * time.Millisecond, settle: *settle, settleMax: *settleMax,
	}
	if *quick {
		cfg.bcastCount, cfg.bcastInterval = 10, 50*time.Millisecond
	}
	var err error
	if cfg.scenarios, err = parseNames(*scenarios, allScenarios); err != nil {
		return nil, fmt.Errorf("-scenarios: %w", err)
	}
	if cfg.systems, err = parseNames(*systems, []string{"mesh", "memberlist"}); err != nil {
		return nil, fmt.Errorf("-systems: %w", err)
	}
	if cfg.bootstraps, err = parseNames(*bootstraps, []string{"star", "ring"}); err != nil {
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	for _, l := range []struct {
		name string
		s    string
		min  int
		dst  *[]int
	}{
		{"-n", *sizes, 2, &cfg.sizes},
		{"-idle-n", *idleSizes, 2, &cfg.idleSizes},
		{"-scale-n", *scaleSizes, 2, &cfg.scaleSizes},
	} {
		if *l.dst, err = parseSizes(l.s, l.min); err != nil {
			return nil, fmt.Errorf("%s: %w", l.name, err)
		}
	}
	switch {
	case cfg.duration <= 0 || cfg.idle <= 0 || cfg.scaleIdle <= 0:
		return nil, fmt.Errorf("-duration, -idle and -scale-idle must be positive")
	case cfg.settle < 0 || cfg.settleMax < 0:
		return nil, fmt.Errorf("-settle and -settle-max must not be negative")
	case cfg.timeout <= 0 || cfg.scaleTimeout <= 0:
		return nil, fmt.Errorf("-timeout and -scale-timeout must be positive")
	case cfg.scaleConnLimit < 1:
		return nil, fmt.Errorf("-scale-connlimit must be at least 1")
	}
	return cfg, nil
}

// parseNames splits a comma-separated list and checks every name is one
// of valid; duplicates are dropped, the order is kept.
func parseNames(s string, valid []string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ok := false
		for _, v := range valid {
			ok = ok || v == f
		}
		if !ok {
			return nil, fmt.Errorf("unknown name %q (want one of %s)", f, strings.Join(valid, ", "))
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list")
	}
	return out, nil
}

// parseSizes parses a comma-separated list of integers, each at least
// lowest.
func parseSizes(s string, lowest int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		if n < lowest {
			return nil, fmt.Errorf("%d is below %d", n, lowest)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list")
	}
	return out, nil
}

// has reports whether list holds name.
func has(list []string, name string) bool {
	for _, x := range list {
		if x == name {
			return true
		}
	}
	return false
}
