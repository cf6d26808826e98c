package mesh

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// wantPeerName returns the peer name in a vector's {name, uint} object.
func wantPeerName(t testing.TB, v any) PeerName {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "peer name %v", v)
	name, err := PeerNameFromString(m["name"].(string))
	require.NoError(t, err)
	require.Equal(t, float64(name), m["uint"])
	return name
}

// wantMessage returns the message bytes in a vector's {text} or {hex}
// object.
func wantMessage(t testing.TB, v any) []byte {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "message %v", v)
	if s, ok := m["text"].(string); ok {
		return []byte(s)
	}
	b, err := hex.DecodeString(m["hex"].(string))
	require.NoError(t, err)
	return b
}

func TestGossipMessageVectors(t *testing.T) {
	gossip := 0
	for _, f := range vectorFrames(t) {
		t.Run(f.String(), func(t *testing.T) {
			orig := bytes.Clone(f.body)
			m, err := parseGossipMessage(f.body)
			require.Equal(t, orig, f.body, "parse must not modify the body")
			tag, hasTag := f.want["tag"].(float64)
			if !hasTag || (tag != 4 && tag != 5 && tag != 6) {
				require.ErrorIs(t, err, ErrMalformed)
				return
			}
			gossip++
			require.NoError(t, err)
			require.Equal(t, byte(tag), m.Tag)
			if _, ok := f.want["channel"]; !ok {
				// Only summarised in the description.
				require.Contains(t, f.description, fmt.Sprintf("%q from %s", m.Channel, m.Src))
				require.Equal(t, f.body, appendGossipMessage(nil, &m))
				return
			}
			require.Equal(t, f.want["channel"], m.Channel)
			require.Equal(t, wantPeerName(t, f.want["source"]), m.Src)
			if m.Tag == tagGossipUnicast {
				require.Equal(t, wantPeerName(t, f.want["destination"]), m.Dst)
			} else {
				require.Zero(t, m.Dst)
				require.NotContains(t, f.want, "destination")
			}
			if msg, ok := f.want["message"]; ok {
				require.Equal(t, wantMessage(t, msg), m.Payload)
			} else {
				require.Equal(t, f.want["message_len"], float64(len(m.Payload)))
			}
			if len(m.Payload) > 0 {
				require.Same(t, &f.body[len(f.body)-1], &m.Payload[len(m.Payload)-1], "payload aliases the body")
			}
			// Encoding the parsed message reproduces the sender's bytes.
			require.Equal(t, f.body, appendGossipMessage(nil, &m))
		})
	}
	require.Greater(t, gossip, 50)
}

func TestAppendGossipMessageCheatSheet(t *testing.T) {
	weave, probe := PeerName(0x020000000001), PeerName(0x020000000099)
	tests := []struct {
		name string
		msg  gossipMessage
		want string // whole frame, with the length prefix
	}{
		{"weave unicast hello", gossipMessage{Tag: tagGossipUnicast, Channel: "vec", Src: weave, Dst: probe, Payload: []byte("hello")},
			"0000002505060c0003766563090600fa020000000001090600fa020000000099080a000568656c6c6f"},
		{"weave broadcast", gossipMessage{Tag: tagGossipBroadcast, Channel: "vec", Src: weave, Payload: []byte("bcast")},
			"0000001b06060c0003766563090600fa020000000001080a00056263617374"},
		{"weave gossip", gossipMessage{Tag: tagGossip, Channel: "vec", Src: weave, Payload: []byte("gossip")},
			"0000001c04060c0003766563090600fa020000000001090a0006676f73736970"},
		{"probe unicast", gossipMessage{Tag: tagGossipUnicast, Channel: "vec", Src: probe, Dst: weave, Payload: []byte("hello-from-probe")},
			"0000003005060c0003766563090600fa020000000099090600fa020000000001130a001068656c6c6f2d66726f6d2d70726f6265"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := mustHex(t, tt.want)[4:]
			require.Equal(t, want, appendGossipMessage(nil, &tt.msg))
			m, err := parseGossipMessage(want)
			require.NoError(t, err)
			require.Equal(t, tt.msg, m)
		})
	}
}

func TestGossipMessageRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte{0xab}, 70000)
	tests := []gossipMessage{
		{Tag: tagGossip, Channel: "", Src: 0, Payload: []byte{}},
		{Tag: tagGossip, Channel: "topology", Src: 1, Payload: long},
		{Tag: tagGossipUnicast, Channel: strings.Repeat("c", maxChannelNameLen), Src: maxPeerName, Dst: 127, Payload: []byte{0}},
		{Tag: tagGossipBroadcast, Channel: "x", Src: 128, Payload: long[:200]},
	}
	for _, m := range tests {
		t.Run(m.Channel[:min(len(m.Channel), 10)], func(t *testing.T) {
			b := appendGossipMessage([]byte{}, &m)
			got, err := parseGossipMessage(b)
			require.NoError(t, err)
			require.Equal(t, m, got)
		})
	}
}

func TestParseGossipMessageErrors(t *testing.T) {
	valid := gossipMessage{Tag: tagGossipUnicast, Channel: "vec", Src: 1, Dst: 2, Payload: []byte("p")}
	good := appendGossipMessage(nil, &valid)
	tests := []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"heartbeat", []byte{tagHeartbeat}},
		{"overlay control", append([]byte{tagOverlayControl}, good[1:]...)},
		{"unknown tag", append([]byte{9}, good[1:]...)},
		{"tag only", []byte{tagGossip}},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"trailing message", appendGobUint(bytes.Clone(good), 7)},
		{"channel too long", appendGossipMessage(nil, &gossipMessage{Tag: tagGossip, Channel: strings.Repeat("c", maxChannelNameLen+1)})},
		{"name wider than 48 bits", appendGobBytes(appendGobUint(appendGobString([]byte{tagGossip}, "c"), 1<<48), nil)},
		{"unicast without destination", appendGobBytes(appendGobUint(appendGobString([]byte{tagGossipUnicast}, "c"), 1), nil)},
		{"payload as string", appendGobString(appendGobUint(appendGobString([]byte{tagGossip}, "c"), 1), "p")},
		{"channel as bytes", appendGobBytes(appendGobUint(appendGobBytes([]byte{tagGossip}, []byte("c")), 1), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseGossipMessage(tt.body)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

func TestParseGossipMessagePrefixesAndFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, f := range vectorFrames(t) {
		if _, err := parseGossipMessage(f.body); err != nil {
			continue
		}
		for i := range len(f.body) {
			_, err := parseGossipMessage(f.body[:i])
			require.Error(t, err, "%s: prefix %d", f.String(), i)
		}
		for range 200 {
			b := bytes.Clone(f.body)
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			if m, err := parseGossipMessage(b); err == nil {
				checkGossipRoundTrip(t, &m)
			}
		}
	}
}

// checkGossipRoundTrip checks that encoding m and parsing the result gives
// m back.
func checkGossipRoundTrip(t testing.TB, m *gossipMessage) {
	t.Helper()
	b := appendGossipMessage(nil, m)
	got, err := parseGossipMessage(b)
	if err != nil {
		t.Fatalf("re-parse of %+v: %v", m, err)
	}
	if got.Tag != m.Tag || got.Channel != m.Channel || got.Src != m.Src || got.Dst != m.Dst || !bytes.Equal(got.Payload, m.Payload) {
		t.Fatalf("round trip: %+v != %+v", got, m)
	}
}

func TestGossipMessageAllocations(t *testing.T) {
	m := gossipMessage{Tag: tagGossipUnicast, Channel: "vec", Src: 1, Dst: 2, Payload: make([]byte, 1024)}
	buf := make([]byte, 0, 2048)
	var body []byte
	allocs := testing.AllocsPerRun(100, func() {
		body = appendGossipMessage(buf[:0], &m)
	})
	require.Zero(t, allocs)
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := parseGossipMessage(body); err != nil {
			t.Fatal(err)
		}
	})
	require.LessOrEqual(t, allocs, 1.0, "only the channel name is allocated")
}

func FuzzParseGossipMessage(f *testing.F) {
	for _, fr := range vectorFrames(f) {
		f.Add(fr.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		m, err := parseGossipMessage(body)
		if !bytes.Equal(orig, body) {
			t.Fatal("body modified")
		}
		if err != nil {
			return
		}
		if len(m.Channel) > maxChannelNameLen || m.Src > maxPeerName || m.Dst > maxPeerName {
			t.Fatalf("limits not enforced: %+v", m)
		}
		checkGossipRoundTrip(t, &m)
	})
}

func BenchmarkGossipMessage(b *testing.B) {
	m := gossipMessage{Tag: tagGossipBroadcast, Channel: "vec", Src: 0x020000000001, Payload: make([]byte, 1024)}
	buf := make([]byte, 0, 2048)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(m.Payload)))
		for b.Loop() {
			buf = appendGossipMessage(buf[:0], &m)
		}
	})
	body := appendGossipMessage(nil, &m)
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(m.Payload)))
		for b.Loop() {
			if _, err := parseGossipMessage(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append+parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(m.Payload)))
		for b.Loop() {
			buf = appendGossipMessage(buf[:0], &m)
			if _, err := parseGossipMessage(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
