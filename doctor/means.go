package doctor

import "fmt"

// What each setting really does, in one line, for the value read (-1 or 0
// when unread).

func meansPortRange(usable, reserved int) string {
	s := fmt.Sprintf("connect() picks local ports here: %d usable toward each destination ip:port", usable)
	if reserved > 0 {
		s += fmt.Sprintf(" (%d reserved left out)", reserved)
	}
	return s + fmt.Sprintf("; a dialing-side TIME-WAIT holds one for %d s, so ≈%d new connections/s per destination at most",
		timeWaitSeconds, usable/timeWaitSeconds)
}

func meansReserved(value string, inRange int, ok bool) string {
	switch {
	case !ok:
		return "ports connect() never picks by itself"
	case value == "":
		return "none: connect() may take any port of the range, even one a service will listen on later"
	}
	return fmt.Sprintf("connect() never picks these (%d inside the range); services can listen on them safely", inRange)
}

func meansTWReuse(v int) string {
	switch v {
	case 0:
		return "0, off: connect() never reuses a local port whose 4-tuple is in TIME-WAIT"
	case 1:
		return "1, on: connect() may reuse a TIME-WAIT 4-tuple older than 1 s; outgoing connections only, needs tcp_timestamps; does nothing for the accepting side"
	case 2:
		return "2, loopback only: as 1 but only for connections over loopback; dialing a remote backend gets no relief"
	}
	return "lets connect() reuse a TIME-WAIT 4-tuple (0 off, 1 on, 2 loopback only); outgoing connections only, needs tcp_timestamps"
}

func meansTimestamps(v int) string {
	switch v {
	case 0:
		return "0, off: tcp_tw_reuse can never apply, and PAWS protection against old duplicates is lost"
	case 1, 2:
		return fmt.Sprintf("%d, on: TCP timestamps (RFC 7323), which tcp_tw_reuse needs to tell a new connection from an old one", v)
	}
	return "TCP timestamps (RFC 7323); tcp_tw_reuse needs them"
}

func meansMaxTW(v int) string {
	if v < 0 {
		return "cap on TIME-WAIT sockets in this network namespace; past it new ones are destroyed at once"
	}
	return fmt.Sprintf("at most %d TIME-WAIT sockets here; past it new ones are destroyed at once (\"time wait bucket table overflow\"), losing their protection against late segments; costs memory, not ports", v)
}

func meansOverflow(v int) string {
	switch {
	case v < 0:
		return "how often tcp_max_tw_buckets was full, since boot"
	case v == 0:
		return "0: tcp_max_tw_buckets has never been full since boot"
	}
	return fmt.Sprintf("%d TIME-WAIT sockets destroyed early since boot because tcp_max_tw_buckets was full", v)
}

func meansFinTimeout(v int) string {
	return fmt.Sprintf("how long an orphaned socket waits in FIN-WAIT-2 for the peer's FIN; it does NOT shorten TIME-WAIT, fixed at %d s in the kernel", timeWaitSeconds)
}

func meansSomaxconn(v int) string {
	if v < 0 {
		return "cap on every listen() backlog"
	}
	return fmt.Sprintf("cap on every listen() backlog (Go asks for it all): more than %d connections waiting for accept() are dropped", v)
}

func meansNoFile(hard uint64) string {
	if hard == 0 {
		return "open descriptors per process; two per proxied session, plus the pools"
	}
	return fmt.Sprintf("this shell's limit on open descriptors; closeproxy raises its soft limit to the hard one at start and needs two per session: ≈%s sessions", limitString(hard/2))
}
