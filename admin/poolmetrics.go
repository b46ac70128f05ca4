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
