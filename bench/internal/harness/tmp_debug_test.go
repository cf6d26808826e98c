package harness

import (
	"sort"
	"testing"
	"time"

	"github.com/gossip-mesh/mesh"
)

func TestTmpStar(t *testing.T) {
	c, err := startMesh(meshOptions{N: 100, Bootstrap: Star})
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	for i := 0; i < 6; i++ {
		time.Sleep(5 * time.Second)
		conns := make([]int, c.size())
		isolated := 0
		errs := map[string]int{}
		for j, r := range c.routers {
			conns[j] = len(r.Ourself.Connections())
			if conns[j] == 0 {
				isolated++
				for _, ts := range r.ConnectionMaker.Status() {
					errs[ts.State+" "+ts.LastError]++
				}
			}
		}
		p := c.progress()
		sort.Ints(p)
		sort.Ints(conns)
		term := 0
		for _, r := range c.routers {
			term += mesh.NewStatus(r).TerminationCount
		}
		t.Logf("t=%ds isolated=%d conns min/med/max %d/%d/%d known min/med %d/%d bytes %d MB terminations %d hub conns %d", (i+1)*5, isolated, conns[0], conns[len(conns)/2], conns[len(conns)-1], p[0], p[len(p)/2], c.bytesSent()>>20, term, len(c.routers[0].Ourself.Connections()))
		for e, n := range errs {
			t.Logf("   %d x %s", n, e)
		}
	}
}
