// Package procnet reads the kernel's TCP figures that live in files under
// /proc: the TIME-WAIT count of /proc/net/sockstat, the TcpExt counters of
// /proc/net/netstat, the tcp_max_tw_buckets limit and the ephemeral port
// range with its reserved ports. Package twwatch reads them, through the
// parsers here, for auto, the admin gauges and doctor alike; parsing them
// in one place keeps the three in agreement. Every file is per network namespace
// and readable without privileges; on other systems the reads fail.
package procnet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The files read.
const (
	SockstatPath     = "/proc/net/sockstat"
	NetstatPath      = "/proc/net/netstat"
	MaxTWBucketsPath = "/proc/sys/net/ipv4/tcp_max_tw_buckets"
	PortRangePath    = "/proc/sys/net/ipv4/ip_local_port_range"
	ReservedPath     = "/proc/sys/net/ipv4/ip_local_reserved_ports"
)

// ReadTimeWait returns this namespace's TIME-WAIT sockets ("tw" in
// /proc/net/sockstat).
func ReadTimeWait() (int, error) { return readWith(SockstatPath, SockstatTW) }

// ReadTimeWaitOf returns the TIME-WAIT sockets of the network namespace
// process pid is in (/proc/PID/net/sockstat).
func ReadTimeWaitOf(pid int) (int, error) {
	return readWith(fmt.Sprintf("/proc/%d/net/sockstat", pid), SockstatTW)
}

// ReadMaxTWBuckets returns net.ipv4.tcp_max_tw_buckets.
func ReadMaxTWBuckets() (int, error) { return readWith(MaxTWBucketsPath, Int) }

// ReadTimeWaitOverflow returns this namespace's TcpExt TCPTimeWaitOverflow
// (/proc/net/netstat): the sockets the kernel closed instead of keeping in
// TIME-WAIT, its table being full, since boot.
func ReadTimeWaitOverflow() (int, error) {
	return readWith(NetstatPath, func(b []byte) (int, error) { return NetstatField(b, "TcpExt", "TCPTimeWaitOverflow") })
}

// OverflowMark is TCPTimeWaitOverflow at a moment: whoever counts TIME-WAIT
// sockets it made, in a namespace others fill too, learns from it whether
// the kernel destroyed some since instead of keeping them.
type OverflowMark struct {
	at int
	ok bool
}

// MarkTimeWaitOverflow reads the counter now.
func MarkTimeWaitOverflow() OverflowMark {
	n, err := ReadTimeWaitOverflow()
	return OverflowMark{at: n, ok: err == nil}
}

// Destroyed is how many TIME-WAIT sockets the kernel destroyed since the
// mark, any process's; 0 where the counter cannot be read.
func (m OverflowMark) Destroyed() int {
	n, err := ReadTimeWaitOverflow()
	if !m.ok || err != nil {
		return 0
	}
	return n - m.at
}

// Covers says whether the kernel destroyed, since the mark, at least as
// many TIME-WAIT sockets as the missing ones a count found short (any
// process's, so the count may be someone else's). It returns how many it
// destroyed; with nothing missing it covers nothing.
func (m OverflowMark) Covers(missing int) (destroyed int, ok bool) {
	d := m.Destroyed()
	return d, missing > 0 && d >= missing
}

func readWith(path string, parse func([]byte) (int, error)) (int, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		var v int
		if v, err = parse(b); err == nil {
			return v, nil
		}
	}
	return 0, fmt.Errorf("read %s: %w", path, err)
}

// SockstatTW finds "tw N" on the "TCP:" line of /proc/net/sockstat.
func SockstatTW(b []byte) (int, error) {
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) == 0 || string(f[0]) != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if string(f[i]) == "tw" {
				return strconv.Atoi(string(f[i+1]))
			}
		}
	}
	return 0, errors.New(`no "tw" on the TCP line`)
}

// Int reads a file holding one integer, such as a sysctl.
func Int(b []byte) (int, error) {
	return strconv.Atoi(string(bytes.TrimSpace(b)))
}

// NetstatField finds key in group (such as "TcpExt") of /proc/net/netstat,
// where each group is a line of names followed by a line of values, both
// prefixed "Group:".
func NetstatField(b []byte, group, key string) (int, error) {
	var names [][]byte
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) == 0 || string(f[0]) != group+":" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, n := range names {
			if string(n) == key && i+1 < len(f) {
				return strconv.Atoi(string(f[i+1]))
			}
		}
		break
	}
	return 0, fmt.Errorf("no %s %s counter", group, key)
}

// PortRange parses ip_local_port_range: two numbers, the first no greater
// than the second.
func PortRange(b []byte) (lo, hi int, err error) {
	f := bytes.Fields(b)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ip_local_port_range %q: want two numbers", b)
	}
	if lo, err = strconv.Atoi(string(f[0])); err == nil {
		hi, err = strconv.Atoi(string(f[1]))
	}
	if err != nil {
		return 0, 0, fmt.Errorf("ip_local_port_range %q: %w", b, err)
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("ip_local_port_range %d %d: empty range", lo, hi)
	}
	return lo, hi, nil
}

// ReadPortRange returns how many ports ip_local_port_range holds.
func ReadPortRange() (int, error) {
	return readWith(PortRangePath, func(b []byte) (int, error) {
		lo, hi, err := PortRange(b)
		return hi - lo + 1, err
	})
}

// ReservedInRange counts the ports of an ip_local_reserved_ports list, such
// as "8080,9000-9010", that lie within lo..hi: connect() never picks them.
func ReservedInRange(list string, lo, hi int) (int, error) {
	n := 0
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		a, b, isRange := strings.Cut(item, "-")
		from, err1 := strconv.Atoi(a)
		to, err2 := from, error(nil)
		if isRange {
			to, err2 = strconv.Atoi(b)
		}
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("ip_local_reserved_ports %q: %w", list, err)
		}
		n += max(0, min(to, hi)-max(from, lo)+1)
	}
	return n, nil
}
