package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh/bench/internal/harness"
)

func parse(t *testing.T, args ...string) (*config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String(childFlag, "", "")
	return parseFlags(fs, args)
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.sizes, []int{10, 30, 60, 100, 200}) || cfg.duration != 5*time.Second || cfg.idle != 30*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	if !slices.Equal(cfg.scenarios, allScenarios) || !slices.Equal(cfg.systems, []string{"mesh", "memberlist"}) {
		t.Errorf("default lists: %v %v", cfg.scenarios, cfg.systems)
	}
}

func TestParseFlagsQuickKeepsExplicitValues(t *testing.T) {
	cfg, err := parse(t, "-quick", "-n", "5,7", "-scenarios", "unicast, formation,unicast")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.sizes, []int{5, 7}) {
		t.Errorf("-n given with -quick: got %v", cfg.sizes)
	}
	if cfg.duration != 500*time.Millisecond || cfg.idle != 2*time.Second {
		t.Errorf("-quick durations: %v %v", cfg.duration, cfg.idle)
	}
	if !slices.Equal(cfg.scenarios, []string{"unicast", "formation"}) {
		t.Errorf("scenarios: %v", cfg.scenarios)
	}
}

func TestParseFlagsRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"-scenarios", "formation,nope"},
		{"-systems", ""},
		{"-n", "10,x"},
		{"-n", "1"},
		{"-bootstrap", "mesh"},
		{"-duration", "0s"},
		{"extra"},
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := &table{title: "T", header: []string{"a", "b"}}
	tb.add("1", "2")
	tb.note("n %d", 3)
	var b strings.Builder
	if err := tb.print(&b, true); err != nil {
		t.Fatal(err)
	}
	want := "\n#### T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nn 3\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestEvaluateTargets(t *testing.T) {
	res := &Results{
		Formation: []harness.FormationResult{
			{System: harness.Mesh, Bootstrap: harness.Star, N: 60, Converged: true, Seconds: 0.5},
			{System: harness.Mesh, Bootstrap: harness.Ring, N: 60, Converged: true, Seconds: 1.5},
			{System: harness.Memberlist, Bootstrap: harness.Star, N: 60, Converged: true, Seconds: 9},
		},
		Broadcast: []harness.BroadcastResult{{System: harness.Mesh, N: 60, Sent: 20, Complete: 19, DeliveredPct: 99, P99Ms: -1}},
		Limit:     []harness.LimitResult{{Size: 1024, MsgsPerSec: 1000}},
		Unicast:   []harness.UnicastResult{{System: harness.Mesh, Size: 1024, Encrypted: true, MsgsPerSec: 600}},
	}
	got := make(map[string]string)
	for _, tg := range evaluateTargets(res) {
		got[tg.Name] = tg.Met
	}
	want := map[string]string{
		"formation N=60 star":     "yes",
		"formation N=60 ring":     "no",
		"broadcast p99 N=60":      "no",
		"broadcast delivery":      "no",
		"encrypted unicast 1 KiB": "yes",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: met %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("targets: %v", got)
	}
}

func TestUpdateTarget(t *testing.T) {
	r := func(n int, bytes float64) harness.UpdateResult {
		return harness.UpdateResult{N: n, EntryBytesPerPeer: bytes, Quiet: true}
	}
	for _, c := range []struct {
		rs   []harness.UpdateResult
		met  string
		none bool
	}{
		{rs: []harness.UpdateResult{r(200, 700), r(10, 670)}, met: "yes"},
		{rs: []harness.UpdateResult{r(10, 670), r(30, 900), r(200, 6000)}, met: "no"},
		{rs: []harness.UpdateResult{r(10, 670), {N: 200, EntryBytesPerPeer: 670}}, met: "no"}, // not quiet
		{rs: []harness.UpdateResult{r(10, 670), {N: 30, Error: "formation timed out"}}, met: "no"},
		{rs: []harness.UpdateResult{r(10, 670), r(30, 670)}, none: true}, // sizes too close to judge
		{none: true},
	} {
		tg, ok := updateTarget(c.rs)
		if ok == c.none || (ok && tg.Met != c.met) {
			t.Errorf("%+v: %+v %v", c.rs, tg, ok)
		}
	}
}
