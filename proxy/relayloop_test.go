package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// relayLoop is an adjust of startProxy: relay = "loop".
func relayLoop(c *config.Config) { c.Relay = "loop" }

// echoOnce sends msg to addr (a proxy in front of loopback.Echo),
// half-closes, and returns an error unless msg comes back, then EOF.
func echoOnce(addr, msg string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		return fmt.Errorf("echo %q, %v; want %q", got, err, msg)
	}
	return nil
}

// With relay = "loop", tcp sessions relay and each ends with exactly one
// record, ok, and every count it held given back: whether the loops take
// the sessions or refuse them (then each relays on its own goroutines).
func TestRelayLoopEchoes(t *testing.T) {
	be := loopback.Serve(t, loopback.Echo)
	// The client closes first: TIME-WAIT where each first FIN puts it, so
	// no session waits out a peer_fin_grace.
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetProxy, policy.FallbackReset)}, relayLoop)
	const sequential, concurrent = 5, 8
	for i := range sequential {
		if err := echoOnce(h.addr, fmt.Sprint("hello ", i)); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, concurrent)
	var wg sync.WaitGroup
	for i := range concurrent {
		wg.Go(func() { errs <- echoOnce(h.addr, fmt.Sprint("at once ", i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	ids := map[uint64]bool{}
	for range sequential + concurrent {
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK {
			t.Errorf("session %d: outcome %s (%v), want ok", td.ID, td.Outcome, td.Err)
		}
		if ids[td.ID] {
			t.Errorf("session %d recorded twice", td.ID)
		}
		ids[td.ID] = true
	}
	if h.srv.loops.Load() == nil {
		t.Error(`relay = "loop" served without loops`)
	}
	select {
	case td := <-h.records:
		t.Errorf("a record more than the sessions: %+v", td)
	case <-time.After(100 * time.Millisecond):
	}
	// The record is written before the session is counted out: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Live() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := h.srv.Live(); n != 0 {
		t.Errorf("%d sessions still live after every record", n)
	}
	if st := h.srv.PoolStats()["app"]; st.InUse != 0 {
		t.Errorf("the pool counts %d connections in use after every session ended", st.InUse)
	}
	if n := h.srv.listeners[0].open.Load(); n != 0 {
		t.Errorf("the listener counts %d sessions open after every session ended", n)
	}
}

// Shutdown with relay = "loop" and a live session cuts it (one record,
// drained), returns, and leaves no goroutine behind: the loops are closed
// once the last session ended.
func TestRelayLoopShutdownLeavesNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	// Registered first, this cleanup runs last: after the backend's and the
	// harness's.
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	be, arrived := arrivingBackend(t)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be), relayLoop)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "x")
	<-arrived // the session is live, past the listen backlog
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(ctx) }()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client: %v; want an RST: shutdown cut the session", err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if td := h.record(t); td.Outcome != engine.OutcomeDrained {
		t.Errorf("outcome %s (%v), want drained", td.Outcome, td.Err)
	}
	if n := h.srv.Live(); n != 0 {
		t.Errorf("Shutdown returned with %d sessions live", n)
	}
}

// A Server made and bound with relay = "loop" but never served starts no
// loops: nothing to stop if it is dropped.
func TestRelayLoopStartsWithServe(t *testing.T) {
	cfg := &config.Config{Relay: "loop", Log: config.Log{Teardown: "all"}, Auto: config.Defaults().Auto,
		Listeners: []config.Listener{{Name: "web", Listen: "127.0.0.1:0", Backend: "app"}},
		Backends:  []config.Backend{{Name: "app", Address: "127.0.0.1:1", Protocol: config.ProtocolTCP}}}
	srv, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	if srv.loops.Load() != nil {
		t.Error("Listen started the relay loops; only Serve does")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// gateWriter is a record sink that blocks: its first Write says so on
// blocked and every Write waits until release is closed.
type gateWriter struct {
	once             sync.Once
	blocked, release chan struct{}
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.blocked) })
	<-w.release
	return len(p), nil
}

// With relay = "loop", a record sink that blocks (a full pipe on stderr,
// a stalled disk) holds up the sessions whose records wait for it, and no
// other: sessions on the loop that relayed the ended one still relay.
func TestRelayLoopBlockedRecordSinkHoldsOnlyItsSession(t *testing.T) {
	w := &gateWriter{blocked: make(chan struct{}), release: make(chan struct{})}
	records := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w), zap.InfoLevel))
	be := loopback.Serve(t, loopback.Echo)
	h := startProxyWith(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetProxy, policy.FallbackReset)},
		[]Option{WithRecordLog(records)}, relayLoop)
	t.Cleanup(func() { close(w.release) }) // before the harness's Shutdown
	// Open sessions, as many as there are loops; a loop keeps the
	// sessions it accepts until it holds several more than another, so
	// the one that ends shares its loop with some of them.
	open := make([]net.Conn, runtime.GOMAXPROCS(0))
	for i := range open {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoByte(c, 'o'); err != nil {
			t.Fatalf("open session %d: %v", i, err)
		}
		open[i] = c
	}
	if err := echoOnce(h.addr, "ends"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.blocked: // the ended session's record waits in Write
	case <-time.After(5 * time.Second):
		t.Fatal("no record was written")
	}
	for i, c := range open {
		if err := echoByte(c, 'x'); err != nil {
			t.Errorf("open session %d while a record waits for its sink: %v", i, err)
		}
	}
}

// echoByte sends b on c (through the proxy to loopback.Echo) and reads it
// back within 2 s.
func echoByte(c net.Conn, b byte) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{b}); err != nil {
		return err
	}
	var got [1]byte
	if _, err := io.ReadFull(c, got[:]); err != nil || got[0] != b {
		return fmt.Errorf("echo %q, %v; want %q", got[:], err, b)
	}
	return nil
}

// With relay = "loop", a plain tcp listener accepts bare descriptors, and
// the record names the front's 4-tuple as the kernel has it: the
// listener's address when it is bound to one, the kernel's when it listens
// on every address.
func TestRelayLoopBareAcceptRecordsAddresses(t *testing.T) {
	be := loopback.Serve(t, loopback.Echo)
	for _, listen := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		t.Run(listen, func(t *testing.T) {
			h := startProxy(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)},
				config.Backend{Address: be, Close: testClose(policy.TargetProxy, policy.FallbackReset)},
				relayLoop, func(c *config.Config) { c.Listeners[0].Listen = listen })
			_, port, _ := net.SplitHostPort(h.addr)
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local, remote := c.LocalAddr().String(), c.RemoteAddr().String()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "ping")
			c.(*net.TCPConn).CloseWrite()
			if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
				t.Fatalf("echo %q, %v", got, err)
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.Front.Local.String() != remote || td.Front.Peer.String() != local || td.Client.String() != local {
				t.Errorf("record: outcome %s, front %s → %s, client %s; want ok, %s → %s, client %s",
					td.Outcome, td.Front.Peer, td.Front.Local, td.Client, local, remote, local)
			}
			if l := h.srv.listeners[0]; l.wait == nil || !h.srv.bare(l.conf.Load()) {
				t.Error("a plain tcp listener on loops does not accept bare descriptors")
			}
		})
	}
}

// With relay = "loop" and warm pools, a session that finds a warm
// connection starts its relay on the accepting goroutine (atOnce): the
// balancer is still asked once a session (round robin alternates, also
// for a session whose first server had no warm connection left), every
// byte arrives, and every record says ok.
func TestRelayLoopWarmSessionsKeepTheBalancersOrder(t *testing.T) {
	a, b := loopback.Serve(t, loopback.Echo), loopback.Serve(t, loopback.Echo)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)},
		config.Backend{Servers: servers(a, b), Balance: config.BalanceRoundRobin,
			Pool:  config.Pool{Warm: 1, MaxIdleAge: time.Minute},
			Close: testClose(policy.TargetProxy, policy.FallbackReset)}, relayLoop)
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.PoolStats()["app"].Idle < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the refillers say nothing when done
	}
	const sessions = 8
	on, pooled := map[string]int{}, 0
	for i := range sessions {
		if err := echoOnce(h.addr, fmt.Sprint("warm ", i)); err != nil {
			t.Fatal(err)
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK {
			t.Errorf("session %d: outcome %s (%v)", td.ID, td.Outcome, td.Err)
		}
		on[td.BackServer]++
		if td.BackPooled {
			pooled++
		}
	}
	if on[a] != sessions/2 || on[b] != sessions/2 {
		t.Errorf("sessions per server %v, want %d on each", on, sessions/2)
	}
	if pooled < 2 {
		t.Errorf("%d sessions were served a warm connection, want at least the first two", pooled)
	}
}

// dialStacks is an Observer that notes, for every backend dial, whether
// it ran where the connection was accepted (a relay loop, or the
// goroutine that accepts when there are none).
type dialStacks struct {
	nopObserver
	mu              sync.Mutex
	dials, onAccept int
}

func (d *dialStacks) Dialed(string, time.Duration, error) {
	buf := make([]byte, 16<<10)
	stack := string(buf[:runtime.Stack(buf, false)])
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	if strings.Contains(stack, "(*Server).acceptOn") || strings.Contains(stack, "(*Server).acceptLoop") {
		d.onAccept++
	}
}

// With relay = "loop" and no warm connection, a session to a backend on
// a loopback address, whose connect the kernel completes inside the call,
// is dialed and started on the relay loop that accepted it
// (pool.Pool.DialNow), the first one too: no goroutine of its own. Every byte arrives and
// every record says ok.
func TestRelayLoopDialsWhereAccepted(t *testing.T) {
	be := loopback.Serve(t, loopback.Echo)
	obs := &dialStacks{}
	h := startProxyWith(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetProxy, policy.FallbackReset)},
		[]Option{WithObserver(obs)}, relayLoop)
	const sessions = 4
	for i := range sessions {
		if err := echoOnce(h.addr, fmt.Sprint("cold ", i)); err != nil {
			t.Fatal(err)
		}
		if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackPooled {
			t.Errorf("session %d: outcome %s (%v), pooled %v; want ok on a new connection", td.ID, td.Outcome, td.Err, td.BackPooled)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.dials != sessions || obs.onAccept != sessions {
		t.Errorf("%d dials, %d of them where the connection was accepted; want %d, all", obs.dials, obs.onAccept, sessions)
	}
}
