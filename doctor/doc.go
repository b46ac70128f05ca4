// Package doctor reads a host's TIME-WAIT pressure and says what to do
// about it: the engine of `closeproxy doctor`.
//
// It owns three jobs, all read-only:
//
//   - counting TIME-WAIT sockets through netlink sock_diag (never by parsing
//     netstat or ss output), split the useful way: the accepting side, by
//     local listening port (cheap: no port is pinned), and the dialing side,
//     by remote ip:port (each socket pins one ephemeral port toward that
//     destination for 60 s), with each destination's share of the usable
//     ephemeral range;
//   - reading the kernel settings that matter (ip_local_port_range,
//     tcp_tw_reuse, tcp_max_tw_buckets and TCPTimeWaitOverflow,
//     tcp_timestamps, tcp_fin_timeout, somaxconn, RLIMIT_NOFILE) and saying
//     in one line what each really does;
//   - given a closeproxy configuration, telling for each leg who holds
//     TIME-WAIT when the peer ends first and when the proxy ends first (the
//     close policy table of DESIGN.md), and, where the proxy withholds its
//     FIN, when the peer stays silent past the grace, as the engine decides
//     it for the leg's mode (tcp or http1: whether a reset could cut a
//     stream the other side still reads), and whether a dialing side will
//     run out of ports at an expected connection rate.
//
// It then writes recommendations as concrete lines, a TOML change or a
// sysctl with its value and why. It never applies them, changes no setting
// and needs no root: a figure it cannot read is named in the report with
// the reason (needs privileges, not Linux).
//
// It does not decide close actions (package policy does) nor sample figures
// for auto and the metrics (package twwatch does). The figures both report
// (the port range less reserved ports, tcp_max_tw_buckets,
// TCPTimeWaitOverflow, the TIME-WAIT sockets) are read with twwatch's
// Kernel readers, so doctor and a running proxy agree.
//
// Usage:
//
//	rep, err := doctor.Collect(doctor.Options{Config: cfg, Rate: 1000})
//	if err != nil {
//		return err
//	}
//	rep.WriteText(os.Stdout) // or rep.WriteJSON(os.Stdout)
package doctor
