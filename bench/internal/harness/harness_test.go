package harness

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestMeshTransportCountsBothDirections(t *testing.T) {
	tr := &meshTransport{}
	ln, err := tr.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	out, err := tr.DialContext(t.Context(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer in.Close()
	if _, err := out.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(in, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write(make([]byte, 23)); err != nil {
		t.Fatal(err)
	}
	if got := tr.Sent(); got != 123 {
		t.Errorf("Sent() = %d, want 123", got)
	}
	if l, ok := out.(interface{ SetLinger(int) error }); !ok {
		t.Error("counting connection hides SetLinger")
	} else if err := l.SetLinger(0); err != nil {
		t.Errorf("SetLinger: %v", err)
	}
}

func TestBcastDataMergeLeavesOperandsAlone(t *testing.T) {
	a := &bcastData{msgs: [][]byte{[]byte("a")}}
	b := &bcastData{msgs: [][]byte{[]byte("b")}}
	m := a.Merge(b).(*bcastData)
	if len(m.msgs) != 2 || len(a.msgs) != 1 || len(b.msgs) != 1 {
		t.Errorf("merge: got %d messages, operands now %d and %d", len(m.msgs), len(a.msgs), len(b.msgs))
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder()
	msg := []byte{0, 0, 0, 0, 0, 0, 0, 7, 'x'}
	if !r.record(msg) {
		t.Fatal("first record reported as seen before")
	}
	if r.record(msg) {
		t.Fatal("second record reported as new")
	}
	if _, ok := r.arrival(7); !ok {
		t.Fatal("arrival of id 7 unknown")
	}
	if _, ok := r.arrival(8); ok {
		t.Fatal("arrival of id 8 known")
	}
}

func TestLimitSmoke(t *testing.T) {
	res := Limit(1024, 200*time.Millisecond)
	if res.Error != "" || res.Msgs <= 0 {
		t.Fatalf("Limit: %+v", res)
	}
}

// TestFormationSmoke forms a five-member star of each system.
func TestFormationSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	for _, sys := range []System{Mesh, Memberlist} {
		res := Formation(sys, Star, 5, 20*time.Second)
		t.Logf("%+v", res)
		if !res.Converged || res.Error != "" {
			t.Errorf("%s: %+v", sys, res)
		}
		if res.BytesSent <= 0 {
			t.Errorf("%s: no bytes counted", sys)
		}
	}
}

// TestUpdateSmoke measures one connection change in stars of 5 and 20.
func TestUpdateSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	for _, n := range []int{5, 20} {
		res := Update(n, DefaultUpdateOptions)
		t.Logf("%+v", res)
		if res.Error != "" || !res.Quiet || res.Seconds <= 0 {
			t.Fatalf("N=%d: %+v", n, res)
		}
		if res.EntryBytesPerPeer <= 0 {
			t.Errorf("N=%d: the leaves received no entry for the change", n)
		}
	}
	if res := Update(1, DefaultUpdateOptions); res.Error == "" {
		t.Errorf("a star of one: %+v", res)
	}
}
