package mesh

import (
	"bufio"
	"io"
	"sync"
)

// streamReader buffers what a connection reads after the handshake, like a
// bufio.Reader, except that it holds no buffer of its own while the
// connection is quiet. A connection spends most of its life waiting for its
// next frame, and a mesh has thousands of them: reads land in a small array
// inside the reader, large enough for a heartbeat, and a buffer from a
// shared pool is taken when a frame does not fit there. That buffer is given
// back when every byte in it has been consumed and the last read was small;
// a stream whose reads return more than the small array holds, or fill the
// space they were given, keeps it (or takes one), so a busy connection
// still reads many frames per system call. A stream whose reads keep
// filling that buffer (a sender going as fast as we read) moves to a large
// one, which it gives back as soon as a read leaves part of it empty: the
// kernel then had nothing more to give.
//
// A streamReader is not safe for concurrent use.
type streamReader struct {
	rd io.Reader
	// buf is small[:] or a pooled buffer; the bytes not yet consumed are
	// buf[r:w].
	buf    []byte
	r, w   int
	pooled *[streamBufferSize]byte
	large  *[streamLargeSize]byte
	// busy is set when the last read returned more than the small array
	// holds, or filled the space it was given; filled when it filled that
	// space.
	busy, filled bool
	// fullReads counts the reads in a row that filled a pooled buffer.
	fullReads int
	err       error
	small     [streamSmallSize]byte
}

const (
	// streamSmallSize is the array a quiet connection reads into: a
	// heartbeat, sealed or not, and most small frames fit.
	streamSmallSize = 256
	// streamBufferSize is the size of the pooled buffers: frames up to this
	// size are returned in place; larger ones are copied out (see
	// frameReader.readN).
	streamBufferSize = readBufferSize
	// streamLargeSize is the size of the buffers a stream moves to after
	// streamFullReads reads in a row filled its pooled buffer (at least a
	// quarter of it each time). Reading 32 KiB per system call instead of
	// 4 lets a connection carrying a stream of sealed 1 KiB messages
	// deliver about a third more of them per second, and nearly twice as
	// many in clear (the reader is the slower end of such a stream).
	streamLargeSize = 32 << 10
	streamFullReads = 16
	// maxEmptyReads is how many reads in a row may return nothing without
	// an error before the stream is declared broken, as bufio does.
	maxEmptyReads = 100
)

var (
	streamBufferPool = sync.Pool{New: func() any { return new([streamBufferSize]byte) }}
	streamLargePool  = sync.Pool{New: func() any { return new([streamLargeSize]byte) }}
)

// newStreamReader returns a reader of rd that first returns what br has
// buffered (br may be nil). br is not used afterwards.
func newStreamReader(rd io.Reader, br *bufio.Reader) *streamReader {
	s := &streamReader{rd: rd}
	s.buf = s.small[:]
	if br == nil {
		return s
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n) // cannot fail: the bytes are buffered
		if n > len(s.small) {
			s.takeBuffer()
		}
		// The handshake reads little past itself: at most what one read
		// of br returned, which is no more than br's size.
		s.w = copy(s.buf, b)
	}
	return s
}

// quiet reports whether nothing is buffered and the last read was small:
// the next read will likely wait.
func (s *streamReader) quiet() bool { return s.r == s.w && !s.busy }

// Size returns the most bytes Peek can return.
func (s *streamReader) Size() int { return streamBufferSize }

// Buffered returns how many bytes can be read without reading rd.
func (s *streamReader) Buffered() int { return s.w - s.r }

// Peek returns the next n bytes (n at most Size) without consuming them.
// The slice is valid until the next call of any method.
func (s *streamReader) Peek(n int) ([]byte, error) {
	if n > s.w-s.r {
		if err := s.fill(n); err != nil {
			return nil, err
		}
	}
	return s.buf[s.r : s.r+n], nil
}

// Discard consumes n buffered bytes; n must be at most Buffered.
func (s *streamReader) Discard(n int) (int, error) {
	n = min(n, s.w-s.r)
	s.r += n
	return n, nil
}

// ReadByte reads one byte.
func (s *streamReader) ReadByte() (byte, error) {
	if s.r == s.w {
		if err := s.fill(1); err != nil {
			return 0, err
		}
	}
	c := s.buf[s.r]
	s.r++
	return c, nil
}

// Read reads up to len(p) bytes. Reads of at least Size bytes with nothing
// buffered go straight to rd. Frames that large gain nothing from a large
// buffer (they would only be copied out of it): such a read starts the
// count of full reads again, and gives a large buffer back.
func (s *streamReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) >= streamBufferSize {
		s.fullReads = 0
	}
	if s.r == s.w {
		if len(p) >= streamBufferSize && s.err == nil {
			if s.large != nil {
				s.release()
			}
			s.releaseIfQuiet()
			n, err := s.rd.Read(p)
			if err != nil {
				s.err = err
			}
			return n, err
		}
		if err := s.fill(1); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.buf[s.r:s.w])
	s.r += n
	return n, nil
}

// fill reads until at least need bytes (at most Size) are buffered. The
// bytes already read are kept even when it fails; the error is sticky.
func (s *streamReader) fill(need int) error {
	if s.r == s.w {
		s.r, s.w = 0, 0
		s.releaseIfQuiet()
	}
	switch {
	case s.pooled == nil && s.large == nil && (s.busy || need > len(s.buf)):
		// The frame does not fit the small array, or the last read
		// filled it: more is coming.
		s.takeBuffer()
	case s.pooled != nil && s.fullReads >= streamFullReads:
		s.takeLarge()
	case need > len(s.buf)-s.r:
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	for empty := 0; s.w-s.r < need; {
		if s.err != nil {
			return s.err
		}
		space := len(s.buf) - s.w
		n, err := s.rd.Read(s.buf[s.w:])
		s.w += n
		if n > 0 {
			s.filled = n == space
			s.busy = n > streamSmallSize || s.filled
			switch {
			case s.pooled == nil:
			case !s.filled:
				s.fullReads = 0
			case space >= streamBufferSize/4:
				s.fullReads++
			}
			empty = 0
		} else if err == nil {
			if empty++; empty >= maxEmptyReads {
				err = io.ErrNoProgress
			}
		}
		if err != nil {
			s.err = err
		}
	}
	return nil
}

// takeBuffer moves the unread bytes from the small array into a pooled
// buffer.
func (s *streamReader) takeBuffer() {
	p := streamBufferPool.Get().(*[streamBufferSize]byte)
	s.w = copy(p[:], s.buf[s.r:s.w])
	s.r = 0
	s.buf, s.pooled = p[:], p
}

// takeLarge moves the unread bytes from the pooled buffer into a large
// one.
func (s *streamReader) takeLarge() {
	p := streamLargePool.Get().(*[streamLargeSize]byte)
	s.w = copy(p[:], s.buf[s.r:s.w])
	s.r = 0
	streamBufferPool.Put(s.pooled)
	s.pooled, s.fullReads = nil, 0
	s.buf, s.large = p[:], p
}

// releaseIfQuiet gives the buffer back when nothing in it is unread and
// the last read was small (the connection has gone quiet), or, for a
// large buffer, did not fill it (the socket was emptied: we caught up).
func (s *streamReader) releaseIfQuiet() {
	if s.r == s.w && ((s.pooled != nil && !s.busy) || (s.large != nil && !s.filled)) {
		s.release()
	}
}

// release gives the pooled or large buffer back; nothing may be unread in
// it.
func (s *streamReader) release() {
	switch {
	case s.pooled != nil:
		streamBufferPool.Put(s.pooled)
		s.pooled = nil
	case s.large != nil:
		streamLargePool.Put(s.large)
		s.large = nil
	default:
		return
	}
	s.buf = s.small[:]
	s.r, s.w = 0, 0
	s.fullReads = 0
}

// close gives the pooled buffer back for good. The reader must not be used
// afterwards.
func (s *streamReader) close() {
	s.r, s.w = 0, 0
	s.release()
	if s.err == nil {
		s.err = io.ErrClosedPipe
	}
}

// The handshake reads through a bufio.Reader (its steps read a byte or a
// few at a time); readers are pooled, as each is needed only while a
// connection is set up.
var handshakeReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

func getHandshakeReader(rd io.Reader) *bufio.Reader {
	br := handshakeReaderPool.Get().(*bufio.Reader)
	br.Reset(rd)
	return br
}

func putHandshakeReader(br *bufio.Reader) {
	br.Reset(nil)
	handshakeReaderPool.Put(br)
}
