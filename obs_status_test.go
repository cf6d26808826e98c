package mesh

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// statusKeys are the JSON keys of NewStatus's output, at each level: the
// union over the entries of each list, and for Connections and
// TargetStates the keys of an entry in each state (fields left out when
// empty differ). BroadcastRoutesPartial is left out unless true. Changing
// this table changes what programs reading the JSON see: weave's names
// must stay.
var statusKeys = map[string][]string{
	"": {"BroadcastRoutes", "ConnLimit", "Connections", "Encryption", "ListenAddr", "Name", "NickName",
		"OverlayDiagnostics", "PeerDiscovery", "Peers", "Port", "Protocol", "ProtocolMaxVersion",
		"ProtocolMinVersion", "TargetStates", "Targets", "TerminationCount", "TrustedSubnets", "UID", "UIDString",
		"UnicastRoutes"},
	"Peers[]":               {"Connections", "Name", "NickName", "ShortID", "UID", "UIDString", "Version"},
	"Peers[].Connections[]": {"Address", "Established", "Name", "NickName", "Outbound"},
	"UnicastRoutes[]":       {"Dest", "Via"},
	"BroadcastRoutes[]":     {"Source", "Via"},
	"Connections[]": {"Address", "Attempts", "Attrs", "Encrypted", "Info", "LastError", "Name", "NickName",
		"Outbound", "ProtocolVersion", "State", "TryAfter"},
	"Connections[State=established]": {"Address", "Attrs", "Encrypted", "Info", "Name", "NickName", "Outbound", "ProtocolVersion", "State"},
	"Connections[State=waiting]":     {"Address", "Attempts", "Attrs", "Info", "LastError", "Outbound", "State", "TryAfter"},
	"Connections[State=failed]":      {"Address", "Attempts", "Attrs", "Info", "LastError", "Outbound", "State"},
	"TargetStates[]":                 {"Address", "Attempts", "Direct", "LastError", "State", "TryAfter"},
	"TargetStates[State=connected]":  {"Address", "Attempts", "Direct", "State"},
	"TargetStates[State=waiting]":    {"Address", "Attempts", "Direct", "LastError", "State", "TryAfter"},
	"TargetStates[State=failed]":     {"Address", "Attempts", "Direct", "LastError", "State"},
}

// jsonKeys collects the keys of obj into out, under path, and recurses
// into the lists of objects named in lists.
func jsonKeys(out map[string]map[string]bool, path string, obj map[string]any) {
	add := func(p string) {
		if out[p] == nil {
			out[p] = make(map[string]bool)
		}
		for k := range obj {
			out[p][k] = true
		}
	}
	add(path)
	if state, ok := obj["State"].(string); ok && strings.HasSuffix(path, "[]") {
		add(strings.TrimSuffix(path, "[]") + "[State=" + state + "]")
	}
	for k, v := range obj {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		for _, e := range list {
			if o, ok := e.(map[string]any); ok {
				sub := k + "[]"
				if path != "" {
					sub = path + "." + sub
				}
				jsonKeys(out, sub, o)
			}
		}
	}
}

// The JSON field names of the status are pinned, at every level, on a
// line of three encrypted peers seen from the middle one, which also has
// an address that refuses and one that leads back to itself.
func TestStatusJSONKeys(t *testing.T) {
	statusNoGoroutineLeak(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := ln.Addr().String()
	ln.Close()
	p1 := startStatusRouter(t, 1, nil)
	p2 := startStatusRouter(t, 2, nil)
	p3 := startStatusRouter(t, 3, nil)
	p1.ConnectionMaker.InitiateConnections([]string{p2.ListenAddr().String()}, false)
	p2.ConnectionMaker.InitiateConnections([]string{p3.ListenAddr().String(), refused, p2.ListenAddr().String()}, false)

	var body []byte
	statusEventually(t, "every kind of entry on peer 2", func() (bool, string) {
		s := NewStatus(p2)
		var states []string
		for _, c := range s.Connections {
			states = append(states, c.State)
		}
		slices.Sort(states)
		want := []string{ConnectionEstablished, ConnectionEstablished, ConnectionFailed, ConnectionWaiting}
		if !slices.Equal(states, want) || len(s.BroadcastRoutes) != 2 || len(s.UnicastRoutes) != 2 {
			return false, fmt.Sprintf("%v %v %v", states, s.UnicastRoutes, s.BroadcastRoutes)
		}
		body, err = json.Marshal(s)
		require.NoError(t, err)
		return true, ""
	})

	var obj map[string]any
	require.NoError(t, json.Unmarshal(body, &obj))
	got := make(map[string]map[string]bool)
	jsonKeys(got, "", obj)
	gotSorted := make(map[string][]string, len(got))
	for path, keys := range got {
		gotSorted[path] = slices.Sorted(maps.Keys(keys))
	}
	require.Equal(t, statusKeys, gotSorted)

	// UIDs as strings are the UIDs, digit for digit.
	require.Equal(t, strconv.FormatUint(uint64(p2.Ourself.UID), 10), obj["UIDString"])
	var exact struct {
		UID   PeerUID
		Peers []struct {
			UID       PeerUID
			UIDString string
		}
	}
	require.NoError(t, json.Unmarshal(body, &exact))
	require.Equal(t, p2.Ourself.UID, exact.UID)
	require.Len(t, exact.Peers, 3)
	for _, p := range exact.Peers {
		require.Equal(t, strconv.FormatUint(uint64(p.UID), 10), p.UIDString)
	}

	// The target states are the exported constants.
	states := map[string]bool{}
	for _, ts := range NewStatus(p2).TargetStates {
		states[ts.State] = true
	}
	for s := range states {
		require.Contains(t, []string{TargetWaiting, TargetAttempting, TargetConnected, TargetFailed}, s)
	}
}
