package mesh

import (
	"container/list"
	"fmt"
	"log/slog"
	"net"
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
// lines can be limited to one a minute (see logLimited).
type routerLogger struct {
	l   Logger
	rec recordLogger // l, when it takes records

	mu      sync.Mutex
	limiter logLimiter
}

// repeatInterval is how often the same rate-limited line may be logged.
const repeatInterval = time.Minute

// Bounds of rate-limited logging: the keys remembered in all; the lines of
// one kind logged a minute, whatever their keys, so that a remote able to
// make up keys (many addresses, made-up peer names) cannot flood the log;
// and the kinds remembered, which are constants of the code, far fewer.
const (
	maxRateLimitedLines = 1024
	maxLinesPerKind     = 128
	maxLogKinds         = 64
)

func newRouterLogger(l Logger) *routerLogger {
	rec, _ := l.(recordLogger)
	return &routerLogger{l: l, rec: rec, limiter: newLogLimiter()}
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

// logKey identifies a rate-limited line. Its parts are chosen by the
// router's code and never copied from text received from the network, so
// that a remote cannot make each of its lines new: a remote can vary only
// the fields that name it (its address, its peer name), and a kind logs at
// most maxLinesPerKind lines a minute whatever their keys.
type logKey struct {
	// kind says what happened: a constant of the caller's, or constants
	// joined.
	kind string
	// channel is a gossip channel registered on this router, or "".
	channel string
	// peer is the peer the line is about, or UnknownPeerName.
	peer PeerName
	// addr is the remote's IP address (see remoteIPKey) or an address this
	// router dials, or "".
	addr string
}

// logKeyFor returns the key of a line of the given kind about the values
// of about (as for logAttrs): the remote of the first *LocalConnection,
// net.Addr or logAddr (see LocalConnection.remoteKey and remoteIPKey), and
// the first PeerName. Other values, and the line's text, play no part.
func logKeyFor(kind string, about []interface{}) logKey {
	key := logKey{kind: kind}
	for _, a := range about {
		switch v := a.(type) {
		case *LocalConnection:
			if key.addr == "" && v != nil && v.conn != nil {
				key.addr = v.remoteKey()
			}
		case net.Addr:
			if key.addr == "" && v != nil {
				key.addr = remoteIPKey(v)
			}
		case logAddr:
			if key.addr == "" {
				key.addr = string(v)
			}
		case PeerName:
			if key.peer == UnknownPeerName {
				key.peer = v
			}
		}
	}
	return key
}

// logOnce logs msg at level Warn unless a line of the same kind about the
// same remote was logged in the last minute (or the kind has logged all it
// may this minute, see logLimiter); about holds what the line is
// about, as for logAttrs, and gives the key as logKeyFor does. The text of
// msg is not part of the key: lines that differ only in what a remote sent
// (a channel name, a destination) are limited together.
func (router *Router) logOnce(kind, msg string, about ...interface{}) {
	if router.logger.l == nil {
		return
	}
	ok, notice := router.logger.allow(logKeyFor(kind, about), time.Now())
	if notice != "" {
		router.emit(slog.LevelWarn, notice, nil)
	}
	if ok {
		router.emit(slog.LevelWarn, msg, about)
	}
}

// logLimited logs msg at level Warn unless a line under the same key was
// logged in the last minute or the key's kind has logged all it may this
// minute (see logLimiter); about holds what the line is about, as for
// logAttrs.
func (router *Router) logLimited(key logKey, msg string, about ...interface{}) {
	if router.logger.l == nil {
		return
	}
	ok, notice := router.logger.allow(key, time.Now())
	if notice != "" {
		router.emit(slog.LevelWarn, notice, nil)
	}
	if ok {
		router.emit(slog.LevelWarn, msg, about)
	}
}

// logForget forgets that a line under key was logged, so that the next
// one is logged at once: for instance the first failure to dial an
// address after a dial that succeeded.
func (router *Router) logForget(key logKey) {
	lg := router.logger
	if lg.l == nil {
		return
	}
	lg.mu.Lock()
	lg.limiter.forget(key)
	lg.mu.Unlock()
}

// allow runs the limiter: see logLimiter.allow.
func (lg *routerLogger) allow(key logKey, now time.Time) (ok bool, notice string) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	return lg.limiter.allow(key, now)
}

// logLimiter decides which rate-limited lines are logged. It does no I/O
// and reads no clock (the caller passes the time), and is not safe for
// concurrent use (routerLogger.mu guards it).
//
// A line is logged unless a line under the same key was logged in the last
// minute, or maxLinesPerKind lines of its kind were logged in the current
// minute of that kind (then a notice says so, once). The limiter remembers
// when each key was last logged, at most maxRateLimitedLines keys: those
// logged a minute ago or more are forgotten first (they would be logged
// anyway), and when the table is full of more recent ones, the one logged
// longest ago goes.
type logLimiter struct {
	lines map[logKey]*list.Element // of *limitedLine
	kinds map[string]*lineKind
}

// lineKind holds the keys of one kind, in the order they were last logged,
// and counts the kind's lines of the current minute.
type lineKind struct {
	order list.List // of *limitedLine, least recently logged first
	// window is when the kind's current minute began; logged counts its
	// lines since, noticed tells whether the notice was given.
	window  time.Time
	logged  int
	noticed bool
}

type limitedLine struct {
	key logKey
	at  time.Time
}

func newLogLimiter() logLimiter {
	return logLimiter{lines: make(map[logKey]*list.Element), kinds: make(map[string]*lineKind)}
}

// allow reports whether a line under key is logged at time now, and
// records it if so. notice, when not empty, is a line to log first: it
// says that the key's kind has logged as much as it may this minute.
func (l *logLimiter) allow(key logKey, now time.Time) (ok bool, notice string) {
	e, found := l.lines[key]
	if found && now.Sub(e.Value.(*limitedLine).at) < repeatInterval {
		return false, ""
	}
	k := l.kinds[key.kind]
	if k == nil {
		if len(l.kinds) >= maxLogKinds {
			l.pruneKinds(now)
			if len(l.kinds) >= maxLogKinds {
				return false, ""
			}
		}
		k = &lineKind{}
		l.kinds[key.kind] = k
	}
	if k.window.IsZero() || now.Sub(k.window) >= repeatInterval {
		k.window, k.logged, k.noticed = now, 0, false
	}
	if k.logged >= maxLinesPerKind {
		if !k.noticed {
			k.noticed = true
			notice = fmt.Sprintf("more than %d %q lines within a minute: the others are not logged until %s",
				maxLinesPerKind, key.kind, k.window.Add(repeatInterval).Format("15:04:05"))
		}
		return false, notice
	}
	k.logged++
	if found {
		e.Value.(*limitedLine).at = now
		k.order.MoveToBack(e)
		return true, ""
	}
	l.expire(k, now)
	if len(l.lines) >= maxRateLimitedLines {
		l.evictOldest()
	}
	l.lines[key] = k.order.PushBack(&limitedLine{key: key, at: now})
	return true, ""
}

// pruneKinds forgets the kinds that have no key and whose minute is over.
func (l *logLimiter) pruneKinds(now time.Time) {
	for name, k := range l.kinds {
		if k.order.Len() == 0 && now.Sub(k.window) >= repeatInterval {
			delete(l.kinds, name)
		}
	}
}

// expire forgets the keys of k logged a minute or more before now.
func (l *logLimiter) expire(k *lineKind, now time.Time) {
	for e := k.order.Front(); e != nil; e = k.order.Front() {
		if now.Sub(e.Value.(*limitedLine).at) < repeatInterval {
			return
		}
		l.remove(k, e)
	}
}

// evictOldest forgets the key logged longest ago. The kinds are few, so
// they are searched.
func (l *logLimiter) evictOldest() {
	var oldest *lineKind
	var at time.Time
	for _, k := range l.kinds {
		if k.order.Len() == 0 {
			continue
		}
		if t := k.order.Front().Value.(*limitedLine).at; oldest == nil || t.Before(at) {
			oldest, at = k, t
		}
	}
	if oldest != nil {
		l.remove(oldest, oldest.order.Front())
	}
}

// forget forgets key, if it is remembered.
func (l *logLimiter) forget(key logKey) {
	if e, ok := l.lines[key]; ok {
		l.remove(l.kinds[key.kind], e)
	}
}

// remove forgets the key of e, an element of k.
func (l *logLimiter) remove(k *lineKind, e *list.Element) {
	delete(l.lines, k.order.Remove(e).(*limitedLine).key)
}

// len returns the number of keys remembered.
func (l *logLimiter) len() int { return len(l.lines) }
