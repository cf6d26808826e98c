package harness

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// UnicastResult is the outcome of one unicast throughput run.
type UnicastResult struct {
	System    System `json:"system"`
	Size      int    `json:"size"`
	Encrypted bool   `json:"encrypted"`
	// Msgs and Seconds are the messages the receiver got during the
	// measurement window and its length.
	Msgs       int64   `json:"msgs"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	Error      string  `json:"error,omitempty"`
}

// warmup is the part of a throughput run that is not measured.
func warmup(d time.Duration) time.Duration { return min(500*time.Millisecond, d/4) }

// routeTimeout bounds the wait for two members to see each other.
const routeTimeout = 10 * time.Second

// Unicast connects two members and measures, for d, how many messages of
// size bytes one goroutine gets through to the other. mesh: GossipUnicast
// in a loop (it blocks while the send queue is full), counted in the
// receiver's OnGossipUnicast; memberlist: SendReliable in a loop, counted
// in the receiver's NotifyMsg. Rates are per second of the window, MB is
// 10^6 bytes of payload.
func Unicast(sys System, size int, encrypted bool, d time.Duration) UnicastResult {
	res := UnicastResult{System: sys, Size: size, Encrypted: encrypted}
	c, err := startCluster(clusterSpec{System: sys, N: 2, Bootstrap: Star, Encrypted: encrypted})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() {
		if err := c.stop(); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}()
	if _, ok := waitFormed(c, routeTimeout); !ok {
		res.Error = "the two members did not see each other"
		return res
	}
	var (
		send     func(msg []byte) error
		received func() int64
	)
	switch cl := c.(type) {
	case *meshCluster:
		dst := cl.routers[1].Ourself.Name
		deadline := time.Now().Add(routeTimeout)
		for {
			if _, ok := cl.routers[0].Routes.Unicast(dst); ok {
				break
			}
			if time.Now().After(deadline) {
				res.Error = "no unicast route between the two routers"
				return res
			}
			time.Sleep(time.Millisecond)
		}
		g := cl.gossips[0]
		send = func(msg []byte) error { return g.GossipUnicast(dst, msg) }
		counter, ok := cl.gossipers[1].(*benchGossiper)
		if !ok {
			res.Error = "unexpected gossiper type"
			return res
		}
		received = func() int64 { n, _ := counter.received(); return n }
	case *mlCluster:
		var to *memberlist.Node
		for _, m := range cl.nodes[0].Members() {
			if m.Name == "n1" {
				to = m
			}
		}
		if to == nil {
			res.Error = "memberlist node n1 not found"
			return res
		}
		m := cl.nodes[0]
		send = func(msg []byte) error { return m.SendReliable(to, msg) }
		dl := cl.delegates[1]
		received = dl.msgs.Load
	}
	msgs, secs, err := measure(d, size, send, received)
	res.Msgs, res.Seconds = msgs, secs
	if secs > 0 {
		res.MsgsPerSec = float64(msgs) / secs
		res.MBPerSec = float64(msgs) * float64(size) / secs / 1e6
	}
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// measure runs send in a loop on one goroutine for d and returns how many
// messages received counted after the warm-up, and over how long.
func measure(d time.Duration, size int, send func([]byte) error, received func() int64) (int64, float64, error) {
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i)
	}
	var stop atomic.Bool
	errc := make(chan error, 1)
	go func() {
		var err error
		for !stop.Load() {
			if err = send(msg); err != nil {
				break
			}
		}
		errc <- err
	}()
	time.Sleep(warmup(d))
	n0, t0 := received(), time.Now()
	time.Sleep(d)
	n1, t1 := received(), time.Now()
	stop.Store(true)
	var err error
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		err = errors.New("the sender did not stop within 30s")
	}
	if err != nil {
		err = fmt.Errorf("send: %w", err)
	}
	return n1 - n0, t1.Sub(t0).Seconds(), err
}
