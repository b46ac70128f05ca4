package admin

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	poolConnsDesc = prometheus.NewDesc("closeproxy_pool_connections",
		"Backend pool connections by state: idle (ready in the pool) or in_use (handed to a session).",
		[]string{"backend", "state"}, nil)
	poolDialedDesc = prometheus.NewDesc("closeproxy_pool_dialed_total",
		"Successful dials by the backend pool.", []string{"backend"}, nil)
	poolEvictedDesc = prometheus.NewDesc("closeproxy_pool_evicted_total",
		"Pool connections closed with an RST: aged, dead, surplus or at shutdown.", []string{"backend"}, nil)
	poolReusedDesc = prometheus.NewDesc("closeproxy_pool_reused_total",
		"Pool connections handed out again after serving an earlier request.", []string{"backend"}, nil)
)

// poolCollector reads the pools' figures at scrape time from the attached
// server; before Attach it reports nothing.
type poolCollector struct{ a *Admin }

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConnsDesc
	ch <- poolDialedDesc
	ch <- poolEvictedDesc
	ch <- poolReusedDesc
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.a.readiness()
	if r == nil {
		return
	}
	for name, s := range r.PoolStats() {
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.Idle), name, "idle")
		ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.InUse), name, "in_use")
		ch <- prometheus.MustNewConstMetric(poolDialedDesc, prometheus.CounterValue, float64(s.Dialed), name)
		ch <- prometheus.MustNewConstMetric(poolEvictedDesc, prometheus.CounterValue, float64(s.Evicted), name)
		ch <- prometheus.MustNewConstMetric(poolReusedDesc, prometheus.CounterValue, float64(s.Reused), name)
	}
}

var (
	serverUpDesc = prometheus.NewDesc("closeproxy_backend_server_up",
		"1 while the server takes new sessions (up by its health checks and not ejected), else 0.",
		[]string{"backend", "server"}, nil)
	serverWeightDesc = prometheus.NewDesc("closeproxy_backend_server_weight",
		"The server's weight now: below its configured weight while it is eased in after coming back.",
		[]string{"backend", "server"}, nil)
	serverActiveDesc = prometheus.NewDesc("closeproxy_backend_server_active_sessions",
		"Sessions using the server now.", []string{"backend", "server"}, nil)
	serverEjectionsDesc = prometheus.NewDesc("closeproxy_backend_server_ejections_total",
		"Times the server was taken down, by cause: check (health.fall failed checks) or passive (health.eject_after dial failures or resets).",
		[]string{"backend", "server", "cause"}, nil)
)

// serverCollector reads the servers' health at scrape time.
type serverCollector struct{ a *Admin }

// Describe implements prometheus.Collector.
func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serverUpDesc
	ch <- serverWeightDesc
	ch <- serverActiveDesc
	ch <- serverEjectionsDesc
}

// Collect implements prometheus.Collector.
func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.a.readiness()
	if r == nil {
		return
	}
	for name, servers := range r.Servers() {
		for _, sv := range servers {
			up := 0.0
			if sv.Health.Up {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(serverUpDesc, prometheus.GaugeValue, up, name, sv.Address)
			ch <- prometheus.MustNewConstMetric(serverWeightDesc, prometheus.GaugeValue, sv.Weight, name, sv.Address)
			ch <- prometheus.MustNewConstMetric(serverActiveDesc, prometheus.GaugeValue, float64(sv.Active), name, sv.Address)
			ch <- prometheus.MustNewConstMetric(serverEjectionsDesc, prometheus.CounterValue, float64(sv.Health.Ejections.Check), name, sv.Address, "check")
			ch <- prometheus.MustNewConstMetric(serverEjectionsDesc, prometheus.CounterValue, float64(sv.Health.Ejections.Passive), name, sv.Address, "passive")
		}
	}
}
