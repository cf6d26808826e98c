package mesh

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// chunkReader returns its chunks one per Read, as a connection returns
// what has arrived.
type chunkReader struct {
	chunks [][]byte
	reads  int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if n == len(c.chunks[0]) {
		c.chunks = c.chunks[1:]
	} else {
		c.chunks[0] = c.chunks[0][n:]
	}
	return n, nil
}

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func TestStreamReaderQuietConnectionHoldsNoBuffer(t *testing.T) {
	// Small reads stay in the reader's own array.
	cr := &chunkReader{chunks: [][]byte{seq(20, 0), seq(30, 100)}}
	s := newStreamReader(cr, nil)
	b, err := s.Peek(20)
	require.NoError(t, err)
	require.Equal(t, seq(20, 0), b)
	_, _ = s.Discard(20)
	require.Nil(t, s.pooled)
	b, err = s.Peek(30)
	require.NoError(t, err)
	require.Equal(t, seq(30, 100), b)
	_, _ = s.Discard(30)
	require.Nil(t, s.pooled)
	_, err = s.Peek(1)
	require.ErrorIs(t, err, io.EOF)
}

func TestStreamReaderLargeFrameTakesAndReturnsBuffer(t *testing.T) {
	big := seq(3000, 7)
	// The frame arrives in pieces; the first fits the small array.
	cr := &chunkReader{chunks: [][]byte{big[:100], big[100:2000], big[2000:], seq(10, 1)}}
	s := newStreamReader(cr, nil)
	b, err := s.Peek(3000)
	require.NoError(t, err)
	require.Equal(t, big, b)
	require.NotNil(t, s.pooled)
	_, _ = s.Discard(3000)
	// The last read was large: the stream looks busy, the buffer stays.
	b, err = s.Peek(10)
	require.NoError(t, err)
	require.Equal(t, seq(10, 1), b)
	require.NotNil(t, s.pooled)
	_, _ = s.Discard(10)
	// Drained after a small read: the next read gives the buffer back.
	_, err = s.Peek(1)
	require.ErrorIs(t, err, io.EOF)
	require.Nil(t, s.pooled)
}

func TestStreamReaderBusyStreamReadsManyFramesPerRead(t *testing.T) {
	var stream []byte
	for i := range 100 {
		stream = append(stream, seq(40, byte(i))...)
	}
	cr := &chunkReader{chunks: [][]byte{stream}}
	s := newStreamReader(cr, nil)
	for i := range 100 {
		b, err := s.Peek(40)
		require.NoError(t, err)
		require.Equal(t, seq(40, byte(i)), b, "frame %d", i)
		_, _ = s.Discard(40)
	}
	// 4000 bytes: one read into the small array, one into a pooled buffer,
	// and one more once it is drained.
	require.LessOrEqual(t, cr.reads, 4)
}

// TestStreamReaderSustainedStreamMovesToLargeBuffer: a stream whose reads
// keep filling the pooled buffer moves to a large one, and reads many
// more frames per system call; once a read leaves the buffer part empty
// (we caught up), the large buffer goes back.
func TestStreamReaderSustainedStreamMovesToLargeBuffer(t *testing.T) {
	const frames = 10000 // of 40 bytes: 400,000 bytes
	var stream []byte
	for i := range frames {
		stream = append(stream, seq(40, byte(i))...)
	}
	cr := &chunkReader{chunks: [][]byte{stream, seq(10, 1)}}
	s := newStreamReader(cr, nil)
	sawLarge := false
	for i := range frames {
		b, err := s.Peek(40)
		require.NoError(t, err)
		require.Equal(t, seq(40, byte(i)), b, "frame %d", i)
		_, _ = s.Discard(40)
		sawLarge = sawLarge || s.large != nil
	}
	require.True(t, sawLarge)
	// With 4 KiB buffers only, this would take about 98 reads.
	require.Less(t, cr.reads, streamFullReads+2+len(stream)/streamLargeSize+2)
	b, err := s.Peek(10)
	require.NoError(t, err)
	require.Equal(t, seq(10, 1), b)
	_, _ = s.Discard(10)
	_, err = s.Peek(1)
	require.ErrorIs(t, err, io.EOF)
	require.True(t, s.large == nil, "the last read did not fill the buffer")
	require.Nil(t, s.pooled)
}

// TestStreamReaderLargeFramesKeepOrdinaryBuffer: frames larger than Size
// are read past the buffer, so they never make the stream take a large
// one, however full its reads.
func TestStreamReaderLargeFramesKeepOrdinaryBuffer(t *testing.T) {
	var stream []byte
	for i := range 64 {
		stream = append(stream, byte(i), byte(i), byte(i), byte(i))
		stream = append(stream, seq(8000, byte(i))...)
	}
	s := newStreamReader(&chunkReader{chunks: [][]byte{stream}}, nil)
	body := make([]byte, 8000)
	for i := range 64 {
		hdr, err := s.Peek(4)
		require.NoError(t, err)
		require.Equal(t, byte(i), hdr[0])
		_, _ = s.Discard(4)
		_, err = io.ReadFull(s, body)
		require.NoError(t, err)
		require.Equal(t, seq(8000, byte(i)), body, "frame %d", i)
		require.True(t, s.large == nil, "frame %d took a large buffer", i)
	}
}

func TestStreamReaderCarriesHandshakeBytes(t *testing.T) {
	rest := seq(50, 9)
	all := append(seq(10, 0), rest...)
	br := bufio.NewReaderSize(bytes.NewReader(all), 4096)
	hdr := make([]byte, 10)
	_, err := io.ReadFull(br, hdr)
	require.NoError(t, err)
	require.Equal(t, 50, br.Buffered())
	s := newStreamReader(bytes.NewReader(nil), br)
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, rest, got)

	// More bytes buffered than the small array holds.
	long := seq(1000, 3)
	br = bufio.NewReaderSize(bytes.NewReader(append([]byte{0}, long...)), 4096)
	_, err = br.ReadByte()
	require.NoError(t, err)
	s = newStreamReader(bytes.NewReader(seq(5, 200)), br)
	got, err = io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, append(long, seq(5, 200)...), got)
}

func TestStreamReaderReadAndReadByte(t *testing.T) {
	data := seq(10000, 0)
	s := newStreamReader(iotest.HalfReader(bytes.NewReader(data)), nil)
	c, err := s.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte(0), c)
	// A large read with bytes buffered returns those first.
	p := make([]byte, 8192)
	n, err := s.Read(p)
	require.NoError(t, err)
	require.Equal(t, data[1:1+n], p[:n])
	rest, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, data[1+n:], rest)
	// Errors stay.
	_, err = s.ReadByte()
	require.ErrorIs(t, err, io.EOF)
	_, err = s.Peek(3)
	require.ErrorIs(t, err, io.EOF)
}

func TestStreamReaderKeepsBytesBeforeError(t *testing.T) {
	boom := errors.New("boom")
	s := newStreamReader(iotest.DataErrReader(io.MultiReader(bytes.NewReader(seq(6, 1)), iotest.ErrReader(boom))), nil)
	b, err := s.Peek(6)
	require.NoError(t, err)
	require.Equal(t, seq(6, 1), b)
	_, _ = s.Discard(6)
	_, err = s.Peek(1)
	require.ErrorIs(t, err, boom)
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestStreamReaderNoProgress(t *testing.T) {
	s := newStreamReader(emptyReader{}, nil)
	_, err := s.Peek(1)
	require.ErrorIs(t, err, io.ErrNoProgress)
}

func TestStreamReaderFramesThroughFrameReader(t *testing.T) {
	// Sealed frames of every size around the buffer sizes, read back
	// through a stream that delivers a few bytes at a time, then all at
	// once.
	var key [32]byte
	key[0] = 1
	w := newFrameWriter(2, &key, true, 0)
	var wire []byte
	var bodies [][]byte
	for _, n := range []int{0, 1, 200, 255, 256, 300, 4000, 4096, 5000, 70000, 3, 4100} {
		body := seq(n, byte(n))
		var err error
		wire, err = w.appendFrame(wire, body)
		require.NoError(t, err)
		bodies = append(bodies, body)
	}
	for name, rd := range map[string]io.Reader{
		"one byte at a time": iotest.OneByteReader(bytes.NewReader(wire)),
		"half":               iotest.HalfReader(bytes.NewReader(wire)),
		"whole":              bytes.NewReader(wire),
	} {
		t.Run(name, func(t *testing.T) {
			r := newFrameReader(bufio.NewReaderSize(bytes.NewReader(nil), readBufferSize), 2, &key, true, 0)
			r.useStream(rd)
			for i, want := range bodies {
				r.wait()
				got, err := r.readFrame()
				require.NoError(t, err, "frame %d", i)
				require.Equal(t, len(want), len(got), "frame %d", i)
				require.True(t, bytes.Equal(want, got), "frame %d", i)
			}
			_, err := r.readFrame()
			require.ErrorIs(t, err, io.EOF)
			r.close()
		})
	}
}

// TestFrameReaderGivesBuffersBackBeforeWaiting: the buffers frames
// needed are kept while more bytes are buffered, and given back before
// the reader waits for the next bytes.
func TestFrameReaderGivesBuffersBackBeforeWaiting(t *testing.T) {
	key := &[32]byte{3}
	w := newFrameWriter(2, key, true, 0)
	var wire []byte
	for _, n := range []int{3000, 3000, 70000} {
		var err error
		wire, err = w.appendFrame(wire, seq(n, 1))
		require.NoError(t, err)
	}
	r := newFrameReader(bufio.NewReaderSize(bytes.NewReader(nil), readBufferSize), 2, key, true, 0)
	r.useStream(&chunkReader{chunks: [][]byte{wire}})
	for i := range 2 {
		r.wait()
		_, err := r.readFrame()
		require.NoError(t, err)
		require.NotNil(t, r.out, "the plaintext of a sealed frame")
		require.Positive(t, r.stream.Buffered(), "frame %d: more has arrived", i)
	}
	r.wait() // more is buffered: nothing to wait for, buffers kept
	require.NotNil(t, r.out)
	_, err := r.readFrame()
	require.NoError(t, err)
	require.NotNil(t, r.buf, "a frame larger than the stream's buffer is copied")
	require.Zero(t, r.stream.Buffered())
	r.wait() // nothing buffered: the buffers go back before the read
	require.Nil(t, r.buf)
	require.Nil(t, r.out)
	_, err = r.readFrame()
	require.ErrorIs(t, err, io.EOF)
}
