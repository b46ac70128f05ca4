package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/closeproxy/closeproxy/twwatch"
)

var (
	kernelTWDesc = prometheus.NewDesc("closeproxy_kernel_time_wait",
		"TIME-WAIT sockets of this host (network namespace) by leg, from sock_diag: front = local port is a listener's, back = peer is a backend address (any connection of the host's to it counts: a TIME-WAIT socket has no owner).",
		[]string{"leg"}, nil)
	kernelHostTWDesc = prometheus.NewDesc("closeproxy_kernel_time_wait_host",
		"TIME-WAIT sockets of the whole network namespace (/proc/net/sockstat tw).", nil, nil)
	kernelMaxTWDesc = prometheus.NewDesc("closeproxy_kernel_tcp_max_tw_buckets",
		"net.ipv4.tcp_max_tw_buckets: past it the kernel drops TIME-WAIT early.", nil, nil)
	kernelOverflowDesc = prometheus.NewDesc("closeproxy_kernel_tcp_timewait_overflow",
		"TcpExt TCPTimeWaitOverflow (/proc/net/netstat): TIME-WAIT sockets the kernel could not keep, a counter since boot; closeproxy_kernel_time_wait_overflow_total under its older name and type.", nil, nil)
	kernelOverflowTotalDesc = prometheus.NewDesc("closeproxy_kernel_time_wait_overflow_total",
		"TIME-WAIT sockets the kernel destroyed at once for want of room (tcp_max_tw_buckets reached): TcpExt TCPTimeWaitOverflow of /proc/net/netstat, a counter of the whole network namespace since boot.", nil, nil)
)

// kernelCollector reports a sample no older than
// admin.kernel_sample_interval (twwatch.Watcher.Current): taken at the
// scrape unless the latest is younger, so an idle proxy nobody scrapes
// reads nothing; figures not read are absent.
type kernelCollector struct {
	w *twwatch.Watcher
}

// Describe implements prometheus.Collector.
func (k *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- kernelTWDesc
	ch <- kernelHostTWDesc
	ch <- kernelMaxTWDesc
	ch <- kernelOverflowDesc
	ch <- kernelOverflowTotalDesc
}

// Collect implements prometheus.Collector.
func (k *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	s := k.w.Current()
	emit := func(d *prometheus.Desc, f twwatch.Figure, labels ...string) {
		if f.OK {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(f.Value), labels...)
		}
	}
	emit(kernelTWDesc, s.Front, "front")
	emit(kernelTWDesc, s.Back, "back")
	emit(kernelHostTWDesc, s.Host)
	emit(kernelMaxTWDesc, s.MaxTWBuckets)
	emit(kernelOverflowDesc, s.Overflow)
	if s.Overflow.OK {
		ch <- prometheus.MustNewConstMetric(kernelOverflowTotalDesc, prometheus.CounterValue, float64(s.Overflow.Value))
	}
}
