package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"
)

// NewSlogLogger returns a Logger that writes to l: each line the router
// logs becomes a record whose message is the line and whose attributes say
// where it comes from and what it is about:
//
//   - "peer" and "nickname": this router's name and nickname;
//   - "remote_addr": the address of the other end, for lines about a
//     connection or an address being dialled;
//   - "remote_peer" and "remote_nickname": the peer at the other end of
//     the connection, once its handshake has told;
//   - "err": the error, for lines that report one.
//
// Lines that the router limits to one a minute for the same failure (a
// peer that keeps failing its handshake or is refused after it, a failed
// dial, errors of a Gossiper, messages dropped for want of room, accept
// errors) have level Warn; every other line has level Info. The record's
// source is the router's code that logged it.
//
// Calls to Printf, by programs that share the Logger, log at Info with no
// attributes. A nil l returns nil, which means silent.
func NewSlogLogger(l *slog.Logger) Logger {
	if l == nil {
		return nil
	}
	return &slogLogger{l: l}
}

// slogLogger is the Logger NewSlogLogger returns.
type slogLogger struct {
	l *slog.Logger
}

var _ recordLogger = (*slogLogger)(nil)

// Printf logs the formatted line at Info.
func (s *slogLogger) Printf(format string, args ...interface{}) {
	if !s.enabled(slog.LevelInfo) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(2, pcs[:]) // our caller
	s.logRecord(slog.LevelInfo, pcs[0], fmt.Sprintf(format, args...), nil)
}

func (s *slogLogger) enabled(level slog.Level) bool {
	return s.l.Enabled(context.Background(), level)
}

func (s *slogLogger) logRecord(level slog.Level, pc uintptr, msg string, attrs []slog.Attr) {
	r := slog.NewRecord(time.Now(), level, msg, pc)
	r.AddAttrs(attrs...)
	_ = s.l.Handler().Handle(context.Background(), r)
}

// logAddr is a remote address given as a string in a log line's
// arguments: it prints as the string, and tells the logger what it is.
type logAddr string

// logAttrs returns the attributes of a log line: ours, then those of the
// values it is about, which may be a *LocalConnection, a net.Addr or a
// logAddr (the remote address), or an error. Other values are ignored; for
// each attribute the first value that gives it wins.
func (router *Router) logAttrs(about []interface{}) []slog.Attr {
	attrs := make([]slog.Attr, 0, 6)
	if o := router.Ourself; o != nil {
		attrs = append(attrs, slog.String("peer", o.Name.String()), slog.String("nickname", o.NickName))
	}
	var addr, peer, err bool
	for _, a := range about {
		switch v := a.(type) {
		case *LocalConnection:
			if !addr && v.conn != nil && v.conn.RemoteAddr() != nil {
				attrs = append(attrs, slog.String("remote_addr", v.conn.RemoteAddr().String()))
				addr = true
			}
			// The connection's own goroutines log it, or others once it
			// is registered: either way the handshake's fields are set.
			if !peer && v.remoteName != UnknownPeerName {
				attrs = append(attrs, slog.String("remote_peer", v.remoteName.String()), slog.String("remote_nickname", v.remoteNick))
				peer = true
			}
		case net.Addr:
			if !addr && v != nil {
				attrs = append(attrs, slog.String("remote_addr", v.String()))
				addr = true
			}
		case logAddr:
			if !addr {
				attrs = append(attrs, slog.String("remote_addr", string(v)))
				addr = true
			}
		case error:
			if !err && v != nil {
				attrs = append(attrs, slog.String("err", v.Error()))
				err = true
			}
		}
	}
	return attrs
}
