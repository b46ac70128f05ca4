package pool

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"
)

// A Get carrying a source never takes an idle connection: that one came
// from another client's address, or from none. The dial sees the source.
func TestGetWithSourceAlwaysDials(t *testing.T) {
	b := newBackend(t, false)
	src := netip.MustParseAddr("127.0.0.1")
	var seen []netip.Addr
	dial := func(ctx context.Context, addr string) (*net.TCPConn, error) {
		a, _ := Source(ctx)
		seen = append(seen, a)
		return new(counter).dial(ctx, addr)
	}
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, MaxIdleAge: time.Minute}, dial)
	idle := get(t, p)
	p.Put(idle)

	ctx, cancel := context.WithTimeout(WithSource(context.Background(), src), 5*time.Second)
	defer cancel()
	c, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pooled || c == idle {
		t.Errorf("Get with a source took the idle connection (Pooled %v)", c.Pooled)
	}
	if s := p.Stats(); s.Idle != 1 || s.Dialed != 2 {
		t.Errorf("stats %+v, want the idle connection left alone and 2 dials", s)
	}
	if len(seen) != 2 || seen[0].IsValid() || seen[1] != src {
		t.Errorf("dials saw sources %v, want [invalid %s]", seen, src)
	}
	drop(p, c)
}

// A dial the kernel refuses for its source address (transparent mode: a
// client address such as 127.0.0.1 from a PROXY header, toward a backend
// elsewhere: EINVAL) is this host's failure: counted local, never against
// the backend, whose servers a few such sessions had all ejected.
func TestDialRefusedForItsSourceIsLocal(t *testing.T) {
	einval := func(context.Context, string) (*net.TCPConn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EINVAL)}
	}
	p := newPool(t, Config{Address: "192.0.2.1:80", ConnectTimeout: time.Second}, einval)
	ctx := WithSource(context.Background(), netip.MustParseAddr("127.0.0.1"))
	if _, err := p.Get(ctx); !IsLocal(err) {
		t.Fatalf("Get: %v, want a local failure", err)
	}
	if st := p.Stats(); st.LocalDialFailures != 1 || st.DialFailures != 0 || st.Failing != 0 {
		t.Errorf("stats: %d local, %d backend failures, failing %d; want 1, 0, 0", st.LocalDialFailures, st.DialFailures, st.Failing)
	}
}
