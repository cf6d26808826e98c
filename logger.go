package mesh

import (
	"sync"
	"time"
)

// Logger receives the router's log lines. *log.Logger satisfies it.
// Implementations must be safe for concurrent use.
type Logger interface {
	Printf(format string, args ...interface{})
}

// routerLogger wraps the user's Logger: nil means silent, and repeated
// lines can be limited to one a minute.
type routerLogger struct {
	l Logger

	mu   sync.Mutex
	last map[string]time.Time
}

// repeatInterval is how often the same rate-limited line may be logged.
const repeatInterval = time.Minute

// maxRateLimitedLines bounds the memory of lines already logged.
const maxRateLimitedLines = 1024

func newRouterLogger(l Logger) *routerLogger {
	return &routerLogger{l: l, last: make(map[string]time.Time)}
}

func (router *Router) logf(format string, args ...interface{}) {
	if router.logger.l == nil {
		return
	}
	router.logger.l.Printf(format, args...)
}

// logOnce logs msg unless the same line (under the same kind) was logged
// in the last minute.
func (router *Router) logOnce(kind, msg string) {
	lg := router.logger
	if lg.l == nil {
		return
	}
	key := kind + "\x00" + msg
	now := time.Now()
	lg.mu.Lock()
	if t, ok := lg.last[key]; ok && now.Sub(t) < repeatInterval {
		lg.mu.Unlock()
		return
	}
	if len(lg.last) >= maxRateLimitedLines {
		clear(lg.last)
	}
	lg.last[key] = now
	lg.mu.Unlock()
	lg.l.Printf("%s", msg)
}
