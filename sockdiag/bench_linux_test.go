package sockdiag

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// twNoise is the TIME-WAIT sockets of other traffic on a busy host; twOurs
// those on the proxy's own listener.
const (
	twNoise = 20000
	twOurs  = 500
)

// BenchmarkListTimeWaitBusyHost is one sample of the proxy's TIME-WAIT
// where the host holds many: 20,000 not the proxy's and 500 on its
// listener's port, in a network namespace of the benchmark's own (root
// only), which goes with its sockets when the benchmark ends. ListMatching
// has the kernel select the 500; List brings all 20,500 here to match.
//
//	taskset -c 0 go test -run '^$' -bench BusyHost ./sockdiag
func BenchmarkListTimeWaitBusyHost(b *testing.B) {
	ns := loopback.NewNetns(b)
	var f *Filter
	var err error
	ns.Do(func() { f, err = fillTimeWait(twNoise, twOurs) })
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		list func() ([]Socket, error)
	}{
		{"matching", func() ([]Socket, error) { return ListMatching(f, TimeWait) }},
		{"all", func() ([]Socket, error) {
			socks, err := List(TimeWait)
			n := Count(socks, f.matcher())
			return socks[:n], err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var n int
			var err error
			b.ReportAllocs()
			ns.Do(func() {
				b.ResetTimer()
				for range b.N {
					var socks []Socket
					if socks, err = tc.list(); err != nil {
						return
					}
					n = len(socks)
				}
				b.StopTimer()
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(n), "matched")
		})
	}
}

// fillTimeWait leaves noise TIME-WAIT sockets on other listeners' ports
// and ours on one listener's (the accepted side closes first), and returns
// a filter for ours. The noise is spread over many ports: a client port
// that comes round again toward the same listener would end the TIME-WAIT
// it meets there. The listeners are closed; their TIME-WAIT stays.
func fillTimeWait(noise, ours int) (*Filter, error) {
	const noisePorts = 50
	lns := make([]net.Listener, noisePorts+1) // lns[0] is ours
	for i := range lns {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		lns[i] = ln
	}
	for i := range ours {
		if err := serverCloses(lns[0]); err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
	}
	for i := range noise {
		if err := serverCloses(lns[1+i%noisePorts]); err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
	}
	socks, err := List(TimeWait)
	if err != nil || len(socks) < noise+ours {
		return nil, fmt.Errorf("%d TIME-WAIT sockets, want %d: %v", len(socks), noise+ours, err)
	}
	return &Filter{LocalPorts: []uint16{port(lns[0])},
		Peers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}, nil
}

// serverCloses dials ln and has the accepted side close first: TIME-WAIT
// on ln's port.
func serverCloses(ln net.Listener) error {
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return err
	}
	s.Close()
	_, err = io.Copy(io.Discard, c) // the server's FIN is in
	return err
}
