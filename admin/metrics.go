package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
	"github.com/closeproxy/closeproxy/proxy"
)

var _ proxy.Observer = (*Admin)(nil)

// Dial failure kinds, the kind label of closeproxy_backend_dial_failures_total.
const (
	kindLocal   = "local"   // this host's failure: ports, descriptors, buffers
	kindBackend = "backend" // refused, timed out, unreachable
)

// dialKind says whose failure err is: kindLocal (ours: ports, descriptors,
// buffers; never the backend's, varnish-cache#2622) or kindBackend.
func dialKind(err error) string {
	if pool.IsLocal(err) {
		return kindLocal
	}
	return kindBackend
}

// dialBuckets run from 100µs to 5s.
var dialBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
}

// durationBuckets run from 1 ms to 30 min: a short request to a long-lived
// stream.
var durationBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 300, 1800,
}

// metrics are the collectors the Observer feeds.
type metrics struct {
	accepted     *vec[prometheus.Counter]
	active       *vec[prometheus.Gauge]
	rejected     *vec[prometheus.Counter]
	sessions     *vec[prometheus.Counter]
	bySession    *vec[prometheus.Counter]
	firstFIN     *vec[prometheus.Counter]
	timeWait     *vec[prometheus.Counter]
	closes       *vec[prometheus.Counter]
	reasons      *vec[prometheus.Counter]
	cuts         *vec[prometheus.Counter]
	proxyHeaders *vec[prometheus.Counter]
	headerReject *vec[prometheus.Counter]
	dialDuration *vec[prometheus.Observer]
	dialFailures *vec[prometheus.Counter]
	autoSwitches *vec[prometheus.Counter]
	autoReasons  *vec[prometheus.Counter]
	bytes        *vec[prometheus.Counter]
	duration     *vec[prometheus.Observer]
	reloadOK     prometheus.Gauge
	reloadAt     prometheus.Gauge
}

func counter(name, help string, labels ...string) *vec[prometheus.Counter] {
	return newVec[prometheus.Counter](prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

func newMetrics() *metrics {
	return &metrics{
		accepted: counter("closeproxy_connections_accepted_total", "Connections accepted, by listener.", "listener"),
		active: newVec[prometheus.Gauge](prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "closeproxy_connections_active",
			Help: "Connections accepted and not yet ended or rejected, by listener."}, []string{"listener"})),
		rejected:     counter("closeproxy_connections_rejected_total", "Connections reset at once, by listener and reason (over_limit).", "listener", "reason"),
		sessions:     counter("closeproxy_sessions_total", "Sessions ended, by listener, backend and outcome.", "listener", "backend", "outcome"),
		bySession:    counter("closeproxy_backend_server_sessions_total", "Sessions ended, by backend and the server they used (back.server).", "backend", "server"),
		firstFIN:     counter("closeproxy_first_fin_total", "Sessions by leg and whose FIN came first, from the kernel's TCP state (client|backend|proxy|both|none|unknown).", "leg", "side"),
		timeWait:     counter("closeproxy_time_wait_placed_total", "Sessions by leg and where TIME-WAIT landed, as the records say (client|backend|proxy|none).", "leg", "side"),
		closes:       counter("closeproxy_closes_total", "How the proxy's end of each leg closed (fin|reset|peer_reset|error|pooled); a leg that never opened is not counted.", "leg", "close"),
		reasons:      counter("closeproxy_close_reasons_total", "Closes that left the policy table's plain path, by leg and reason (the record's <leg>.reason).", "leg", "reason"),
		cuts:         counter("closeproxy_cut_total", "Legs whose peer got a stream cut short, ended by an RST (the record's <leg>.cut).", "leg"),
		proxyHeaders: counter("closeproxy_proxy_headers_total", "Sessions by listener and PROXY header version read (v1|v2|none: no header, or the client reset or shutdown cut the session before one); those refused at their header are counted in closeproxy_proxy_header_rejects_total instead.", "listener", "version"),
		headerReject: counter("closeproxy_proxy_header_rejects_total", "Sessions refused for a bad, slow, missing or untrusted PROXY header.", "listener"),
		dialDuration: newVec[prometheus.Observer](prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "closeproxy_backend_dial_duration_seconds", Help: "Duration of successful backend dials, pool warm-ups included.",
			Buckets: dialBuckets,
		}, []string{"backend"})),
		dialFailures: counter("closeproxy_backend_dial_failures_total", "Failed backend dials, by backend and whose failure: local (ours: ports, descriptors, buffers) or backend.", "backend", "kind"),
		autoSwitches: counter("closeproxy_auto_switches_total", "time_wait = \"auto\" switching new closes to safe resets (to=nowhere) or back (to=accepting), by pressure.", "reason", "to"),
		autoReasons:  counter("closeproxy_auto_decisions_total", "Closes decided by time_wait = \"auto\", by leg and reason.", "leg", "reason"),
		bytes: counter("closeproxy_bytes_total",
			"Bytes relayed by ended sessions, by listener, leg (front|back) and direction: in (received from that leg's peer) or out (sent to it).",
			"listener", "leg", "direction"),
		duration: newVec[prometheus.Observer](prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "closeproxy_session_duration_seconds", Help: "Duration of ended sessions, from accept to the record.",
			Buckets: durationBuckets,
		}, []string{"listener"})),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "closeproxy_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful (1) or refused (0)."}),
		reloadAt: prometheus.NewGauge(prometheus.GaugeOpts{Name: "closeproxy_config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration load, the start's included."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.accepted, m.active, m.rejected, m.sessions, m.bySession, m.firstFIN, m.timeWait,
		m.closes, m.reasons, m.cuts, m.proxyHeaders, m.headerReject, m.dialDuration, m.dialFailures,
		m.autoSwitches, m.autoReasons, m.bytes, m.duration, m.reloadOK, m.reloadAt,
	}
}

// initLabels creates the series of every configured listener and backend at
// zero, so that rate() sees them from the first scrape.
func (m *metrics) initLabels(cfg *config.Config) {
	for _, leg := range []string{"front", "back"} {
		m.cuts.at(leg)
		for _, r := range policy.Reasons {
			m.reasons.at2(leg, string(r))
		}
		for _, c := range policy.Closes {
			if c != policy.ClosePooled || leg == "back" {
				m.closes.at2(leg, string(c))
			}
		}
		other := policy.SideBackend // the other leg's peer
		if leg == "back" {
			other = policy.SideClient
		}
		for _, s := range policy.Sides {
			if s != other {
				m.firstFIN.at2(leg, string(s))
				m.timeWait.at2(leg, string(s))
			}
		}
	}
	for _, l := range cfg.Listeners {
		for _, o := range engine.Outcomes {
			m.sessions.at3(l.Name, l.Backend, string(o))
		}
		for _, v := range []string{"v1", "v2", "none"} {
			m.proxyHeaders.at2(l.Name, v)
		}
		m.accepted.at(l.Name)
		m.active.at(l.Name)
		m.rejected.at2(l.Name, string(engine.OutcomeOverLimit))
		m.headerReject.at(l.Name)
		m.duration.at(l.Name)
		for _, leg := range []string{"front", "back"} {
			m.bytes.at3(l.Name, leg, "in")
			m.bytes.at3(l.Name, leg, "out")
		}
	}
	for _, b := range cfg.Backends {
		m.dialFailures.at2(b.Name, kindLocal)
		m.dialFailures.at2(b.Name, kindBackend)
		for _, sv := range b.ServerList() {
			m.bySession.at2(b.Name, sv.Address)
		}
	}
}

// AutoSwitched implements proxy.Observer.
func (a *Admin) AutoSwitched(reason string, on bool) {
	to := "accepting"
	if on {
		to = "nowhere"
	}
	a.m.autoSwitches.at2(reason, to).Inc()
}

// Accepted implements proxy.Observer.
func (a *Admin) Accepted(listener string) {
	a.m.accepted.at(listener).Inc()
	a.m.active.at(listener).Inc()
}

// Rejected implements proxy.Observer.
func (a *Admin) Rejected(listener, reason string) {
	a.m.rejected.at2(listener, reason).Inc()
	a.m.active.at(listener).Dec()
}

// Ended implements proxy.Observer. A rejected connection (over_limit) also
// ends with a record; Rejected already took it out of the active gauge.
func (a *Admin) Ended(td *engine.Teardown) {
	m := a.m
	if td.Outcome != engine.OutcomeOverLimit {
		m.active.at(td.Listener).Dec()
	}
	m.sessions.at3(td.Listener, td.Backend, string(td.Outcome)).Inc()
	if td.BackServer != "" {
		m.bySession.at2(td.Backend, td.BackServer).Inc()
	}
	m.observeLeg("front", &td.Front)
	m.observeLeg("back", &td.Back)
	m.countBytes(td.Listener, "front", &td.Front)
	m.countBytes(td.Listener, "back", &td.Back)
	m.duration.at(td.Listener).Observe(td.Duration.Seconds())
	version := td.ProxyProtocol
	if version == "" {
		version = "none"
	}
	if td.Outcome == engine.OutcomeBadProxyHeader {
		m.headerReject.at(td.Listener).Inc() // not a session without a header
	} else {
		m.proxyHeaders.at2(td.Listener, version).Inc()
	}
}

func (m *metrics) observeLeg(leg string, l *engine.LegRecord) {
	m.firstFIN.at2(leg, side(l.FirstFIN)).Inc()
	m.timeWait.at2(leg, side(l.TimeWait)).Inc()
	if l.Close != "" && l.Close != policy.CloseNone { // the leg never opened: nothing closed
		m.closes.at2(leg, string(l.Close)).Inc()
	}
	if l.Reason != "" {
		m.reasons.at2(leg, string(l.Reason)).Inc()
	}
	if l.Cut {
		m.cuts.at(leg).Inc()
	}
	if l.AutoReason != "" {
		m.autoReasons.at2(leg, l.AutoReason).Inc()
	}
}

// countBytes adds a leg's byte counts, once per session: the relay's hot
// path counts nothing for the metrics.
func (m *metrics) countBytes(listener, leg string, l *engine.LegRecord) {
	if l.BytesIn > 0 {
		m.bytes.at3(listener, leg, "in").Add(float64(l.BytesIn))
	}
	if l.BytesOut > 0 {
		m.bytes.at3(listener, leg, "out").Add(float64(l.BytesOut))
	}
}

// ConfigReloaded records a reload attempt: refused (ok false) or applied.
func (a *Admin) ConfigReloaded(ok bool) {
	if !ok {
		a.m.reloadOK.Set(0)
		return
	}
	a.m.reloadOK.Set(1)
	a.m.reloadAt.SetToCurrentTime()
}

func side(s policy.Side) string {
	if s == "" {
		return string(policy.SideNone)
	}
	return string(s)
}

// Dialed implements proxy.Observer: it feeds the dial metrics and, on
// success, the backend's readiness.
func (a *Admin) Dialed(backend string, d time.Duration, err error) {
	if err != nil {
		a.m.dialFailures.at2(backend, dialKind(err)).Inc()
		return
	}
	a.m.dialDuration.at(backend).Observe(d.Seconds())
	if b := a.set.Load().byName[backend]; b != nil {
		b.answered(time.Now())
	}
}
