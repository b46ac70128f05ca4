package doctor

import (
	"fmt"
	"io/fs"
	"net/netip"
	"testing"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
)

// fakeHost is a fabricated host: its files, sockets and limits, so tests
// never depend on the machine they run on.
type fakeHost struct {
	files   map[string]string
	denied  map[string]bool // paths an unprivileged reader may not open
	socks   []sockdiag.Socket
	sockErr error
	goos    string
	noFile  [2]uint64
}

func (h fakeHost) source() source {
	return source{
		kernel: twwatch.Kernel{
			ListSockets: func(*sockdiag.Filter, ...sockdiag.State) ([]sockdiag.Socket, error) { return h.socks, h.sockErr },
			ReadFile: func(path string) ([]byte, error) {
				if h.denied[path] {
					return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrPermission}
				}
				s, ok := h.files[path]
				if !ok {
					return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
				}
				return []byte(s), nil
			},
		},
		noFile: func() (uint64, uint64, error) {
			if h.noFile[1] == 0 {
				return 0, 0, fmt.Errorf("RLIMIT_NOFILE: no such limit on %s", h.goos)
			}
			return h.noFile[0], h.noFile[1], nil
		},
		goos: h.goos,
	}
}

// busyHost has a narrowed port range, an old-fashioned somaxconn, a
// TIME-WAIT table that once overflowed, and TIME-WAIT on both sides:
// 300 accepted on :8080 (a wildcard listener), 40 on 10.0.0.1:9090 (a
// listener on that address), 700 dialed toward 10.0.0.2:8081 and 5 toward
// 10.0.0.3:80, plus orphaned FIN-WAIT-2 sockets that are not TIME-WAIT.
func busyHost() fakeHost {
	h := fakeHost{goos: "linux", noFile: [2]uint64{1024, 4096}, files: map[string]string{
		procIPv4 + "ip_local_port_range":     "40000\t41023\n",
		procIPv4 + "ip_local_reserved_ports": "41000-41010,50000\n",
		procIPv4 + "tcp_tw_reuse":            "2\n",
		procIPv4 + "tcp_timestamps":          "1\n",
		procIPv4 + "tcp_max_tw_buckets":      "1200\n",
		procIPv4 + "tcp_fin_timeout":         "30\n",
		"/proc/sys/net/core/somaxconn":       "128\n",
		pathNetstat: "TcpExt: SyncookiesSent TW TCPTimeWaitOverflow\nTcpExt: 0 12345 17\n" +
			"IpExt: InNoRoutes\nIpExt: 0\n",
	}}
	self := netip.MustParseAddr("10.0.0.1")
	h.socks = append(h.socks,
		sock(stateListen, "0.0.0.0:8080", "0.0.0.0:0"),
		sock(stateListen, "10.0.0.1:9090", "0.0.0.0:0"),
		sock(stateListen, "127.0.0.1:9901", "0.0.0.0:0"))
	for i := range 300 {
		h.socks = append(h.socks, sock(sockdiag.TimeWait, "10.0.0.1:8080", fmt.Sprintf("10.1.0.%d:%d", i%7+1, 50000+i)))
	}
	for i := range 40 {
		h.socks = append(h.socks, sock(sockdiag.TimeWait, "10.0.0.1:9090", fmt.Sprintf("10.1.0.9:%d", 30000+i)))
	}
	for i := range 700 {
		h.socks = append(h.socks, sock(sockdiag.TimeWait, netip.AddrPortFrom(self, uint16(40000+i)).String(), "10.0.0.2:8081"))
	}
	for i := range 5 {
		h.socks = append(h.socks, sock(sockdiag.TimeWait, netip.AddrPortFrom(self, uint16(40800+i)).String(), "10.0.0.3:80"))
	}
	for i := range 3 {
		h.socks = append(h.socks, sock(sockdiag.FinWait2, netip.AddrPortFrom(self, uint16(40900+i)).String(), "10.0.0.2:8081"))
	}
	return h
}

func sock(state sockdiag.State, local, peer string) sockdiag.Socket {
	return sockdiag.Socket{State: state, Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer)}
}

func mustParse(t testing.TB, toml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(toml), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
