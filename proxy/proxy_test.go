package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testRelay is the relay every test server gets unless a test sets its
// own: CLOSEPROXY_TEST_RELAY ("loop" or "goroutines") names it, as it does
// for the integration tests; unset, the default (loop).
var testRelay = func() string {
	switch r := os.Getenv("CLOSEPROXY_TEST_RELAY"); r {
	case "loop", "goroutines":
		return r
	}
	return config.Defaults().Relay
}()

// testClose is a leg policy with short timers for tests.
func testClose(t policy.Target, fb policy.Fallback) config.Close {
	return config.Close{TimeWait: t, PeerFinGrace: 300 * time.Millisecond, Fallback: fb,
		HalfCloseTimeout: 2 * time.Second, DrainTimeout: time.Second}
}

type harness struct {
	srv     *Server
	addr    string
	records chan *engine.Teardown
}

func startProxy(t testing.TB, ln config.Listener, be config.Backend, adjust ...func(*config.Config)) *harness {
	t.Helper()
	return startProxyWith(t, ln, be, nil, adjust...)
}

// startProxyWith is startProxy with Server options.
func startProxyWith(t testing.TB, ln config.Listener, be config.Backend, opts []Option, adjust ...func(*config.Config)) *harness {
	t.Helper()
	return startProxyLogging(t, zap.NewNop(), ln, be, opts, adjust...)
}

// startProxyLogging is startProxyWith with the server's log going to log.
func startProxyLogging(t testing.TB, log *zap.Logger, ln config.Listener, be config.Backend, opts []Option, adjust ...func(*config.Config)) *harness {
	t.Helper()
	ln.Name, ln.Backend, ln.Listen = "web", "app", "127.0.0.1:0"
	be.Name = "app"
	if ln.IdleTimeout == 0 {
		ln.IdleTimeout = 5 * time.Second
	}
	if be.ConnectTimeout == 0 {
		be.ConnectTimeout = time.Second
	}
	if ln.ProxyProtocol == "" {
		ln.ProxyProtocol = config.ProxyProtocolOff
	}
	if be.SendProxyProtocol == "" {
		be.SendProxyProtocol = config.SendOff
	}
	if be.Protocol == "" {
		be.Protocol = config.ProtocolTCP
	}
	if be.Pool == (config.Pool{}) {
		be.Pool = config.Defaults().Backend.Pool
		be.Pool.Warm = 0
	}
	cfg := &config.Config{Listeners: []config.Listener{ln}, Backends: []config.Backend{be}, Log: config.Log{Teardown: "all"},
		Auto: config.Defaults().Auto, Relay: testRelay}
	for _, f := range adjust {
		f(cfg)
	}
	h := &harness{records: make(chan *engine.Teardown, 1000)}
	srv, err := New(cfg, log, append(opts, WithTeardownHook(func(td *engine.Teardown) { h.records <- td }))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.srv, h.addr = srv, srv.Addrs()[0].String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return h
}

func (h *harness) record(t testing.TB) *engine.Teardown {
	t.Helper()
	select {
	case td := <-h.records:
		return td
	case <-time.After(10 * time.Second):
		t.Fatal("no teardown record within 10s")
		return nil
	}
}

const response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

// httpBackend answers one request per connection; closeFirst makes it send
// its FIN right after the response, otherwise it waits for the proxy's FIN.
func httpBackend(t testing.TB, closeFirst bool) string {
	return httpBackendTelling(t, closeFirst, nil)
}

// httpBackendTelling is httpBackend that also sends on accepted (when not
// nil) as each connection arrives: a session that dialed it exists.
func httpBackendTelling(t testing.TB, closeFirst bool, accepted chan<- struct{}) string {
	return loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		if accepted != nil {
			accepted <- struct{}{}
		}
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, response)
		if closeFirst {
			c.CloseWrite()
		}
		io.Copy(io.Discard, c)
	})
}

// get sends one request; closeFirst makes the client send its FIN right
// after reading the response, otherwise it reads to EOF first.
func get(t testing.TB, addr string, closeFirst bool) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, len(response))
	if _, err := io.ReadFull(c, buf); err != nil {
		return string(buf), err
	}
	if closeFirst {
		return string(buf), nil
	}
	_, err = io.Copy(io.Discard, c)
	return string(buf), err
}

func TestRelayPolicies(t *testing.T) {
	cases := []struct {
		name                      string
		front, back               policy.Target
		backendFirst, clientFirst bool
		wantFront, wantBack       policy.Side
		frontReason               policy.Reason
	}{
		{"front proxy, backend closes first", policy.TargetProxy, policy.TargetPeer, true, false, policy.SideProxy, policy.SideBackend, ""},
		// The client reads to EOF: it may be waiting for it, so it gets the
		// FIN at once, whatever the front target wants (rule 1).
		{"front client, backend closes first, client waits for EOF", policy.TargetPeer, policy.TargetPeer, true, false, policy.SideProxy, policy.SideBackend, policy.ReasonAwaitsEOF},
		{"front nowhere, backend nowhere, backend first, client waits for EOF", policy.TargetNowhere, policy.TargetNowhere, true, false, policy.SideProxy, policy.SideNone, policy.ReasonAwaitsEOF},
		{"front client, client closes first", policy.TargetPeer, policy.TargetPeer, false, true, policy.SideClient, policy.SideNone, ""},
		{"front nowhere, client closes first", policy.TargetNowhere, policy.TargetPeer, false, true, policy.SideNone, policy.SideNone, ""},
		{"back proxy, client closes first", policy.TargetProxy, policy.TargetProxy, false, true, policy.SideClient, policy.SideProxy, policy.ReasonPeerFirst},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := httpBackend(t, tc.backendFirst)
			h := startProxy(t,
				config.Listener{Close: testClose(tc.front, policy.FallbackFIN)},
				config.Backend{Address: be, Close: testClose(tc.back, policy.FallbackReset)})
			body, err := get(t, h.addr, tc.clientFirst)
			if body != response {
				t.Fatalf("response %q, err %v", body, err)
			}
			td := h.record(t)
			if td.Front.TimeWait != tc.wantFront || td.Back.TimeWait != tc.wantBack || td.Front.Reason != tc.frontReason {
				t.Errorf("time_wait front=%s (%q) back=%s, want %s (%q) %s (record %+v)",
					td.Front.TimeWait, td.Front.Reason, td.Back.TimeWait, tc.wantFront, tc.frontReason, tc.wantBack, td)
			}
			if td.Outcome != engine.OutcomeOK {
				t.Errorf("outcome %s: %v", td.Outcome, td.Err)
			}
		})
	}
}

func TestDialFailedRecord(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Address: dead, Close: testClose(policy.TargetPeer, policy.FallbackReset)})
	_, err := get(t, h.addr, false)
	if err == nil {
		t.Error("client saw no error from an unreachable backend")
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeDialFailed || !strings.Contains(td.Err.Error(), "dial backend") {
		t.Errorf("outcome %s err %v", td.Outcome, td.Err)
	}
}

func TestProxyHeaderIntake(t *testing.T) {
	be := httpBackend(t, true)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN),
		ProxyProtocol: config.ProxyProtocolRequired, ProxyProtocolTimeout: time.Second,
		ProxyProtocolTrusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		config.Backend{Address: be, Close: testClose(policy.TargetPeer, policy.FallbackReset)})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n")
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != response {
		t.Fatalf("got %q", got)
	}
	td := h.record(t)
	if td.Client.String() != "192.0.2.7:5555" || td.ProxyProtocol != "v1" {
		t.Errorf("client %s pp %s", td.Client, td.ProxyProtocol)
	}
	for _, bad := range []string{"PROXY TCP4 nonsense\r\n", "PROXY TCP4 1.2.3.4", "GET / HTTP/1.0\r\n\r\n"} {
		c, _ := net.Dial("tcp", h.addr)
		io.WriteString(c, bad)
		io.ReadAll(c)
		c.Close()
		if td := h.record(t); td.Outcome != engine.OutcomeBadProxyHeader {
			t.Errorf("%q: outcome %s", bad, td.Outcome)
		}
	}
}
