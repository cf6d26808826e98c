package harness

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/nacl/secretbox"
)

// LimitResult is what one loopback TCP connection carries when all the
// work is sealing, writing, reading and opening secretbox frames.
type LimitResult struct {
	Size       int     `json:"size"`
	Msgs       int64   `json:"msgs"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	Error      string  `json:"error,omitempty"`
}

// limitBufSize is the size of the buffered writer and reader; it matches
// how much mesh gathers before a write system call.
const limitBufSize = 256 << 10

// Limit measures, for d, how many messages of size bytes one goroutine can
// seal with NaCl secretbox (24-byte nonces from a counter) and write as
// length-prefixed frames through a bufio.Writer on a loopback TCP
// connection, while another reads and opens them. It is the ceiling for
// encrypted unicast on this machine.
func Limit(size int, d time.Duration) LimitResult {
	res := LimitResult{Size: size}
	msgs, secs, err := runLimit(size, d)
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

func runLimit(size int, d time.Duration) (int64, float64, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return 0, 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		acc <- accepted{c, err}
	}()
	out, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer out.Close()
	var in net.Conn
	select {
	case a := <-acc:
		if a.err != nil {
			return 0, 0, a.err
		}
		in = a.c
	case <-time.After(5 * time.Second):
		return 0, 0, errors.New("accept timed out")
	}
	defer in.Close()

	var received atomic.Int64
	recvErr := make(chan error, 1)
	go func() { recvErr <- openFrames(in, &key, &received) }()

	var stop atomic.Bool
	sendErr := make(chan error, 1)
	go func() { sendErr <- sealFrames(out, &key, size, &stop) }()

	time.Sleep(warmup(d))
	n0, t0 := received.Load(), time.Now()
	time.Sleep(d)
	n1, t1 := received.Load(), time.Now()
	stop.Store(true)
	var errs []error
	select {
	case err := <-sendErr:
		errs = append(errs, err)
	case <-time.After(10 * time.Second):
		errs = append(errs, errors.New("the sender did not stop within 10s"))
	}
	_ = out.Close()
	select {
	case err := <-recvErr:
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	case <-time.After(10 * time.Second):
		errs = append(errs, errors.New("the receiver did not stop within 10s"))
	}
	return n1 - n0, t1.Sub(t0).Seconds(), errors.Join(errs...)
}

// sealFrames writes sealed frames of size-byte messages until stop is set.
// Each frame is sealed straight into the writer's buffer, so the only
// copies are those of sealing and of the system call.
func sealFrames(conn net.Conn, key *[32]byte, size int, stop *atomic.Bool) error {
	w := bufio.NewWriterSize(conn, limitBufSize)
	msg := make([]byte, size)
	frameLen := 4 + size + secretbox.Overhead
	var spare []byte // for frames larger than the buffer
	var nonce [24]byte
	var counter uint64
	for !stop.Load() {
		counter++
		binary.BigEndian.PutUint64(nonce[16:], counter)
		if w.Available() < frameLen && w.Buffered() > 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		buf := w.AvailableBuffer()
		if cap(buf) < frameLen {
			buf = spare[:0]
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(size+secretbox.Overhead))
		buf = secretbox.Seal(buf, msg, &nonce, key)
		if cap(buf) > cap(spare) && w.Buffered() == 0 && len(buf) > w.Available() {
			spare = buf
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return w.Flush()
}

// openFrames reads and opens frames until the connection ends, counting
// them in n. Frames that fit the reader's buffer are opened from it
// without a copy; the plaintext goes to a reused buffer (secretbox cannot
// open in place).
func openFrames(conn net.Conn, key *[32]byte, n *atomic.Int64) error {
	r := bufio.NewReaderSize(conn, limitBufSize)
	var hdr [4]byte
	var body []byte  // for frames larger than the buffer
	var plain []byte // reused for every opened message
	var nonce [24]byte
	var counter uint64
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		l := int(binary.BigEndian.Uint32(hdr[:]))
		if l < secretbox.Overhead {
			return fmt.Errorf("frame of %d bytes is too short", l)
		}
		counter++
		binary.BigEndian.PutUint64(nonce[16:], counter)
		var box []byte
		inPlace := l <= r.Size()
		if inPlace {
			var err error
			if box, err = r.Peek(l); err != nil {
				return err
			}
		} else {
			if cap(body) < l {
				body = make([]byte, l)
			}
			box = body[:l]
			if _, err := io.ReadFull(r, box); err != nil {
				return err
			}
		}
		var ok bool
		if plain, ok = secretbox.Open(plain[:0], box, &nonce, key); !ok {
			return fmt.Errorf("frame %d failed to open", counter)
		}
		if inPlace {
			if _, err := r.Discard(l); err != nil {
				return err
			}
		}
		n.Add(1)
	}
}
