package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// slogCapture is a slog.Handler that keeps the records it is given.
type slogCapture struct {
	level slog.Level

	mu      sync.Mutex
	records []slog.Record
}

func (h *slogCapture) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *slogCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

func (h *slogCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *slogCapture) WithGroup(string) slog.Handler      { return h }

// matching returns the records whose message contains substr.
func (h *slogCapture) matching(substr string) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.records {
		if strings.Contains(r.Message, substr) {
			out = append(out, r)
		}
	}
	return out
}

func slogAttrs(r slog.Record) map[string]string {
	out := make(map[string]string)
	r.Attrs(func(a slog.Attr) bool {
		out[a.Key] = a.Value.String()
		return true
	})
	return out
}

// slogSource returns the base name of the file a record comes from.
func slogSource(r slog.Record) string {
	f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
	return filepath.Base(f.File)
}

// linesLogger is a plain Logger that keeps the lines it is given.
type linesLogger struct {
	mu    sync.Mutex
	lines []string
}

func (l *linesLogger) Printf(format string, args ...interface{}) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *linesLogger) matching(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

func TestNewSlogLoggerNil(t *testing.T) {
	require.Nil(t, NewSlogLogger(nil))
	r, err := NewRouter(Config{}, testPeerName(1), "silent", nil, NewSlogLogger(nil))
	require.NoError(t, err)
	r.logf("nobody hears %s", "this")
	r.logOnce("kind", "nor this")
	r.logLimited(logKey{kind: "key"}, "nor this")
}

func TestSlogPrintf(t *testing.T) {
	h := &slogCapture{}
	l := NewSlogLogger(slog.New(h))
	l.Printf("a line from %s", "the program")
	recs := h.matching("a line from the program")
	require.Len(t, recs, 1)
	require.Equal(t, slog.LevelInfo, recs[0].Level)
	require.Zero(t, recs[0].NumAttrs())
	require.Equal(t, "slog_test.go", slogSource(recs[0]))

	// Below the handler's level, nothing is logged.
	h = &slogCapture{level: slog.LevelWarn}
	NewSlogLogger(slog.New(h)).Printf("quiet")
	require.Empty(t, h.matching("quiet"))
}

// Lines about a connection carry our name and the remote's address and
// name, and the error when there is one; their source is the router's
// code.
func TestSlogConnectionAttributes(t *testing.T) {
	statusNoGoroutineLeak(t)
	h := &slogCapture{}
	start := func(i int, l Logger) *Router {
		r, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(i), fmt.Sprint("nick", i), nil, l)
		require.NoError(t, err)
		require.NoError(t, r.Start())
		t.Cleanup(func() { r.Stop() })
		return r
	}
	r1 := start(1, NewSlogLogger(slog.New(h)))
	r2 := start(2, nil)
	r2.ConnectionMaker.InitiateConnections([]string{r1.ListenAddr().String()}, false)
	statusEventually(t, "connection added", func() (bool, string) {
		return len(h.matching("connection added")) == 1, ""
	})
	c, ok := r1.Ourself.ConnectionTo(r2.Ourself.Name)
	require.True(t, ok)
	remoteAddr := c.(*LocalConnection).conn.RemoteAddr().String()

	ours := map[string]string{"peer": testPeerName(1).String(), "nickname": "nick1"}
	accepted := h.matching("connection accepted")
	require.Len(t, accepted, 1)
	require.Equal(t, slog.LevelInfo, accepted[0].Level)
	require.Equal(t, "router.go", slogSource(accepted[0]))
	require.Equal(t, map[string]string{"peer": ours["peer"], "nickname": "nick1", "remote_addr": remoteAddr}, slogAttrs(accepted[0]))

	added := h.matching("connection added")[0]
	require.Equal(t, slog.LevelInfo, added.Level)
	require.Equal(t, "router.go", slogSource(added))
	require.Equal(t, fmt.Sprintf("->[%s|%s(nick2)]: connection added", remoteAddr, testPeerName(2)), added.Message)
	require.Equal(t, map[string]string{
		"peer": ours["peer"], "nickname": "nick1",
		"remote_addr": remoteAddr, "remote_peer": testPeerName(2).String(), "remote_nickname": "nick2",
	}, slogAttrs(added))

	// When the other end goes, the error comes too.
	r2.Stop()
	statusEventually(t, "connection shutting down", func() (bool, string) {
		return len(h.matching("connection shutting down")) == 1, ""
	})
	down := h.matching("connection shutting down")[0]
	attrs := slogAttrs(down)
	require.Equal(t, remoteAddr, attrs["remote_addr"])
	require.Equal(t, testPeerName(2).String(), attrs["remote_peer"])
	require.NotEmpty(t, attrs["err"])
	require.Equal(t, "conn_errors.go", slogSource(down))
}

// A client that keeps failing its handshake from the same address is
// logged once, through either kind of logger.
func TestSlogRepeatedFailuresRateLimited(t *testing.T) {
	for _, structured := range []bool{true, false} {
		t.Run(fmt.Sprint("structured=", structured), func(t *testing.T) {
			statusNoGoroutineLeak(t)
			h, lines := &slogCapture{}, &linesLogger{}
			var l Logger = lines
			if structured {
				l = NewSlogLogger(slog.New(h))
			}
			r, err := NewRouter(Config{Host: "127.0.0.1"}, testPeerName(1), "target", nil, l)
			require.NoError(t, err)
			require.NoError(t, r.Start())
			t.Cleanup(func() { r.Stop() })
			for range 5 {
				conn, err := net.Dial("tcp", r.ListenAddr().String())
				require.NoError(t, err)
				_, err = io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n")
				require.NoError(t, err)
				// The router hangs up on the bad header.
				require.NoError(t, conn.SetReadDeadline(time.Now().Add(statusDeadline)))
				_, err = io.Copy(io.Discard, conn)
				var ne net.Error
				require.False(t, errors.As(err, &ne) && ne.Timeout(), "the router did not hang up")
				conn.Close()
			}
			// A connection leaves the router's pending set once it has
			// logged its end: then all five have.
			statusEventually(t, "every failed connection done", func() (bool, string) {
				r.mu.RLock()
				defer r.mu.RUnlock()
				return len(r.pending) == 0, fmt.Sprint(len(r.pending), " pending")
			})
			if !structured {
				require.Len(t, lines.matching("during handshake"), 1, "%q", lines.lines)
				return
			}
			recs := h.matching("during handshake")
			require.Len(t, recs, 1)
			require.Equal(t, slog.LevelWarn, recs[0].Level)
			attrs := slogAttrs(recs[0])
			require.True(t, strings.HasPrefix(attrs["remote_addr"], "127.0.0.1:"), attrs["remote_addr"])
			require.Contains(t, attrs["err"], "header")
		})
	}
}

// logOnce logs a line once a minute per kind and remote, whatever its
// text; logLimited once a minute per key. The memory of lines logged is
// bounded.
func TestLogOnceRateLimit(t *testing.T) {
	for _, structured := range []bool{true, false} {
		t.Run(fmt.Sprint("structured=", structured), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, lines := &slogCapture{}, &linesLogger{}
				var l Logger = lines
				if structured {
					l = NewSlogLogger(slog.New(h))
				}
				r, err := NewRouter(Config{}, testPeerName(1), "us", nil, l)
				require.NoError(t, err)
				count := func(substr string) int {
					if structured {
						return len(h.matching(substr))
					}
					return len(lines.matching(substr))
				}
				addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 6783}
				for range 3 {
					r.logOnce("drop", "->[10.0.0.1:6783] send queue full", addr)
				}
				require.Equal(t, 1, count("send queue full"))
				r.logOnce("drop", "->[10.0.0.1:6783] send queue full (again)", &net.TCPAddr{IP: addr.IP, Port: 40000})
				require.Equal(t, 1, count("send queue full"), "the same kind and IP address, whatever the text and port")
				r.logOnce("drop", "->[10.0.0.2:6783] send queue full", &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 6783})
				r.logOnce("other", "->[10.0.0.1:6783] send queue full", addr)
				require.Equal(t, 3, count("send queue full"), "another address, another kind")

				for i := range 3 {
					r.logLimited(logKey{kind: "peer-failing"}, fmt.Sprintf("attempt %d failed", i), addr)
				}
				require.Equal(t, 1, count("failed"), "logLimited limits by key, whatever the line")

				time.Sleep(repeatInterval - time.Millisecond)
				r.logOnce("drop", "->[10.0.0.1:6783] send queue full", addr)
				r.logLimited(logKey{kind: "peer-failing"}, "attempt 3 failed", addr)
				require.Equal(t, 3, count("send queue full"))
				require.Equal(t, 1, count("failed"))
				time.Sleep(time.Millisecond)
				r.logOnce("drop", "->[10.0.0.1:6783] send queue full", addr)
				r.logLimited(logKey{kind: "peer-failing"}, "attempt 4 failed", addr)
				require.Equal(t, 4, count("send queue full"), "a minute later")
				require.Equal(t, 2, count("failed"))

				if structured {
					for _, rec := range append(h.matching("send queue full"), h.matching("failed")...) {
						require.Equal(t, slog.LevelWarn, rec.Level)
					}
					require.Equal(t, "10.0.0.1:6783", slogAttrs(h.matching("attempt 4")[0])["remote_addr"])
				}

				for i := range 3 * maxRateLimitedLines {
					r.logOnce(fmt.Sprint("many", i%16), fmt.Sprint("line ", i), &net.TCPAddr{IP: net.IPv4(10, 1, byte(i>>8), byte(i))})
				}
				require.Equal(t, 16*maxLinesPerKind, count("line "), "each kind has room for so many addresses a minute")
				r.logger.mu.Lock()
				remembered := r.logger.limiter.len()
				r.logger.mu.Unlock()
				require.Equal(t, maxRateLimitedLines, remembered)
			})
		})
	}
}

// The plain Printf path prints exactly what it did before; the structured
// path turns the values a line is about into attributes.
func TestLogfArguments(t *testing.T) {
	lines := &linesLogger{}
	r, err := NewRouter(Config{}, testPeerName(1), "us", nil, lines)
	require.NoError(t, err)
	r.logf("->[%s] not retrying: %v", logAddr("10.0.0.9:6783"), ErrConnectToSelf)
	require.Equal(t, []string{"->[10.0.0.9:6783] not retrying: mesh: cannot connect to ourself"}, lines.lines)

	h := &slogCapture{}
	r, err = NewRouter(Config{}, testPeerName(1), "us", nil, NewSlogLogger(slog.New(h)))
	require.NoError(t, err)
	r.logf("->[%s] not retrying: %v", logAddr("10.0.0.9:6783"), ErrConnectToSelf)
	recs := h.matching("not retrying")
	require.Len(t, recs, 1)
	require.Equal(t, "->[10.0.0.9:6783] not retrying: mesh: cannot connect to ourself", recs[0].Message)
	require.Equal(t, map[string]string{
		"peer": testPeerName(1).String(), "nickname": "us",
		"remote_addr": "10.0.0.9:6783", "err": ErrConnectToSelf.Error(),
	}, slogAttrs(recs[0]))
	require.Equal(t, "slog_test.go", slogSource(recs[0]))

	// Lines below the handler's level are not logged.
	h = &slogCapture{level: slog.LevelWarn}
	r, err = NewRouter(Config{}, testPeerName(1), "us", nil, NewSlogLogger(slog.New(h)))
	require.NoError(t, err)
	r.logf("informational")
	r.logOnce("kind", "a warning")
	require.Empty(t, h.matching("informational"))
	require.Len(t, h.matching("a warning"), 1)
}
