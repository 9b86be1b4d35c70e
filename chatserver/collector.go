package chatserver

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector that reads Server.Metrics at
// each scrape: nothing is recorded per message beyond the loops' own
// atomic counters. Register it once. Safe for concurrent use.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("nearchat_chatserver_"+name, help, nil, nil)
}

var (
	dConns         = desc("connections", "Open client connections.")
	dRooms         = desc("rooms", "Rooms hosted.")
	dMembers       = desc("members", "Members of the hosted rooms.")
	dFramesIn      = desc("frames_received_total", "Frames received from clients.")
	dBytesIn       = desc("received_bytes_total", "Bytes of frames received from clients.")
	dFramesOut     = desc("frames_sent_total", "Frames written to clients.")
	dBytesOut      = desc("sent_bytes_total", "Bytes written to clients.")
	dWrites        = desc("writes_total", "Writes of frames to clients (frames_sent_total over this is the batching).")
	dSlow          = desc("slow_consumer_cutoffs_total", "Members cut off for leaving more than the outbound limit unread.")
	dBusy          = desc("loop_busy_seconds_total", "Time the event loops spent parsing inbound frames and writing fan-out, summed over loops.")
	dFanout        = desc("fanout_latency_seconds", "Time from a message queued for an event loop to its write to that loop's members.")
	dHistFrames    = desc("history_messages", "Messages held by the rooms' history rings.")
	dHistBytes     = desc("history_bytes", "Bytes held by the rooms' history rings.")
	dHistLimit     = desc("history_limit_messages", "History ring size per room (-history).")
	dOutHigh       = desc("outbound_high_water_bytes", "Largest unsent backlog of one member before a write, since the previous scrape.")
	dOutLimit      = desc("outbound_limit_bytes", "Unsent bytes after which a member is cut off (-max-outbound).")
	dTLSHandshakes = desc("tls_handshakes_total", "TLS handshakes completed.")
	dTLSFailures   = desc("tls_handshake_failures_total", "TLS handshakes that failed.")
	dRefused       = desc("connections_refused_total", "Connections refused for a connection limit.")
	dEvicted       = desc("connections_evicted_total", "Connections closed before joining a room to make room for a newer one at a connection limit.")
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dConns, dRooms, dMembers, dFramesIn, dBytesIn, dFramesOut, dBytesOut, dWrites,
		dSlow, dBusy, dFanout, dHistFrames, dHistBytes, dHistLimit, dOutHigh, dOutLimit, dTLSHandshakes, dTLSFailures, dRefused, dEvicted} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.Metrics()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(dConns, float64(m.Conns))
	gauge(dRooms, float64(m.Rooms))
	gauge(dMembers, float64(m.Members))
	counter(dFramesIn, float64(m.FramesIn))
	counter(dBytesIn, float64(m.BytesIn))
	counter(dFramesOut, float64(m.FramesOut))
	counter(dBytesOut, float64(m.BytesOut))
	counter(dWrites, float64(m.Writes))
	counter(dSlow, float64(m.SlowConsumers))
	counter(dBusy, m.Busy.Seconds())
	buckets := make(map[float64]uint64, len(m.FanoutBuckets))
	for i, le := range m.FanoutBuckets {
		buckets[le] = m.Fanout[i]
	}
	ch <- prometheus.MustNewConstHistogram(dFanout, m.FanoutCount, m.FanoutSum.Seconds(), buckets)
	gauge(dHistFrames, float64(m.HistoryFrames))
	gauge(dHistBytes, float64(m.HistoryBytes))
	gauge(dHistLimit, float64(m.HistoryLimit))
	gauge(dOutHigh, float64(m.OutboundHigh))
	gauge(dOutLimit, float64(m.OutboundLimit))
	counter(dTLSHandshakes, float64(m.TLSHandshakes))
	counter(dTLSFailures, float64(m.TLSFailures))
	counter(dRefused, float64(m.Refused))
	counter(dEvicted, float64(m.Evicted))
}
