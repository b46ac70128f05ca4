// Package twwatch owns the one watcher of the kernel's TIME-WAIT figures
// that everything in a closeproxy process reads: time_wait = "auto"
// decides from it, the admin's closeproxy_kernel_* gauges report it, and
// `closeproxy doctor` reads the same figures through its Kernel readers.
//
// It is a package because those three used to sample on their own, from
// different address lists (auto knew only backends written as ip:port, the
// metrics resolved host names), so auto's decisions and /metrics could
// disagree about the same kernel. Here there is one list of targets, one
// sampler goroutine and one latest Sample:
//
//   - Targets say which TIME-WAIT sockets are the proxy's: the front leg's
//     by local port (a listener's), the back leg's by peer address (every
//     backend server's, host names resolved once per configuration load).
//   - A Sample holds the host's TIME-WAIT count (/proc/net/sockstat tw),
//     net.ipv4.tcp_max_tw_buckets, TcpExt TCPTimeWaitOverflow, the usable
//     ephemeral ports (ip_local_port_range less reserved ports), and the
//     proxy's TIME-WAIT by leg and toward each backend address (sock_diag,
//     filtered in the kernel). A figure that could not be read says so.
//   - A Watcher samples at its start and after each reload, then every
//     Interval when some leg uses auto (auto.sample_interval), which
//     decides from samples as sessions end. The metrics take theirs on
//     demand (Current: a sample no older than the admin's
//     kernel_sample_interval, taken at the scrape if need be), so a proxy
//     without auto that nobody scrapes walks no socket table: idle, a
//     sidecar costs nothing here. Either way sampling never takes more
//     than 1 % of one core (a sample that cost d of the thread's CPU is
//     followed or served for at least 100 × d). Readers take Latest or
//     Current, or Subscribe to be called with each new sample.
//
// It reads and reports; it decides nothing (package policy decides auto's
// hysteresis, package proxy keeps its state and its between-sample
// estimates) and serves nothing (package admin renders the gauges). The
// low-level readers are packages sockdiag and procnet.
//
// Usage (one watcher per process):
//
//	w := twwatch.New(cfg, log) // resolves backend host names; starts nothing
//	adm := admin.New(cfg, log, admin.WithWatcher(w))
//	srv, err := proxy.New(cfg, log, proxy.WithObserver(adm), proxy.WithWatcher(w))
//	go w.Run(ctx)              // samples until ctx ends
//	// on reload: srv.Reload(ctx, newCfg), then w.Update(newCfg)
package twwatch
