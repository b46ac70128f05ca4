// Package admin owns the admin HTTP listener — /metrics, /healthz, /readyz —
// and the Prometheus collectors behind /metrics. It never touches the data
// path: the proxy reports to it through proxy.Observer (Admin implements it),
// the pools and servers are read at scrape time through Readiness.PoolStats
// and Readiness.Servers, and the
// kernel's TIME-WAIT figures are a sample of the process's
// twwatch.Watcher (WithWatcher) taken at the scrape unless the latest is
// younger than admin.kernel_sample_interval (the sample auto decides from,
// when a leg uses auto); an Admin given none makes its own, which Serve runs.
//
// Endpoints:
//
//   - /healthz: 200 "ok" while the process runs.
//   - /readyz: 200 "ready" when not draining, the proxy is attached and
//     serving, and every configured backend can take sessions: one whose
//     servers are health-checked while at least one server is up; one
//     without checks when a server answered a dial in the last 10 s.
//     A backend with no such dial has its servers probed in turn (at most once per 2 s, bounded by
//     its connect_timeout, closed with an RST so no TIME-WAIT is left). A
//     probe that fails for a local reason (EADDRNOTAVAIL, EMFILE, …) does not
//     count against the backend: port exhaustion is ours. Otherwise 503,
//     with one line per reason.
//   - /metrics: the registry of this Admin (not the global one), with the Go
//     and process collectors.
//   - POST /drain: SetDraining, then Drain on the attached server when it
//     implements Drainer; 202 at once, or with ?wait=D 200 "drained" once
//     its sessions are gone (503 when D ran out). Loopback clients only.
//
// The HTTP server bounds its clients (httpLimits): timeouts on every phase
// and at most 64 connections open at once; more wait in the kernel's
// accept queue, holding no descriptor of the process.
//
// Metrics:
//
//	closeproxy_connections_accepted_total{listener}
//	closeproxy_connections_active{listener}
//	closeproxy_connections_rejected_total{listener,reason}
//	closeproxy_http1_sessions_parked
//	closeproxy_sessions_total{listener,backend,outcome}
//	closeproxy_first_fin_total{leg,side}
//	closeproxy_time_wait_placed_total{leg,side}
//	closeproxy_closes_total{leg,close}
//	closeproxy_close_reasons_total{leg,reason}
//	closeproxy_cut_total{leg}
//	closeproxy_proxy_headers_total{listener,version}
//	closeproxy_proxy_header_rejects_total{listener}
//	closeproxy_backend_dial_duration_seconds{backend}   successful dials only
//	closeproxy_backend_dial_failures_total{backend,kind} kind: local|backend
//	closeproxy_pool_connections{backend,state}           state: idle|in_use
//	closeproxy_pool_dialed_total{backend}
//	closeproxy_pool_evicted_total{backend}
//	closeproxy_pool_reused_total{backend}
//	closeproxy_backend_server_up{backend,server}         1 up, 0 down or ejected
//	closeproxy_backend_server_weight{backend,server}     eased in after coming back
//	closeproxy_backend_server_active_sessions{backend,server}
//	closeproxy_backend_server_sessions_total{backend,server}
//	closeproxy_backend_server_ejections_total{backend,server,cause} cause: check|passive
//	closeproxy_kernel_time_wait{leg}                    Linux: sock_diag
//	closeproxy_kernel_time_wait_host                    Linux: /proc/net/sockstat tw
//	closeproxy_kernel_tcp_max_tw_buckets                Linux: net.ipv4.tcp_max_tw_buckets
//	closeproxy_kernel_tcp_timewait_overflow             Linux: TcpExt TCPTimeWaitOverflow (gauge)
//	closeproxy_kernel_time_wait_overflow_total          the same figure, typed counter
//	closeproxy_auto_decisions_total{leg,reason}         time_wait = "auto"
//	closeproxy_auto_switches_total{reason,to}           to: nowhere|accepting
//	closeproxy_bytes_total{listener,leg,direction}      direction: in|out, from the records
//	closeproxy_session_duration_seconds{listener}       histogram, from the records
//	closeproxy_teardown_records_lost_total              writes that failed (WithRecordsLost)
//	closeproxy_teardown_records_writing                 ended sessions whose record write is under way
//	closeproxy_config_last_reload_successful            1 or 0 (ConfigReloaded)
//	closeproxy_config_last_reload_success_timestamp_seconds
//	closeproxy_build_info{version,goversion}            1 (WithVersion)
//
// Label values are the words of the teardown records and the configuration.
// The kernel figures are the last sample (the overflow counter too: a
// counter of the whole network namespace, read, not counted here); a figure that could not
// be read (or any of them off Linux) is absent rather than zero.
//
// Usage:
//
//	tw := twwatch.New(cfg, log)
//	adm := admin.New(cfg, log, admin.WithWatcher(tw))
//	srv, err := proxy.New(cfg, log, proxy.WithObserver(adm), proxy.WithWatcher(tw))
//	adm.Attach(srv)
//	go tw.Run(ctx)
//	go adm.Serve(ctx, adminListener)
//	// on SIGTERM: adm.SetDraining(), then shut the proxy down (POST /drain
//	// does the first part earlier: srv.Drain, the process keeps running)
package admin
