package mesh

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// Logger receives the router's log lines. *log.Logger satisfies it.
// Implementations must be safe for concurrent use.
type Logger interface {
	Printf(format string, args ...interface{})
}

// recordLogger is a Logger that also takes structured records: the router
// gives it each line with a level and attributes (see logAttrs) instead of
// calling Printf. NewSlogLogger returns one.
type recordLogger interface {
	Logger
	enabled(level slog.Level) bool
	// logRecord logs msg; pc is the program counter of the router's code
	// that logged it.
	logRecord(level slog.Level, pc uintptr, msg string, attrs []slog.Attr)
}

// routerLogger wraps the user's Logger: nil means silent, and repeated
// lines can be limited to one a minute.
type routerLogger struct {
	l   Logger
	rec recordLogger // l, when it takes records

	mu   sync.Mutex
	last map[string]time.Time
}

// repeatInterval is how often the same rate-limited line may be logged.
const repeatInterval = time.Minute

// maxRateLimitedLines bounds the memory of lines already logged.
const maxRateLimitedLines = 1024

func newRouterLogger(l Logger) *routerLogger {
	rec, _ := l.(recordLogger)
	return &routerLogger{l: l, rec: rec, last: make(map[string]time.Time)}
}

// logf logs a line at level Info. For a logger that takes records, the
// arguments that tell what the line is about (see logAttrs) also become
// attributes.
func (router *Router) logf(format string, args ...interface{}) {
	lg := router.logger
	switch {
	case lg.l == nil:
	case lg.rec == nil:
		lg.l.Printf(format, args...)
	case lg.rec.enabled(slog.LevelInfo):
		router.emit(slog.LevelInfo, fmt.Sprintf(format, args...), args)
	}
}

// logMsg logs msg at level Info; about holds what the line is about, as
// for logAttrs.
func (router *Router) logMsg(msg string, about ...interface{}) {
	if router.logger.l != nil {
		router.emit(slog.LevelInfo, msg, about)
	}
}

// emit hands a line to the user's logger. It is called straight from the
// router's logging methods, so that the record's source is their caller.
func (router *Router) emit(level slog.Level, msg string, about []interface{}) {
	lg := router.logger
	if lg.rec == nil {
		lg.l.Printf("%s", msg)
		return
	}
	if !lg.rec.enabled(level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:]) // skip Callers, emit and the logging method
	lg.rec.logRecord(level, pcs[0], msg, router.logAttrs(about))
}

// logOnce logs msg at level Warn unless the same line (under the same
// kind) was logged in the last minute; about holds what the line is
// about, as for logAttrs.
func (router *Router) logOnce(kind, msg string, about ...interface{}) {
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
	router.emit(slog.LevelWarn, msg, about)
}
