package meshconn

import (
	"fmt"
	"testing"
)

// BenchmarkWriteToReadFrom measures one datagram written by a Peer and
// read by another, over a net that delivers unicasts directly, so that
// only meshconn's own costs are counted.
func BenchmarkWriteToReadFrom(b *testing.B) {
	for _, size := range []int{64, 8 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			n := newFakeNet(b)
			src, dst := n.join(nameA, 1), n.join(nameB, 2)
			payload := make([]byte, size)
			buf := make([]byte, size)
			to := MeshAddr{PeerName: nameB}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := src.WriteTo(payload, to); err != nil {
					b.Fatal(err)
				}
				if got, _, err := dst.ReadFrom(buf); err != nil || got != size {
					b.Fatalf("read %d bytes, %v", got, err)
				}
			}
		})
	}
}
