package mesh

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/gossip-mesh/mesh/internal/gobint"
	"github.com/stretchr/testify/require"
)

// wireTopology is a topology message found in the vectors.
type wireTopology struct {
	frame   string
	payload []byte
	want    []peerUpdate // nil when the vector does not describe it
	sender  string
}

// vectorTopologies returns the payload of every topology gossip message in
// the vectors, with its contents when the vector lists them.
func vectorTopologies(t testing.TB) []wireTopology {
	t.Helper()
	var out []wireTopology
	for _, f := range vectorFrames(t) {
		m, err := parseGossipMessage(f.body)
		if err != nil || m.Channel != "topology" {
			continue
		}
		w := wireTopology{frame: f.String(), payload: m.Payload, sender: f.sender}
		if v, ok := f.want["topology"]; ok {
			w.want = wantTopology(t, v)
		}
		out = append(out, w)
	}
	require.Greater(t, len(out), 30)
	return out
}

// wantTopology converts a vector's readable topology list.
func wantTopology(t testing.TB, v any) []peerUpdate {
	t.Helper()
	list := v.([]any)
	out := make([]peerUpdate, 0, len(list))
	for _, x := range list {
		p := x.(map[string]any)
		var u peerUpdate
		var err error
		u.Name, err = PeerNameFromString(p["name"].(string))
		require.NoError(t, err)
		u.NickName = p["nickname"].(string)
		uid, err := strconv.ParseUint(p["uid"].(string), 10, 64)
		require.NoError(t, err)
		u.UID = PeerUID(uid)
		u.Version = uint64(p["version"].(float64))
		u.ShortID = PeerShortID(p["short_id"].(float64))
		u.HasShortID = p["has_short_id"].(bool)
		for _, y := range p["connections"].([]any) {
			c := y.(map[string]any)
			name, err := PeerNameFromString(c["name"].(string))
			require.NoError(t, err)
			u.Connections = append(u.Connections, connectionSummary{
				Name:          name,
				RemoteTCPAddr: c["remote_tcp_addr"].(string),
				Outbound:      c["outbound"].(bool),
				Established:   c["established"].(bool),
			})
		}
		out = append(out, u)
	}
	return out
}

// testLimits are generous limits for the vectors.
var testLimits = topologyLimits{MaxPeers: 100, MaxConnections: 100}

func TestTopologyVectors(t *testing.T) {
	described := 0
	for _, w := range vectorTopologies(t) {
		t.Run(w.frame, func(t *testing.T) {
			peers, err := decodeTopology(w.payload, testLimits)
			require.NoError(t, err)
			require.NotEmpty(t, peers)
			if w.want != nil {
				described++
				require.Equal(t, w.want, peers)
			}
			// Re-encoding reproduces the sender's bytes exactly.
			require.Equal(t, w.payload, appendTopology(nil, peers))
			require.GreaterOrEqual(t, topologySizeBound(peers), len(w.payload))
			// Strings do not alias the input.
			clone := bytes.Clone(w.payload)
			peers2, err := decodeTopology(clone, testLimits)
			require.NoError(t, err)
			clear(clone)
			require.Equal(t, peers, peers2)
		})
	}
	require.Greater(t, described, 20)
}

func TestTopologySizeBound(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		peers := make([]peerUpdate, 1+rnd.IntN(2*maxPeersPerTopologyMessage))
		for i := range peers {
			p := &peers[i]
			p.Name = PeerName(rnd.Uint64() & (1<<48 - 1))
			p.NickName = strings.Repeat("n", rnd.IntN(300))
			p.UID, p.Version = PeerUID(rnd.Uint64()), rnd.Uint64()
			p.ShortID, p.HasShortID = PeerShortID(rnd.Uint64()), rnd.IntN(2) == 0
			for range rnd.IntN(20) {
				p.Connections = append(p.Connections, connectionSummary{
					Name:          PeerName(rnd.Uint64() & (1<<48 - 1)),
					RemoteTCPAddr: strings.Repeat("a", rnd.IntN(300)),
					Outbound:      rnd.IntN(2) == 0, Established: rnd.IntN(2) == 0,
				})
			}
		}
		size := 0
		for u := peers; len(u) > 0; {
			n := min(len(u), maxPeersPerTopologyMessage)
			size += len(appendTopology(nil, u[:n]))
			u = u[n:]
		}
		require.GreaterOrEqual(t, topologySizeBound(peers), size)
	}
}

func TestAppendTopologyProbe(t *testing.T) {
	vs := loadVectors(t)
	tests := []struct {
		scenario string
		peers    []peerUpdate
	}{
		{"v2-plain-probe-dials", []peerUpdate{{
			peerSummary: peerSummary{Name: 0x020000000099, NickName: "probe", UID: 0x1122334455667788, Version: 1, ShortID: 153, HasShortID: true},
			Connections: []connectionSummary{{Name: 0x020000000001, RemoteTCPAddr: "127.0.0.1:46025", Outbound: true, Established: true}},
		}}},
		{"topology-merge", []peerUpdate{{
			peerSummary: peerSummary{Name: 0x020000000099, NickName: "probe", UID: 0x1122334455667788, Version: 1, ShortID: 153, HasShortID: true},
			Connections: []connectionSummary{
				{Name: 0x020000000001, RemoteTCPAddr: "127.0.0.1:39821", Outbound: true, Established: true},
				{Name: 0x020000000077, RemoteTCPAddr: "127.0.0.1:9", Outbound: true, Established: true},
			},
		}, {
			peerSummary: peerSummary{Name: 0x020000000001, NickName: "old-weaveA", UID: 1, Version: 100, ShortID: 7, HasShortID: true},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			s := vs.scenario(t, tt.scenario)
			var frame []byte
			for _, v := range s.Vectors {
				if v.Sender == "probe" && strings.HasPrefix(v.Name, "probe-topology") {
					frame = v.bytes(t)[4:]
				}
			}
			m, err := parseGossipMessage(frame)
			require.NoError(t, err)
			require.Equal(t, m.Payload, appendTopology(nil, tt.peers))
			// And the whole frame.
			got := appendGossipMessage(nil, &gossipMessage{Tag: tagGossip, Channel: "topology", Src: 0x020000000099,
				Payload: appendTopology(nil, tt.peers)})
			require.Equal(t, frame, got)
		})
	}
}

func TestAppendTopologyPlaceholder(t *testing.T) {
	// A placeholder is a peerSummary holding only NameByte, and an empty
	// connection list is still sent.
	got := appendTopology(nil, []peerUpdate{{peerSummary: peerSummary{Name: 0x020000000077}}})
	want := topoPeerSummaryDef + "\x0b\xff\x82\x01\x06\x02\x00\x00\x00\x00\x77\x00" +
		topoConnSliceDef + topoConnSummaryDef + "\x04\xff\x86\x00\x00"
	require.Equal(t, []byte(want), got)
	require.Empty(t, appendTopology(nil, nil))
	peers, err := decodeTopology(nil, testLimits)
	require.NoError(t, err)
	require.Empty(t, peers)
}

// Types with the field names of weave's topology structs, for
// encoding/gob.
type (
	wirePeerSummary struct {
		NameByte   []byte
		NickName   string
		UID        PeerUID
		Version    uint64
		ShortID    PeerShortID
		HasShortID bool
	}
	wireConnectionSummary struct {
		NameByte      []byte
		RemoteTCPAddr string
		Outbound      bool
		Established   bool
	}
	// Another version of the structs: fields in another order, fields
	// missing, extra fields of every basic kind.
	wirePeerSummaryV2 struct {
		Score      float64
		HasShortID bool
		Extra      string
		Version    uint64
		NameByte   []byte
		Blob       []byte
		Count      int
		Ratio      complex128
		UID        PeerUID
		Flag       bool
		NickName   string
	}
	// gobFiller is encoded first to move the type ids gob assigns.
	gobFiller struct {
		A map[int]string
		B []float64
	}
	wireConnectionSummaryV2 struct {
		Established   bool
		Weight        int32
		RemoteTCPAddr string
		NameByte      []byte
		Note          string
	}
)

// testTopology returns n peers with c connections each.
func testTopology(n, c int) []peerUpdate {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(c)))
	peers := make([]peerUpdate, n)
	for i := range peers {
		p := &peers[i]
		p.Name = PeerName(0x020000000000 + i)
		p.NickName = fmt.Sprintf("peer-%d", i)
		p.UID = PeerUID(rng.Uint64() | 1)
		p.Version = uint64(rng.IntN(1000))
		if i%3 != 0 {
			p.ShortID, p.HasShortID = PeerShortID(rng.IntN(4096)), true
		}
		for j := range c {
			p.Connections = append(p.Connections, connectionSummary{
				Name:          PeerName(0x020000000000 + (i+j+1)%n),
				RemoteTCPAddr: fmt.Sprintf("10.0.%d.%d:6783", i, j),
				Outbound:      j%2 == 0,
				Established:   j%3 != 0,
			})
		}
	}
	return peers
}

// gobTopology encodes peers with encoding/gob, using v2 types when
// requested.
func gobTopology(t testing.TB, peers []peerUpdate, v2 bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	for _, p := range peers {
		if v2 {
			require.NoError(t, enc.Encode(wirePeerSummaryV2{Score: 1.5, HasShortID: p.HasShortID, Extra: "x",
				Version: p.Version, NameByte: p.Name.Bin(), Blob: []byte{1, 2}, Count: -3, Ratio: 1 + 2i,
				UID: p.UID, Flag: true, NickName: p.NickName}))
			conns := []wireConnectionSummaryV2{}
			for _, c := range p.Connections {
				conns = append(conns, wireConnectionSummaryV2{Established: c.Established, Weight: -7,
					RemoteTCPAddr: c.RemoteTCPAddr, NameByte: c.Name.Bin(), Note: "n"})
			}
			require.NoError(t, enc.Encode(conns))
			continue
		}
		require.NoError(t, enc.Encode(wirePeerSummary{NameByte: p.Name.Bin(), NickName: p.NickName, UID: p.UID,
			Version: p.Version, ShortID: p.ShortID, HasShortID: p.HasShortID}))
		var conns []wireConnectionSummary
		for _, c := range p.Connections {
			conns = append(conns, wireConnectionSummary{NameByte: c.Name.Bin(), RemoteTCPAddr: c.RemoteTCPAddr,
				Outbound: c.Outbound, Established: c.Established})
		}
		require.NoError(t, enc.Encode(conns))
	}
	return buf.Bytes()
}

// decodeWithGob decodes a topology stream with encoding/gob.
func decodeWithGob(t testing.TB, b []byte) []peerUpdate {
	t.Helper()
	dec := gob.NewDecoder(bytes.NewReader(b))
	var out []peerUpdate
	for {
		var ps wirePeerSummary
		err := dec.Decode(&ps)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		var conns []wireConnectionSummary
		require.NoError(t, dec.Decode(&conns))
		u := peerUpdate{peerSummary: peerSummary{Name: PeerNameFromBin(ps.NameByte), NickName: ps.NickName,
			UID: ps.UID, Version: ps.Version, ShortID: ps.ShortID, HasShortID: ps.HasShortID}}
		for _, c := range conns {
			u.Connections = append(u.Connections, connectionSummary{Name: PeerNameFromBin(c.NameByte),
				RemoteTCPAddr: c.RemoteTCPAddr, Outbound: c.Outbound, Established: c.Established})
		}
		out = append(out, u)
	}
}

func TestTopologyWithEncodingGob(t *testing.T) {
	peers := testTopology(20, 4)
	peers = append(peers, peerUpdate{peerSummary: peerSummary{Name: 0x020000000077}}, peerUpdate{
		peerSummary: peerSummary{Name: maxPeerName, NickName: strings.Repeat("n", maxNickNameLen), UID: math.MaxUint64,
			Version: math.MaxUint64, ShortID: math.MaxUint16, HasShortID: true},
		Connections: []connectionSummary{{Name: 0, RemoteTCPAddr: strings.Repeat("a", maxAddrLen)}},
	})

	// Our encoding decodes with encoding/gob to the same values.
	require.Equal(t, peers, decodeWithGob(t, appendTopology(nil, peers)))

	// encoding/gob's encoding (with this process's type ids and names)
	// decodes with ours. Using gob for other types first makes sure the
	// ids are not weave's.
	var sink bytes.Buffer
	require.NoError(t, gob.NewEncoder(&sink).Encode(gobFiller{A: map[int]string{1: "a"}, B: []float64{1}}))
	b := gobTopology(t, peers, false)
	r := newGobReader(b)
	body, err := r.next()
	require.NoError(t, err)
	d := rawDecoder{b: body}
	id, isDef, err := parseDefinitionHeader(&d)
	require.NoError(t, err)
	require.True(t, isDef)
	require.NotEqual(t, int64(65), id, "type ids other than weave's")
	got, err := decodeTopology(b, testLimits)
	require.NoError(t, err)
	require.Equal(t, peers, got)

	// So does a later version of the structs with other fields, in
	// another order: the known fields are matched by name.
	b = gobTopology(t, peers, true)
	got, err = decodeTopology(b, testLimits)
	require.NoError(t, err)
	for i := range peers {
		peers[i].ShortID = 0
		for j := range peers[i].Connections {
			peers[i].Connections[j].Outbound = false
		}
	}
	require.Equal(t, peers, got)
}

// Builders of hand-made gob streams.

// tMsg returns a gob message holding the concatenated parts.
func tMsg(parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(gobint.AppendUint(nil, uint64(len(body))), body...)
}

// tID returns a type id as a gob int.
func tID(id int64) []byte { return appendRawInt(nil, id) }

// tStr returns a length-prefixed string.
func tStr(s string) []byte { return append(gobint.AppendUint(nil, uint64(len(s))), s...) }

// tField is a struct field in a definition.
type tField struct {
	name string
	typ  int64
}

// tCommon returns a CommonType value.
func tCommon(name string, id int64) []byte {
	if name == "" {
		return bytes.Join([][]byte{{2}, tID(id), {0}}, nil)
	}
	return bytes.Join([][]byte{{1}, tStr(name), {1}, tID(id), {0}}, nil)
}

// tStructDef returns the definition message of a struct type.
func tStructDef(id int64, name string, fields ...tField) []byte {
	parts := [][]byte{tID(-id), {3, 1}, tCommon(name, id), {1}, gobint.AppendUint(nil, uint64(len(fields)))}
	for _, f := range fields {
		parts = append(parts, []byte{1}, tStr(f.name), []byte{1}, tID(f.typ), []byte{0})
	}
	parts = append(parts, []byte{0, 0})
	return tMsg(parts...)
}

// tSliceDef returns the definition message of a slice type.
func tSliceDef(id, elem int64) []byte {
	return tMsg(tID(-id), []byte{2, 1}, tCommon("", id), []byte{1}, tID(elem), []byte{0, 0})
}

var (
	tPeerFields = []tField{{"NameByte", 5}, {"NickName", 6}, {"UID", 3}, {"Version", 3}, {"ShortID", 3}, {"HasShortID", 1}}
	tConnFields = []tField{{"NameByte", 5}, {"RemoteTCPAddr", 6}, {"Outbound", 1}, {"Established", 1}}
)

// tName returns a NameByte field value.
func tName(n byte) []byte { return []byte{6, 2, 0, 0, 0, 0, n} }

func TestDecodeTopologyHandMade(t *testing.T) {
	// Standard ids remapped to others, definitions before use in another
	// order.
	peerDef := tStructDef(1000, "peerSummary", tPeerFields...)
	connDef := tStructDef(64, "connectionSummary", tConnFields...)
	sliceDef := tSliceDef(math.MaxInt32, 64)
	peerVal := tMsg(tID(1000), []byte{1}, tName(1), []byte{1}, tStr("a"), []byte{1, 5, 2, 9, 0})
	connsVal := tMsg(tID(math.MaxInt32), []byte{0, 2}, []byte{1}, tName(2), []byte{3, 1, 0}, []byte{1}, tName(3), []byte{1}, tStr("h:1"), []byte{0})
	emptyConns := tMsg(tID(math.MaxInt32), []byte{0, 0})
	want1 := peerUpdate{peerSummary: peerSummary{Name: 0x020000000001, NickName: "a", UID: 5, ShortID: 9},
		Connections: []connectionSummary{{Name: 0x020000000002, Established: true}, {Name: 0x020000000003, RemoteTCPAddr: "h:1"}}}
	want2 := peerUpdate{peerSummary: peerSummary{Name: 0x020000000001, NickName: "a", UID: 5, ShortID: 9}}

	// Fields in another order, and unknown fields of each skippable type.
	oddPeerDef := tStructDef(70, "", tField{"X", 7}, tField{"UID", 3}, tField{"Y", 4}, tField{"NameByte", 5},
		tField{"Z", 2}, tField{"Outbound", 1}, tField{"RemoteTCPAddr", 6}, tField{"W", 5}, tField{"Sub", 1000})
	oddPeerVal := tMsg(tID(70), []byte{1, 3, 4}, []byte{1, 8}, []byte{1, 0xfe, 0xf0, 0x3f}, []byte{1}, tName(7),
		[]byte{1, 3}, []byte{1, 1}, []byte{1}, tStr("addr"), []byte{1}, tStr("blob"), []byte{0})
	want3 := peerUpdate{peerSummary: peerSummary{Name: 0x020000000007, UID: 8}}

	tests := []struct {
		name   string
		stream []byte
		want   []peerUpdate
	}{
		{"remapped ids", bytes.Join([][]byte{connDef, sliceDef, peerDef, peerVal, connsVal, peerVal, emptyConns}, nil), []peerUpdate{want1, want2}},
		{"definitions between values", bytes.Join([][]byte{peerDef, peerVal, sliceDef, connDef, connsVal}, nil), []peerUpdate{want1}},
		{"odd fields", bytes.Join([][]byte{oddPeerDef, oddPeerVal, sliceDef, connDef, emptyConns}, nil), []peerUpdate{want3}},
		{"unused array and map definitions", bytes.Join([][]byte{
			tMsg(tID(-80), []byte{1, 1}, tCommon("", 80), []byte{1}, tID(2), []byte{1}, appendRawInt(nil, 4), []byte{0, 0}),
			tMsg(tID(-81), []byte{4, 1}, tCommon("m", 81), []byte{1}, tID(6), []byte{1}, tID(80), []byte{0, 0}),
			tMsg(tID(-82), []byte{5, 1}, tCommon("enc", 82), []byte{0, 0}),
			peerDef, peerVal, sliceDef, connDef, emptyConns}, nil), []peerUpdate{want2}},
		{"long integer encodings", bytes.Join([][]byte{peerDef, sliceDef, connDef,
			tMsg(tID(1000), []byte{1}, tName(1), []byte{2, 0xf8, 0, 0, 0, 0, 0, 0, 0, 5}, []byte{0}), emptyConns}, nil),
			[]peerUpdate{{peerSummary: peerSummary{Name: 0x020000000001, UID: 5}}}},
		{"short and long NameByte", bytes.Join([][]byte{peerDef, sliceDef, connDef,
			tMsg(tID(1000), []byte{1, 1, 0x42}, []byte{0}),
			tMsg(tID(math.MaxInt32), []byte{0, 1}, []byte{1, 8, 0xff, 0xff, 1, 2, 3, 4, 5, 6}, []byte{0})}, nil),
			[]peerUpdate{{peerSummary: peerSummary{Name: 0x42}, Connections: []connectionSummary{{Name: 0x010203040506}}}}},
		{"bool values other than 1", bytes.Join([][]byte{peerDef, sliceDef, connDef,
			tMsg(tID(1000), []byte{1}, tName(1), []byte{5, 7}, []byte{0}), emptyConns}, nil),
			[]peerUpdate{{peerSummary: peerSummary{Name: 0x020000000001, HasShortID: true}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeTopology(tt.stream, testLimits)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeTopologyErrors(t *testing.T) {
	peerDef := tStructDef(65, "peerSummary", tPeerFields...)
	connDef := tStructDef(66, "connectionSummary", tConnFields...)
	sliceDef := tSliceDef(67, 66)
	defs := bytes.Join([][]byte{peerDef, sliceDef, connDef}, nil)
	peer := func(fields ...[]byte) []byte { return tMsg(tID(65), bytes.Join(fields, nil), []byte{0}) }
	conns := func(n byte, elems ...[]byte) []byte {
		return tMsg(tID(67), []byte{0, n}, bytes.Join(elems, nil))
	}
	okPeer := peer([]byte{1}, tName(1))
	noConns := conns(0)
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	var manyDefs [][]byte
	for i := range maxTopologyTypes + 1 {
		manyDefs = append(manyDefs, tSliceDef(int64(100+i), 3))
	}

	tests := []struct {
		name   string
		stream []byte
		lim    topologyLimits
	}{
		{"value before definition", join(okPeer, defs, noConns), testLimits},
		{"slice element never defined", join(peerDef, tSliceDef(67, 99), okPeer, noConns), testLimits},
		{"duplicate definition", join(defs, peerDef, okPeer, noConns), testLimits},
		{"definition of a predefined id", join(tStructDef(6, "x", tPeerFields...)), testLimits},
		{"peer without connections", join(defs, okPeer), testLimits},
		{"peer value of a slice type", join(defs, tMsg(tID(67), []byte{0, 0}), noConns), testLimits},
		{"connections of a struct type", join(defs, okPeer, okPeer), testLimits},
		{"connections of a slice of slices", join(defs, tSliceDef(68, 67), okPeer, tMsg(tID(68), []byte{0, 0})), testLimits},
		{"value of a predefined type", join(defs, tMsg(tID(3), []byte{0, 1}), noConns), testLimits},
		{"NameByte of type string", join(tStructDef(65, "p", tField{"NameByte", 6}), sliceDef, connDef, peer([]byte{1}, tStr("x")), noConns), testLimits},
		{"UID of type int", join(tStructDef(65, "p", tField{"NameByte", 5}, tField{"UID", 2}), sliceDef, connDef, okPeer, noConns), testLimits},
		{"Outbound of type uint", join(peerDef, sliceDef, tStructDef(66, "c", tField{"NameByte", 5}, tField{"Outbound", 3}), okPeer, noConns), testLimits},
		{"no known fields", join(tStructDef(65, "p", tField{"Foo", 5}), sliceDef, connDef, peer([]byte{1}, tStr("x")), noConns), testLimits},
		{"unskippable field present", join(tStructDef(65, "p", tField{"NameByte", 5}, tField{"Sub", 66}), sliceDef, connDef,
			peer([]byte{1}, tName(1), []byte{1, 0}), noConns), testLimits},
		{"interface field present", join(tStructDef(65, "p", tField{"NameByte", 5}, tField{"I", 8}), sliceDef, connDef,
			peer([]byte{1}, tName(1), []byte{1, 0}), noConns), testLimits},
		{"field number out of range", join(defs, peer([]byte{1}, tName(1), []byte{6, 1}), noConns), testLimits},
		{"field delta overflow", join(defs, peer([]byte{1}, tName(1), []byte{0xf8, 0x80, 0, 0, 0, 0, 0, 0, 1, 1}), noConns), testLimits},
		{"missing NameByte", join(defs, peer([]byte{2}, tStr("n")), noConns), testLimits},
		{"empty NameByte", join(defs, peer([]byte{1, 0}), noConns), testLimits},
		{"NameByte of 9 bytes", join(defs, peer([]byte{1, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9}), noConns), testLimits},
		{"connection without NameByte", join(defs, okPeer, conns(1, []byte{3, 1, 0})), testLimits},
		{"empty connection", join(defs, okPeer, conns(1, []byte{0})), testLimits},
		{"ShortID too large", join(defs, peer([]byte{1}, tName(1), []byte{4, 0xfd, 1, 0, 0}), noConns), testLimits},
		{"nickname too long", join(defs, peer([]byte{1}, tName(1), []byte{1}, tStr(strings.Repeat("n", maxNickNameLen+1))), noConns), testLimits},
		{"address too long", join(defs, okPeer, conns(1, []byte{1}, tName(2), []byte{1}, tStr(strings.Repeat("a", maxAddrLen+1)), []byte{0})), testLimits},
		{"too many peers", join(defs, okPeer, noConns, okPeer, noConns), topologyLimits{MaxPeers: 1}},
		{"too many connections", join(defs, okPeer, conns(2, []byte{1}, tName(2), []byte{0}, []byte{1}, tName(3), []byte{0})), topologyLimits{MaxConnections: 1}},
		{"connection count beyond data", join(defs, okPeer, conns(5, []byte{1}, tName(2), []byte{0})), testLimits},
		{"non-zero singleton delta", join(defs, okPeer, tMsg(tID(67), []byte{1, 0})), testLimits},
		{"extra bytes in value", join(defs, okPeer, tMsg(tID(67), []byte{0, 0, 0})), testLimits},
		{"extra bytes in definition", join(tMsg(peerDef[1:], []byte{0}), sliceDef, connDef, okPeer, noConns), testLimits},
		{"struct element never defined", join(peerDef, tSliceDef(67, 66), okPeer, noConns), testLimits},
		{"too many definitions", join(manyDefs...), testLimits},
		{"trailing definition", join(defs, okPeer, noConns, tSliceDef(90, 66)), testLimits},
		{"array with extra field", join(tMsg(tID(-80), []byte{1, 1}, tCommon("", 80), []byte{3, 1, 0, 0})), testLimits},
		{"empty message", join(defs, []byte{0}), testLimits},
		{"truncated message", join(defs, []byte{5, 1}), testLimits},
		{"type id zero", join(tMsg([]byte{0, 0})), testLimits},
		{"two wireType fields", join(tMsg(tID(-65), []byte{2, 1}, tCommon("", 65), []byte{1, 6, 0, 1, 1, 2, 0, 0})), testLimits},
		{"unknown wireType field", join(tMsg(tID(-65), []byte{8, 0, 0})), testLimits},
		{"empty wireType", join(tMsg(tID(-65), []byte{0})), testLimits},
		{"slice without element", join(tMsg(tID(-65), []byte{2, 1}, tCommon("", 65), []byte{0, 0})), testLimits},
		{"field type zero", join(tStructDef(65, "p", tField{"NameByte", 0})), testLimits},
		{"too many struct fields", join(tStructDef(65, "p", make([]tField, gobMaxStructFields+1)...)), testLimits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeTopology(tt.stream, tt.lim)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}

	// Skipped unknown fields are fine when absent, even if not skippable.
	got, err := decodeTopology(join(tStructDef(65, "p", tField{"NameByte", 5}, tField{"Sub", 66}), sliceDef, connDef, okPeer, noConns), testLimits)
	require.NoError(t, err)
	require.Equal(t, []peerUpdate{{peerSummary: peerSummary{Name: 0x020000000001}}}, got)
	// Limits that are not set are not enforced.
	_, err = decodeTopology(join(defs, okPeer, noConns, okPeer, noConns), topologyLimits{})
	require.NoError(t, err)
}

func TestDecodeTopologyPrefixesAndFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, w := range vectorTopologies(t) {
		full, err := decodeTopology(w.payload, testLimits)
		require.NoError(t, err)
		for i := range len(w.payload) {
			got, err := decodeTopology(w.payload[:i], testLimits)
			if err == nil {
				// A prefix ending between peers is a valid shorter topology.
				require.Less(t, len(got), len(full)+1, "%s: prefix %d", w.frame, i)
				if len(got) > 0 {
					require.Equal(t, full[:len(got)], got, "%s: prefix %d", w.frame, i)
				}
			}
		}
		for range 300 {
			b := bytes.Clone(w.payload)
			for range 1 + rng.IntN(2) {
				b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			}
			if peers, err := decodeTopology(b, testLimits); err == nil {
				checkTopologyRoundTrip(t, peers, testLimits)
			}
		}
	}
}

// checkTopologyRoundTrip checks that decoded peers survive encoding and
// decoding.
func checkTopologyRoundTrip(t testing.TB, peers []peerUpdate, lim topologyLimits) {
	t.Helper()
	b := appendTopology(nil, peers)
	back, err := decodeTopology(b, lim)
	if err != nil {
		t.Fatalf("re-decode: %v", err)
	}
	if len(peers) == 0 && len(back) == 0 {
		return
	}
	require.Equal(t, peers, back)
}

func TestTopologyAllocations(t *testing.T) {
	peers := testTopology(100, 8)
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(20, func() {
		buf = appendTopology(buf[:0], peers)
	})
	require.Zero(t, allocs)
	if raceEnabled {
		// The decoder comes from a sync.Pool, which the race detector
		// makes drop items at random: a new one allocates its lists.
		t.Skip("decoding allocations are not stable under the race detector")
	}
	allocs = testing.AllocsPerRun(20, func() {
		if _, err := decodeTopology(buf, topologyLimits{}); err != nil {
			t.Fatal(err)
		}
	})
	// One connection slice and one string block per peer, plus the result.
	require.LessOrEqual(t, allocs, float64(2*len(peers)+16))
}

func FuzzDecodeTopology(f *testing.F) {
	for _, w := range vectorTopologies(f) {
		f.Add(w.payload)
	}
	f.Add(gobTopology(f, testTopology(3, 2), true))
	lim := topologyLimits{MaxPeers: 64, MaxConnections: 64}
	odd := func(s peerSummary) bool { return s.Name%2 == 1 }
	f.Fuzz(func(t *testing.T, data []byte) {
		peers, err := decodeTopology(data, lim)
		// Skipping the connections of some entries changes what is
		// kept, never what is accepted.
		some, errSome := appendDecodedTopology(nil, data, lim, odd)
		if (err == nil) != (errSome == nil) {
			t.Fatalf("decoding whole: %v; skipping odd names: %v", err, errSome)
		}
		if err != nil {
			return
		}
		if len(some) != len(peers) {
			t.Fatalf("%d entries whole, %d skipping odd names", len(peers), len(some))
		}
		for i, u := range some {
			if u.connsSkipped != odd(peers[i].peerSummary) || (u.connsSkipped && (u.Connections != nil || u.NickName != "")) {
				t.Fatalf("entry %d: %+v", i, u)
			}
		}
		if len(peers) > lim.MaxPeers {
			t.Fatalf("%d peers", len(peers))
		}
		for _, p := range peers {
			if len(p.Connections) > lim.MaxConnections || len(p.NickName) > maxNickNameLen {
				t.Fatalf("limits not enforced: %+v", p)
			}
			for _, c := range p.Connections {
				if len(c.RemoteTCPAddr) > maxAddrLen {
					t.Fatalf("address of %d bytes", len(c.RemoteTCPAddr))
				}
			}
		}
		checkTopologyRoundTrip(t, peers, lim)
	})
}

func BenchmarkTopology(b *testing.B) {
	peers := testTopology(100, 8)
	buf := appendTopology(nil, peers)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			buf = appendTopology(buf[:0], peers)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			if _, err := decodeTopology(buf, topologyLimits{MaxPeers: 1000, MaxConnections: 100}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Entries the caller holds are decoded without their connections, which
// are checked all the same: skipping changes what is kept, never what is
// accepted.
func TestDecodeTopologySkipsHeldEntries(t *testing.T) {
	peers := testTopology(20, 6)
	b := appendTopology(nil, peers)
	held := func(s peerSummary) bool { return s.Name%2 == 0 }
	got, err := appendDecodedTopology(nil, b, testLimits, held)
	require.NoError(t, err)
	require.Len(t, got, len(peers))
	for i, u := range got {
		if held(peers[i].peerSummary) {
			require.True(t, u.connsSkipped)
			require.Nil(t, u.Connections)
			require.Empty(t, u.NickName)
			want := peers[i].peerSummary
			want.NickName = ""
			require.Equal(t, want, u.peerSummary)
			continue
		}
		require.False(t, u.connsSkipped)
		require.Equal(t, peers[i], u)
	}

	all := func(peerSummary) bool { return true }
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		m := bytes.Clone(b)
		if rng.IntN(2) == 0 {
			m = m[:rng.IntN(len(m))]
		} else {
			m[rng.IntN(len(m))] ^= byte(1 + rng.IntN(255))
		}
		_, errFull := decodeTopology(m, testLimits)
		_, errSkip := appendDecodedTopology(nil, m, testLimits, all)
		require.Equal(t, errFull == nil, errSkip == nil, "full: %v, skipping: %v", errFull, errSkip)
	}

	if raceEnabled {
		t.Skip("decoding allocations are not stable under the race detector")
	}
	dst := make([]peerUpdate, 0, len(peers))
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := appendDecodedTopology(dst[:0], b, testLimits, all); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "entries held cost no allocation")
}
