package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/closeproxy/closeproxy/sockdiag"
)

// readSockstatTW returns the host's TIME-WAIT sockets ("tw" in
// /proc/net/sockstat), for this network namespace.
func readSockstatTW() (int, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, fmt.Errorf("read sockstat: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "TCP:") {
			continue
		}
		f := strings.Fields(line)
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				return strconv.Atoi(f[i+1])
			}
		}
	}
	return 0, errors.New("read sockstat: no TCP tw figure")
}

func readTWBuckets() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_max_tw_buckets")
	if err != nil {
		return 0, fmt.Errorf("read tcp_max_tw_buckets: %w", err)
	}
	return strconv.Atoi(string(bytes.TrimSpace(b)))
}

// portRange is the size of ip_local_port_range.
func portRange() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, fmt.Errorf("read ip_local_port_range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, errors.New("read ip_local_port_range: not two numbers")
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0, errors.New("read ip_local_port_range: not a range")
	}
	return hi - lo + 1, nil
}

// timeWaitToward counts this host's TIME-WAIT sockets whose peer is each
// of dests (the proxy's dialing side toward its backends), and returns the
// usable port range.
func timeWaitToward(dests []netip.AddrPort) (map[netip.AddrPort]int, int, error) {
	if len(dests) == 0 {
		return nil, 0, nil
	}
	n, err := portRange()
	if err != nil {
		return nil, 0, err
	}
	socks, err := sockdiag.List(sockdiag.TimeWait)
	if err != nil {
		return nil, 0, err
	}
	counts := make(map[netip.AddrPort]int, len(dests))
	for _, d := range dests {
		counts[d] = 0
	}
	for _, s := range socks {
		if _, ok := counts[s.Peer]; ok && s.State == sockdiag.TimeWait {
			counts[s.Peer]++
		}
	}
	return counts, n, nil
}
