package evloop

import (
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// idleConns is how many idle sessions BenchmarkIdle holds: four
// descriptors each in this process (client, two proxy legs, backend),
// well under the 20,000 RLIMIT_NOFILE of the machines this runs on.
const idleConns = 2000

// BenchmarkIdle opens idleConns connections, relays one byte each way on
// each, and then measures with nothing moving: heap in use plus stacks
// in use (after two collections), and goroutines, per connection, from
// before the first to after the last. The client's and backend's own
// share (two net.TCPConn, no goroutine: the backend's handler returns
// after echoing) is what direct reports; subtract it. Run it once:
//
//	taskset -c 1 go test ./internal/evloop -run '^$' -bench Idle -benchtime 1x
func BenchmarkIdle(b *testing.B) {
	for _, cand := range candidates {
		b.Run(cand.name, func(b *testing.B) {
			for range b.N {
				measureIdle(b, cand)
			}
		})
	}
}

func measureIdle(b *testing.B, cand candidate) {
	var mu sync.Mutex
	var held []*net.TCPConn
	be := backend(b, func(c *net.TCPConn) { // echo one byte, keep the socket, return
		buf := make([]byte, 1)
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write(buf)
			c.SetDeadline(time.Time{})
		}
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	})
	addr := cand.start(b, be)
	settle()
	heap0, stack0, g0 := memNow()
	clients := openIdle(b, addr)
	settle()
	heap1, stack1, g1 := memNow()
	// Differences as signed numbers: the stacks in use can shrink (a
	// collection frees those of goroutines that ended), and a uint64
	// difference would wrap to 2^64.
	grew := func(after, before uint64) float64 { return float64(int64(after-before)) / idleConns }
	b.ReportMetric(grew(heap1+stack1, heap0+stack0), "heap+stack-B/conn")
	b.ReportMetric(grew(stack1, stack0), "stack-B/conn")
	b.ReportMetric(float64(g1-g0)/idleConns, "goroutines/conn")
	for _, c := range clients {
		c.Close()
	}
	mu.Lock()
	for _, c := range held {
		c.Close()
	}
	mu.Unlock()
}

// openIdle opens idleConns connections to addr, each with one byte
// relayed both ways, and leaves them open.
func openIdle(b *testing.B, addr netip.AddrPort) []*net.TCPConn {
	clients := make([]*net.TCPConn, 0, idleConns)
	buf := []byte{'x'}
	for range idleConns {
		c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(addr))
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Time{})
	}
	return clients
}

// settle lets goroutines that are about to end (the backend's handlers,
// the proxy's dial goroutines) end, and collects twice. Polling is the
// only way: nothing announces that a goroutine is gone.
func settle() {
	for range 2 {
		time.Sleep(50 * time.Millisecond)
		runtime.GC()
	}
}

func memNow() (heap, stack uint64, goroutines int) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse, runtime.NumGoroutine()
}
