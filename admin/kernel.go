package admin

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/sockdiag"
)

var (
	kernelTWDesc = prometheus.NewDesc("closeproxy_kernel_time_wait",
		"TIME-WAIT sockets of this proxy by leg, from sock_diag: front = local port is a listener's, back = peer is a backend address.",
		[]string{"leg"}, nil)
	kernelHostTWDesc = prometheus.NewDesc("closeproxy_kernel_time_wait_host",
		"TIME-WAIT sockets of the whole network namespace (/proc/net/sockstat tw).", nil, nil)
	kernelMaxTWDesc = prometheus.NewDesc("closeproxy_kernel_tcp_max_tw_buckets",
		"net.ipv4.tcp_max_tw_buckets: past it the kernel drops TIME-WAIT early.", nil, nil)
	kernelOverflowDesc = prometheus.NewDesc("closeproxy_kernel_tcp_timewait_overflow",
		"TcpExt TCPTimeWaitOverflow (/proc/net/netstat): TIME-WAIT sockets the kernel could not keep, a counter since boot.", nil, nil)
)

// resolveTimeout bounds the one-time resolution of a backend host name.
const resolveTimeout = 2 * time.Second

// figure is one kernel reading; ok is false when it could not be read.
type figure struct {
	v  float64
	ok bool
}

func have(v int) figure { return figure{v: float64(v), ok: true} }

// kernelSample is one reading of the kernel's TIME-WAIT figures.
type kernelSample struct {
	front, back figure // this proxy's TIME-WAIT sockets by leg
	host        figure // /proc/net/sockstat tw
	maxTW       figure // tcp_max_tw_buckets
	overflow    figure // TCPTimeWaitOverflow
}

// kernelTargets say which TIME-WAIT sockets belong to which leg.
type kernelTargets struct {
	frontPorts map[uint16]bool         // the listeners' ports (port 0 left out: unknowable)
	backAddrs  map[netip.AddrPort]bool // the backends' addresses, names resolved once
}

func newKernelTargets(cfg *config.Config, log *zap.Logger) kernelTargets {
	t := kernelTargets{frontPorts: map[uint16]bool{}, backAddrs: map[netip.AddrPort]bool{}}
	for _, l := range cfg.Listeners {
		_, port, err := splitHostPort(l.Listen)
		if err != nil || port == 0 {
			log.Debug("listener port unknown; its TIME-WAIT is not counted",
				zap.String("listener", l.Name), zap.String("listen", l.Listen))
			continue
		}
		t.frontPorts[port] = true
	}
	for _, b := range cfg.Backends {
		for _, ap := range resolveBackend(b, log) {
			t.backAddrs[ap] = true
		}
	}
	return t
}

// splitHostPort splits host:port and looks the port up (a number or a
// service name).
func splitHostPort(hostport string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil {
		return "", 0, err
	}
	return host, uint16(port), nil
}

// resolveBackend returns the addresses of the backend's servers: their IPs,
// or the IPs of their host names resolved once now.
func resolveBackend(b config.Backend, log *zap.Logger) []netip.AddrPort {
	var out []netip.AddrPort
	for _, srv := range b.ServerList() {
		out = append(out, resolveServer(b.Name, srv.Address, log)...)
	}
	return out
}

func resolveServer(backend, address string, log *zap.Logger) []netip.AddrPort {
	log = log.With(zap.String("backend", backend), zap.String("address", address))
	host, port, err := splitHostPort(address)
	if err != nil {
		log.Warn("backend address unparsed; its TIME-WAIT is not counted", zap.Error(err))
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap().WithZone(""), port)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		log.Warn("backend host unresolved; its TIME-WAIT is not counted", zap.Error(err))
		return nil
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap().WithZone(""), port))
	}
	log.Info("backend host resolved once for the kernel TIME-WAIT figures",
		zap.Stringers("addresses", out))
	return out
}

// count counts the TIME-WAIT sockets of each leg. sock_diag also answers a
// TIME-WAIT request with orphaned FIN-WAIT-2 timewait sockets (state 5):
// only state TIME-WAIT counts. A leg with no known target is left unread.
func (t kernelTargets) count(socks []sockdiag.Socket) (front, back figure) {
	if len(t.frontPorts) > 0 {
		front = have(sockdiag.Count(socks, func(s sockdiag.Socket) bool {
			return s.State == sockdiag.TimeWait && t.frontPorts[s.Local.Port()]
		}))
	}
	if len(t.backAddrs) > 0 {
		back = have(sockdiag.Count(socks, func(s sockdiag.Socket) bool {
			return s.State == sockdiag.TimeWait && t.backAddrs[s.Peer]
		}))
	}
	return front, back
}

// kernelCollector reports the last kernel sample; figures not read are
// absent.
type kernelCollector struct {
	targets atomic.Pointer[kernelTargets]
	failing bool // sampler goroutine only: the last sample had an error

	mu   sync.Mutex
	last kernelSample
}

// sample reads the kernel figures and keeps them for Collect. It runs on
// the sampler goroutine only.
func (k *kernelCollector) sample(log *zap.Logger) {
	s, err := readKernel(k.targets.Load())
	k.mu.Lock()
	k.last = s
	k.mu.Unlock()
	switch {
	case err != nil && !k.failing:
		log.Warn("kernel TIME-WAIT figures incomplete", zap.Error(err))
	case err != nil:
		log.Debug("kernel TIME-WAIT figures incomplete", zap.Error(err))
	case k.failing:
		log.Info("kernel TIME-WAIT figures read again")
	}
	k.failing = err != nil
}

// Describe implements prometheus.Collector.
func (k *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- kernelTWDesc
	ch <- kernelHostTWDesc
	ch <- kernelMaxTWDesc
	ch <- kernelOverflowDesc
}

// Collect implements prometheus.Collector.
func (k *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	k.mu.Lock()
	s := k.last
	k.mu.Unlock()
	emit := func(d *prometheus.Desc, f figure, labels ...string) {
		if f.ok {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f.v, labels...)
		}
	}
	emit(kernelTWDesc, s.front, "front")
	emit(kernelTWDesc, s.back, "back")
	emit(kernelHostTWDesc, s.host)
	emit(kernelMaxTWDesc, s.maxTW)
	emit(kernelOverflowDesc, s.overflow)
}
