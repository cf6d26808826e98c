// Package meshprom exposes the counters of a mesh router to Prometheus.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(meshprom.NewCollector(router, nil))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The collector reads Router.Metrics on each scrape; it keeps no state of
// its own. It is a separate module so that the mesh library itself does
// not depend on the Prometheus client.
package meshprom

import (
	"github.com/gossip-mesh/mesh"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector for one router.
type Collector struct {
	router *mesh.Router

	peers, reachable, connections *prometheus.Desc

	sent, sentBytes, received, receivedBytes                             *prometheus.Desc
	chanSent, chanSentBytes, chanReceived, chanReceivedBytes             *prometheus.Desc
	chanGossipNew, chanInboxDropped                                      *prometheus.Desc
	dials, accepted, established, dropped, failures                      *prometheus.Desc
	routeRecomputations, routeChanges, topologyUpdates, peersRemoved     *prometheus.Desc
	gossipMerges, sendQueueDrops, inboxDrops, broadcastsSkipped, evDrops *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector of router's metrics. constLabels, which
// may be nil, are added to every metric: useful to tell apart several
// routers registered in one registry.
func NewCollector(router *mesh.Router, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("mesh_"+name, help, labels, constLabels)
	}
	return &Collector{
		router:      router,
		peers:       d("peers", "Peers in the topology, this router included."),
		reachable:   d("reachable_peers", "Peers reachable over reported connections, this router included."),
		connections: d("connections", "Connections registered now (handshake done, not yet ended)."),

		sent:          d("messages_sent_total", "Frames written to connections, by kind.", "kind"),
		sentBytes:     d("sent_bytes_total", "Bytes of the frame bodies written to connections, before encryption and framing, by kind.", "kind"),
		received:      d("messages_received_total", "Frames read from connections, by kind.", "kind"),
		receivedBytes: d("received_bytes_total", "Bytes of the frame bodies read from connections, by kind.", "kind"),

		chanSent:          d("channel_messages_sent_total", "Frames of a gossip channel registered here written to connections, relayed ones included.", "channel", "kind"),
		chanSentBytes:     d("channel_sent_bytes_total", "Bytes of the frame bodies of a gossip channel registered here written to connections.", "channel", "kind"),
		chanReceived:      d("channel_messages_received_total", "Frames of a gossip channel registered here read from connections, relayed ones included.", "channel", "kind"),
		chanReceivedBytes: d("channel_received_bytes_total", "Bytes of the frame bodies of a gossip channel registered here read from connections.", "channel", "kind"),
		chanGossipNew:     d("channel_gossip_new_total", "Received gossip for which the channel's Gossiper returned new data.", "channel"),
		chanInboxDropped:  d("channel_inbox_dropped_total", "Messages dropped because the channel's inbox was full.", "channel"),

		dials:       d("connection_dials_total", "Outbound connection attempts."),
		accepted:    d("connections_accepted_total", "Inbound connections accepted for a handshake."),
		established: d("connections_established_total", "Connections that completed the handshake and were registered."),
		dropped:     d("connections_dropped_total", "Established connections that ended."),
		failures:    d("connection_failures_total", "Dials, handshakes and registrations that failed, by reason.", "reason"),

		routeRecomputations: d("route_recomputations_total", "Route recomputations."),
		routeChanges:        d("route_changes_total", "Route recomputations that changed the unicast routes."),
		topologyUpdates:     d("topology_updates_total", "Peer entries received in topology updates that were newer than ours and applied."),
		peersRemoved:        d("peers_removed_total", "Peers removed because nothing reached them."),

		gossipMerges:      d("gossip_merges_total", "Gossip data merged into data waiting in a send queue."),
		sendQueueDrops:    d("send_queue_dropped_total", "Messages dropped because the next hop's send queue was full."),
		inboxDrops:        d("inbox_dropped_total", "Messages dropped because their channel's inbox was full."),
		broadcastsSkipped: d("broadcasts_skipped_total", "Broadcasts not passed on to a neighbour whose send queue was full (also in mesh_send_queue_dropped_total)."),
		evDrops:           d("events_dropped_total", "Membership events dropped because a subscriber fell behind."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.peers, c.reachable, c.connections,
		c.sent, c.sentBytes, c.received, c.receivedBytes,
		c.chanSent, c.chanSentBytes, c.chanReceived, c.chanReceivedBytes, c.chanGossipNew, c.chanInboxDropped,
		c.dials, c.accepted, c.established, c.dropped, c.failures,
		c.routeRecomputations, c.routeChanges, c.topologyUpdates, c.peersRemoved,
		c.gossipMerges, c.sendQueueDrops, c.inboxDrops, c.broadcastsSkipped, c.evDrops,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it takes one snapshot of the
// router's metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	m := c.router.Metrics()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.peers, m.Peers)
	gauge(c.reachable, m.ReachablePeers)
	gauge(c.connections, m.Connections.Current)

	m.Sent.Each(func(kind string, n mesh.Count) {
		counter(c.sent, n.Messages, kind)
		counter(c.sentBytes, n.Bytes, kind)
	})
	m.Received.Each(func(kind string, n mesh.Count) {
		counter(c.received, n.Messages, kind)
		counter(c.receivedBytes, n.Bytes, kind)
	})
	for name, cm := range m.Channels {
		cm.Sent.Each(func(kind string, n mesh.Count) {
			counter(c.chanSent, n.Messages, name, kind)
			counter(c.chanSentBytes, n.Bytes, name, kind)
		})
		cm.Received.Each(func(kind string, n mesh.Count) {
			counter(c.chanReceived, n.Messages, name, kind)
			counter(c.chanReceivedBytes, n.Bytes, name, kind)
		})
		counter(c.chanGossipNew, cm.GossipNew, name)
		counter(c.chanInboxDropped, cm.InboxDropped, name)
	}

	counter(c.dials, m.Connections.Dials)
	counter(c.accepted, m.Connections.Accepted)
	counter(c.established, m.Connections.Established)
	counter(c.dropped, m.Connections.Dropped)
	m.Connections.Failures.Each(func(reason string, n uint64) { counter(c.failures, n, reason) })

	counter(c.routeRecomputations, m.RouteRecomputations)
	counter(c.routeChanges, m.RouteChanges)
	counter(c.topologyUpdates, m.TopologyUpdates)
	counter(c.peersRemoved, m.PeersRemoved)
	counter(c.gossipMerges, m.GossipMerges)
	counter(c.sendQueueDrops, m.Drops.SendQueueFull)
	counter(c.inboxDrops, m.Drops.InboxFull)
	counter(c.broadcastsSkipped, m.Drops.BroadcastSkipped)
	counter(c.evDrops, m.Drops.Events)
}
