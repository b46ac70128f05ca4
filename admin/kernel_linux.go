package admin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/closeproxy/closeproxy/sockdiag"
)

// The kernel files read; all are readable without root and all are per
// network namespace.
const (
	sockstatPath  = "/proc/net/sockstat"
	maxTWPath     = "/proc/sys/net/ipv4/tcp_max_tw_buckets"
	netstatPath   = "/proc/net/netstat"
	overflowGroup = "TcpExt"
	overflowKey   = "TCPTimeWaitOverflow"
)

// readKernel reads every figure it can; the error joins those it could not.
func readKernel(t *kernelTargets) (kernelSample, error) {
	var s kernelSample
	var errs []error
	if socks, err := sockdiag.List(sockdiag.TimeWait); err != nil {
		errs = append(errs, fmt.Errorf("list TIME-WAIT sockets: %w", err))
	} else {
		s.front, s.back = t.count(socks)
	}
	read := func(f *figure, path string, parse func([]byte) (int, error)) {
		b, err := os.ReadFile(path)
		if err == nil {
			var v int
			if v, err = parse(b); err == nil {
				*f = have(v)
				return
			}
		}
		errs = append(errs, fmt.Errorf("read %s: %w", path, err))
	}
	read(&s.host, sockstatPath, parseSockstatTW)
	read(&s.maxTW, maxTWPath, parseInt)
	read(&s.overflow, netstatPath, func(b []byte) (int, error) {
		return parseNetstat(b, overflowGroup, overflowKey)
	})
	return s, errors.Join(errs...)
}

// parseSockstatTW finds "tw N" on the "TCP:" line of /proc/net/sockstat.
func parseSockstatTW(b []byte) (int, error) {
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

// parseInt reads a file holding one integer.
func parseInt(b []byte) (int, error) {
	return strconv.Atoi(string(bytes.TrimSpace(b)))
}

// parseNetstat finds key in group of /proc/net/netstat, where each group is
// a line of names followed by a line of values, both prefixed "Group:".
func parseNetstat(b []byte, group, key string) (int, error) {
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
	return 0, fmt.Errorf("no %s %s", group, key)
}
