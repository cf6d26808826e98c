package mesh

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countingTransport is TCP that records when each address is dialled.
type countingTransport struct {
	TCPTransport
	mu    sync.Mutex
	dials map[string][]time.Time
}

func (c *countingTransport) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	c.mu.Lock()
	if c.dials == nil {
		c.dials = make(map[string][]time.Time)
	}
	c.dials[addr] = append(c.dials[addr], time.Now())
	c.mu.Unlock()
	return c.TCPTransport.DialContext(ctx, addr)
}

// times returns when addr was dialled.
func (c *countingTransport) times(addr string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.dials[addr]...)
}

// targetStatus returns the connection maker's status of addr.
func targetStatus(r *Router, addr string) (TargetStatus, bool) {
	for _, s := range r.ConnectionMaker.Status() {
		if s.Address == addr {
			return s, true
		}
	}
	return TargetStatus{}, false
}

// TestBadPeersLoggedOnceAndBackedOff dials, again and again, a peer that
// cannot be joined: each end logs the failure once, saying why, and the
// dialler backs off exponentially, or gives up when retrying cannot help.
func TestBadPeersLoggedOnceAndBackedOff(t *testing.T) {
	checkGoroutines(t)
	pwA := []byte("the first password of this mesh")
	pwB := []byte("a different password altogether")
	lowerMax := func(r *Router) { r.maxVersion = 1 }
	tests := []struct {
		name            string
		target, dialler Config
		dialPrepare     []func(*Router)
		sameName        bool   // the dialler uses the target's name
		self            bool   // the dialler dials itself
		targetLog       string // what the target logs, once
		diallerLog      string // what the dialler logs, once
		retried         bool
	}{
		{name: "wrong password", target: Config{Password: pwA}, dialler: Config{Password: pwB},
			targetLog: "most likely have different passwords", diallerLog: "most likely have different passwords", retried: true},
		{name: "encrypted and plaintext", target: Config{Password: pwA}, dialler: Config{},
			targetLog:  "password specified, but peer requested an unencrypted connection",
			diallerLog: "no password specified, but peer requested an encrypted connection", retried: true},
		{name: "plaintext and encrypted", target: Config{}, dialler: Config{Password: pwA},
			targetLog:  "no password specified, but peer requested an encrypted connection",
			diallerLog: "password specified, but peer requested an unencrypted connection", retried: true},
		{name: "protocol version", target: Config{ProtocolMinVersion: 2}, dialPrepare: []func(*Router){lowerMax},
			targetLog:  "remote version range [1,1] is incompatible with ours [2,2]",
			diallerLog: "remote version range [2,2] is incompatible with ours [1,1]", retried: true},
		{name: "name collision", sameName: true,
			targetLog: "peer name collision", diallerLog: "peer name collision"},
		{name: "ourselves", self: true, diallerLog: "cannot connect to ourself"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			target := startSecRouter(t, tt.target, 2*i+1)
			ct := &countingTransport{}
			tt.dialler.Transport = ct
			dn := 2*i + 2
			if tt.sameName {
				dn = 2*i + 1
			}
			dialler := startSecRouter(t, tt.dialler, dn, tt.dialPrepare...)
			addr := target.addr()
			if tt.self {
				addr = dialler.addr()
			}
			dialler.ConnectionMaker.InitiateConnections([]string{addr}, false)

			if tt.retried {
				waitFor(t, "four dials", func() bool { return len(ct.times(addr)) >= 4 })
				times := ct.times(addr)
				for j := 1; j < len(times); j++ {
					least := initialRetryDelay << (j - 1) * 3 / 4
					require.GreaterOrEqual(t, times[j].Sub(times[j-1]), least, "dial %d came too soon after dial %d", j+1, j)
				}
				s, ok := targetStatus(dialler.Router, addr)
				require.True(t, ok)
				require.GreaterOrEqual(t, s.Attempts, 4)
				require.Contains(t, s.LastError, tt.diallerLog)
			} else {
				waitFor(t, "the dialler to give up", func() bool {
					s, ok := targetStatus(dialler.Router, addr)
					return ok && s.State == "failed"
				})
				// Nothing is dialled again, however late it is.
				dialler.ConnectionMaker.launchDue(time.Now().Add(time.Hour))
				s, _ := targetStatus(dialler.Router, addr)
				require.Equal(t, "failed", s.State)
				require.Equal(t, 1, s.Attempts)
				require.Len(t, ct.times(addr), 1)
				require.Len(t, dialler.log.matching("not retrying", tt.diallerLog), 1, dialler.log.String())
			}

			ends := 1
			if tt.self {
				// Both ends are the dialler: once as the dialling side
				// (by address), once as the accepting side (by IP).
				ends = 2
			}
			waitFor(t, "the dialler's log lines", func() bool {
				return len(dialler.log.matching("connection shutting down", tt.diallerLog)) >= ends
			})
			lines := dialler.log.matching("connection shutting down", tt.diallerLog)
			require.Len(t, lines, ends, dialler.log.String())
			if tt.self {
				return
			}
			require.Contains(t, lines[0], addr, "the line names the address")
			waitFor(t, "the target's log line", func() bool {
				return len(target.log.matching("connection shutting down", tt.targetLog)) > 0
			})
			require.Len(t, target.log.matching("connection shutting down", tt.targetLog), 1, target.log.String())
		})
	}
}
