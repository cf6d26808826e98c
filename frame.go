package mesh

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/gossip-mesh/mesh/internal/gobint"
	"golang.org/x/crypto/nacl/secretbox"
)

// Framing after the handshake.
//
// Version 2 puts every message body in a frame of its own: a 4-byte
// big-endian length, then the body. Version 1 writes every message body as
// one gob []byte value on the connection's gob stream. With encryption the
// body is replaced by its NaCl secretbox, sealed with the session key and a
// nonce that carries the sender's direction and a per-direction counter; the
// size limit then applies to the sealed bytes.

const (
	// frameLenSize is the size of the version 2 length prefix.
	frameLenSize = 4
	// gobBytesOverhead bounds what a gob message holding a []byte adds
	// around the bytes themselves, after its own byte count: the type id,
	// the zero field delta and a length of at most nine bytes.
	gobBytesOverhead = 2 + 9
	// maxFrameOverhead bounds what framing and sealing add to a body: a
	// gob byte count and header (version 1) or a length prefix (version
	// 2), and the secretbox tag.
	maxFrameOverhead = 9 + gobBytesOverhead + secretbox.Overhead
	// frameGrowChunk is the first step by which a buffer for a frame too
	// large to be peeked grows; later steps double it. Growing as the bytes
	// arrive keeps a peer that announces a large frame and then stalls from
	// making us allocate the whole announced size.
	frameGrowChunk = 64 << 10
)

// effectiveMaxFrame turns a configured frame limit into the one used: the
// default for zero or less, and never more than a 4-byte length can express.
func effectiveMaxFrame(maxFrame int) int {
	if maxFrame <= 0 {
		return DefaultMaxFrameSize
	}
	if uint64(maxFrame) > math.MaxUint32 {
		return math.MaxUint32
	}
	return maxFrame
}

// frameWriter turns message bodies into their wire form for one direction of
// one connection. Frames must be produced in the order they are written to
// the connection, because each encrypted frame takes the next nonce. A
// frameWriter is not safe for concurrent use.
type frameWriter struct {
	v1       bool      // gob []byte messages instead of length-prefixed frames
	key      *[32]byte // session key; nil when the connection is not encrypted
	outbound bool      // we dialled the connection (the nonce direction bit)
	counter  uint64    // counter of the next sealed frame
	maxFrame int       // largest body allowed on the wire
	nonce    [24]byte  // scratch space for the current nonce
}

// newFrameWriter returns a writer for the given protocol version. key is the
// session key, or nil for a connection in clear; outbound tells whether this
// side dialled. The first sealed frame uses counter 0.
func newFrameWriter(version byte, key *[32]byte, outbound bool, maxFrame int) *frameWriter {
	return &frameWriter{
		v1:       version == 1,
		key:      key,
		outbound: outbound,
		maxFrame: effectiveMaxFrame(maxFrame),
	}
}

// appendFrame appends the wire form of body to dst and returns the extended
// slice. It allocates nothing when dst has room for the frame. body must not
// share memory with the spare capacity of dst. A body whose wire form would
// exceed the size limit is refused with an error wrapping ErrFrameTooLarge;
// dst is then returned unchanged and no nonce is used up.
func (w *frameWriter) appendFrame(dst, body []byte) ([]byte, error) {
	n := len(body)
	if w.key != nil {
		n += secretbox.Overhead
	}
	if n > w.maxFrame {
		return dst, fmt.Errorf("%w: outgoing message exceeds maximum size: %d > %d", ErrFrameTooLarge, n, w.maxFrame)
	}
	if w.v1 {
		if w.key == nil {
			return appendGobBytes(dst, body), nil
		}
		dst = appendGobBytesHeader(dst, n)
	} else {
		dst = binary.BigEndian.AppendUint32(dst, uint32(n))
		if w.key == nil {
			return append(dst, body...), nil
		}
	}
	makeNonce(&w.nonce, w.outbound, w.counter)
	w.counter++
	return secretbox.Seal(dst, body, &w.nonce, w.key), nil
}

// appendGobBytesHeader appends everything of a gob message holding an n-byte
// []byte value except the bytes themselves: the message byte count, the
// []byte type id, the zero field delta and n. It lets a sealed body be
// written straight after it, with no intermediate buffer.
func appendGobBytesHeader(dst []byte, n int) []byte {
	dst = gobint.AppendUint(dst, uint64(2+gobint.Len(uint64(n))+n))
	dst = append(dst, gobTypeBytes<<1, 0)
	return gobint.AppendUint(dst, uint64(n))
}

// maxRetainedFrameBuffer is the largest read buffer a frameReader keeps
// from one frame to the next; larger ones come from the shared pool.
const maxRetainedFrameBuffer = 4 << 10

// frameReader reads the message bodies the remote sends on one connection
// and hands them out in plaintext. The slice readFrame returns is only valid
// until the next call: the reader reuses its buffers, so in steady state it
// allocates nothing. After the first error the reader is dead and keeps
// returning that error. A frameReader is not safe for concurrent use.
type frameReader struct {
	br             frameSource
	stream         *streamReader // br after the handshake (see useStream)
	v1             bool          // gob []byte messages instead of length-prefixed frames
	key            *[32]byte     // session key; nil when the connection is not encrypted
	senderOutbound bool          // the remote dialled the connection (the nonce direction bit)
	counter        uint64        // counter of the next sealed frame
	maxFrame       int           // largest body accepted from the wire
	nonce          [24]byte      // scratch space for the current nonce
	hdr            [frameLenSize]byte
	buf            []byte // wire bytes of a frame read by copying
	out            []byte // plaintext of the last sealed frame
	prevSmall      bool   // the last frame was small
	err            error  // sticky error; non-nil once the reader is dead
}

// frameSource is what a frameReader reads from: the handshake's
// bufio.Reader, then a streamReader.
type frameSource interface {
	io.Reader
	io.ByteReader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Size() int
	Buffered() int
}

// useStream makes the reader read from rd through a streamReader once the
// handshake is over, starting with what the handshake's bufio.Reader had
// buffered past it; that reader is not used afterwards.
func (r *frameReader) useStream(rd io.Reader) {
	br, ok := r.br.(*bufio.Reader)
	if !ok {
		return
	}
	r.stream = newStreamReader(rd, br)
	r.br = r.stream
}

// drained reports whether the next frame must wait for bytes to arrive.
func (r *frameReader) drained() bool {
	return r.stream != nil && r.err == nil && r.stream.Buffered() == 0
}

// wait blocks until bytes arrive when none are buffered; an error stays
// in the stream, for readFrame to return. Before it blocks, it gives the
// frame buffers back to the pools: the connection may stay quiet for long
// (a heartbeat interval), and a mesh has thousands of them; taking
// buffers again from the pools when the next frame comes costs little.
func (r *frameReader) wait() {
	if r.drained() {
		r.releaseBuffers()
		_ = r.stream.fill(1)
	}
}

// releaseBuffers gives the frame buffers back to the pools. What readFrame
// returned must not be used afterwards.
func (r *frameReader) releaseBuffers() {
	putBuffer(r.buf)
	putBuffer(r.out)
	r.buf, r.out = nil, nil
}

// close gives back the buffers the reader holds; it must not be used
// afterwards.
func (r *frameReader) close() {
	if r.stream != nil {
		r.stream.close()
	}
	r.releaseBuffers()
	if r.err == nil {
		r.err = io.ErrClosedPipe
	}
}

// newFrameReader returns a reader of the frames arriving through br, for the
// given protocol version. key is the session key, or nil for a connection in
// clear; senderOutbound tells whether the remote (the sender of what we
// read) dialled the connection. The first sealed frame uses counter 0.
func newFrameReader(br frameSource, version byte, key *[32]byte, senderOutbound bool, maxFrame int) *frameReader {
	return &frameReader{
		br:             br,
		v1:             version == 1,
		key:            key,
		senderOutbound: senderOutbound,
		maxFrame:       effectiveMaxFrame(maxFrame),
	}
}

// readFrame returns the next message body in plaintext. It returns io.EOF
// when the stream ends cleanly between two frames, an error wrapping
// ErrFrameTooLarge for a frame over the size limit (checked before any
// buffer of that size exists) and an error wrapping ErrDecrypt for a sealed
// frame that fails to open.
func (r *frameReader) readFrame() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	b, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return b[:len(b):len(b)], nil
}

// next reads one frame's wire body and opens it when the connection is
// encrypted.
func (r *frameReader) next() ([]byte, error) {
	// Buffers a large frame needed are kept while large frames keep coming;
	// once a small one (a heartbeat at the latest) shows the burst is over,
	// they go back to the shared pool, so an idle connection holds little
	// memory.
	// The plaintext buffer goes back too when the stream has gone quiet:
	// the connection may stay so for long.
	if r.prevSmall {
		if cap(r.buf) > maxRetainedFrameBuffer {
			putBuffer(r.buf)
			r.buf = nil
		}
		if cap(r.out) > maxRetainedFrameBuffer || (r.stream != nil && r.stream.quiet()) {
			putBuffer(r.out)
			r.out = nil
		}
	}
	b, err := r.nextFrame()
	r.prevSmall = len(b) <= maxRetainedFrameBuffer
	return b, err
}

// nextFrame reads and opens one frame.
func (r *frameReader) nextFrame() ([]byte, error) {
	var wire []byte
	var err error
	if r.v1 {
		wire, err = r.readV1()
	} else {
		wire, err = r.readV2()
	}
	if err != nil || r.key == nil {
		return wire, err
	}
	makeNonce(&r.nonce, r.senderOutbound, r.counter)
	r.out = bufferPool.grow(r.out[:0], len(wire)-secretbox.Overhead)
	out, ok := secretbox.Open(r.out[:0], wire, &r.nonce, r.key)
	if !ok {
		hint := ""
		if r.counter == 0 {
			// Nothing sealed has opened yet: the keys differ.
			hint = "; it is the first sealed frame, so the two peers most likely have different passwords"
		}
		return nil, fmt.Errorf("%w: frame %d (%d bytes) failed authentication%s", ErrDecrypt, r.counter, len(wire), hint)
	}
	r.counter++
	r.out = out
	return out, nil
}

// readV2 reads one length-prefixed frame body.
func (r *frameReader) readV2() ([]byte, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if uint64(n) > uint64(r.maxFrame) {
		return nil, fmt.Errorf("%w: incoming message exceeds maximum size: %d > %d", ErrFrameTooLarge, n, r.maxFrame)
	}
	return r.readN(int(n))
}

// readN returns the next n bytes of the stream. When they fit in the
// buffered reader they are returned in place, without a copy; otherwise
// they are copied into r.buf, which grows as the bytes arrive.
func (r *frameReader) readN(n int) ([]byte, error) {
	if n <= r.br.Size() {
		b, err := r.br.Peek(n)
		if err != nil {
			return nil, noEOF(err)
		}
		_, _ = r.br.Discard(n) // cannot fail: the bytes are buffered
		return b, nil
	}
	buf := r.buf[:0]
	if cap(buf) < n && n > maxRetainedFrameBuffer {
		buf = getBuffer()
	}
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), max(cap(buf), frameGrowChunk)))
		}
		m, err := io.ReadFull(r.br, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, noEOF(err)
		}
	}
	r.buf = buf[:0]
	return buf, nil
}

// readV1 reads one gob message holding a []byte value and returns the bytes.
func (r *frameReader) readV1() ([]byte, error) {
	body, err := readGobMessage(r.br, r.maxFrame+gobBytesOverhead, r.buf[:0])
	if err != nil {
		return nil, err
	}
	r.buf = body[:0]
	p, err := parseGobBytesMessage(body)
	if err != nil {
		return nil, err
	}
	if len(p) > r.maxFrame {
		return nil, fmt.Errorf("%w: incoming message exceeds maximum size: %d > %d", ErrFrameTooLarge, len(p), r.maxFrame)
	}
	return p, nil
}

// noEOF reports a stream that ends inside a frame as io.ErrUnexpectedEOF,
// so that io.EOF only ever means a clean end between frames.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
