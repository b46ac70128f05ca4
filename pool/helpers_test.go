package pool

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend is a loopback listener standing in for the web server. Accepted
// connections arrive on accepted; cleanup resets whatever is still open so the
// test host keeps no TIME-WAIT.
type backend struct {
	ln       *net.TCPListener
	addr     string
	accepted chan *net.TCPConn
	discard  bool // read every connection until the peer ends it, then close it
	done     chan struct{}
	readers  sync.WaitGroup

	mu    sync.Mutex
	conns []*net.TCPConn
}

func newBackend(t testing.TB, discard bool) *backend {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln, addr: ln.Addr().String(), discard: discard,
		accepted: make(chan *net.TCPConn, 1024), done: make(chan struct{})}
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *backend) accept() {
	defer close(b.done)
	for {
		c, err := b.ln.AcceptTCP()
		if err != nil {
			return
		}
		if b.discard {
			b.readers.Go(func() {
				_, _ = io.Copy(io.Discard, c)
				_ = closeReset(&Conn{TCPConn: c})
			})
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c)
		b.mu.Unlock()
		select {
		case b.accepted <- c:
		default:
		}
	}
}

func (b *backend) close() {
	_ = b.ln.Close()
	<-b.done
	b.readers.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = closeReset(&Conn{TCPConn: c})
	}
}

// accepted4Tuples returns the 4-tuple of every connection b accepted,
// as "local peer" from either end.
func (b *backend) accepted4Tuples() map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	tuples := map[string]bool{}
	for _, c := range b.conns {
		l, r := c.LocalAddr().String(), c.RemoteAddr().String()
		tuples[l+" "+r], tuples[r+" "+l] = true, true
	}
	return tuples
}

// next returns the next accepted connection.
func (b *backend) next(t testing.TB) *net.TCPConn {
	t.Helper()
	select {
	case c := <-b.accepted:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("backend accepted nothing")
		return nil
	}
}

// closeAll closes the backend's side of every accepted connection with a FIN,
// as a server's keep-alive timeout does.
func (b *backend) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
}

// counter is a DialFunc over net.Dialer that counts its calls.
type counter struct {
	d     net.Dialer
	calls atomic.Int64
}

func (c *counter) dial(ctx context.Context, addr string) (*net.TCPConn, error) {
	c.calls.Add(1)
	nc, err := c.d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return nc.(*net.TCPConn), nil
}

func newPool(t testing.TB, cfg Config, dial DialFunc) *Pool {
	t.Helper()
	if dial == nil {
		dial = new(counter).dial
	}
	return New(cfg, dial, zaptest.NewLogger(t))
}

// run starts p.Run; the returned stop (also registered as cleanup) cancels it
// and waits for it to return.
func run(t testing.TB, p *Pool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or 5s pass. Used only where the pool's
// background work or the kernel has no event to wait on.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t testing.TB, p *Pool) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// drop resets c and releases its slot, as a caller ending the back leg does.
func drop(p *Pool, c *Conn) {
	_ = closeReset(c)
	p.Release(c)
}
