package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

func ppListener(mode config.ProxyProtocolMode, trusted string) config.Listener {
	return config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN),
		ProxyProtocol: mode, ProxyProtocolTimeout: time.Second,
		ProxyProtocolTrusted: []netip.Prefix{netip.MustParsePrefix(trusted)}}
}

func defaultBackend(addr string) config.Backend {
	return config.Backend{Address: addr, Close: testClose(policy.TargetPeer, policy.FallbackReset)}
}

// exchange writes each part once the proxy has read all before it, so
// that no read of the proxy's takes in two parts, then reads to the end.
func exchange(t *testing.T, addr string, parts ...string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	for i, p := range parts {
		if i > 0 {
			awaitRead(t, c)
		}
		if _, err := io.WriteString(c, p); err != nil {
			return "", err
		}
	}
	got, err := io.ReadAll(c)
	return string(got), err
}

func TestProxyHeaderFaults(t *testing.T) {
	be := httpBackend(t, true)
	req := "GET / HTTP/1.1\r\n\r\n"
	cases := []struct {
		name    string
		ln      config.Listener
		parts   []string
		outcome engine.Outcome
	}{
		{"v1 header split across three segments is read whole", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{"PROXY TCP4 192.0", ".2.7 192.0.2.1 55", "55 80\r\n" + req}, engine.OutcomeOK},
		{"optional mode without a header passes", ppListener(config.ProxyProtocolOptional, "127.0.0.0/8"),
			[]string{req}, engine.OutcomeOK},
		{"required mode, no header", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{req}, engine.OutcomeBadProxyHeader},
		{"truncated v1 header, then silence past the timeout", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{"PROXY TCP4 192.0.2.7 "}, engine.OutcomeBadProxyHeader},
		{"malformed v1 addresses", ppListener(config.ProxyProtocolOptional, "127.0.0.0/8"),
			[]string{"PROXY TCP4 999.1.1.1 192.0.2.1 1 2\r\n" + req}, engine.OutcomeBadProxyHeader},
		{"garbage v2 signature", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\xff" + req}, engine.OutcomeBadProxyHeader},
		{"required mode, untrusted source refused before reading", ppListener(config.ProxyProtocolRequired, "10.0.0.0/8"),
			[]string{"PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n" + req}, engine.OutcomeBadProxyHeader},
		{"optional mode, header from an untrusted source refused", ppListener(config.ProxyProtocolOptional, "10.0.0.0/8"),
			[]string{"PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n" + req}, engine.OutcomeBadProxyHeader},
		{"optional mode, untrusted source without a header passes", ppListener(config.ProxyProtocolOptional, "10.0.0.0/8"),
			[]string{req}, engine.OutcomeOK},
		// The TLVs after the addresses are the header's too: a list that
		// does not parse, or a CRC32C that does not match, refuses it.
		{"v2 with a TLV longer than the header", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x04\x00\x09abc") + req}, engine.OutcomeBadProxyHeader},
		{"v2 with a truncated TLV", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x04\x00") + req}, engine.OutcomeBadProxyHeader},
		{"v2 whose length takes the request's first bytes", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("")[:15] + "\x14" + v2TCP4("")[16:] + req}, engine.OutcomeBadProxyHeader},
		{"v2 with a wrong CRC32C", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x03\x00\x04\xde\xad\xbe\xef") + req}, engine.OutcomeBadProxyHeader},
		{"v2 with an SSL TLV whose sub-TLV runs past it", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x20\x00\x0b\x01\x00\x00\x00\x00\x21\x00\x09TLS") + req}, engine.OutcomeBadProxyHeader},
		{"v2 with an SSL TLV too short for its fields", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x20\x00\x03\x01\x00\x00") + req}, engine.OutcomeBadProxyHeader},
		{"v2 with a well-formed SSL TLV", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x20\x00\x0e\x01\x00\x00\x00\x00\x21\x00\x06TLSv1.") + req}, engine.OutcomeOK},
		{"v2 with its CRC32C and padding", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2WithCRC("\x05\x00\x02ab") + req}, engine.OutcomeOK},
		// Longer than the goroutines intake's 4 KiB buffer: its CRC is
		// checked all the same.
		{"v2 near the longest, with its CRC32C", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2WithCRC("\x04\x0f\xdc"+strings.Repeat("x", 4060)) + req}, engine.OutcomeOK},
		{"v2 near the longest, with a wrong CRC32C", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{wrongCRC(v2WithCRC("\x04\x0f\xdc"+strings.Repeat("x", 4060))) + req}, engine.OutcomeBadProxyHeader},
		{"v2 PROXY of family UNSPEC", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2Signature + "\x21\x00\x00\x00" + req}, engine.OutcomeBadProxyHeader},
		{"v2 LOCAL of family UNSPEC", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2Signature + "\x20\x00\x00\x00" + req}, engine.OutcomeOK},
		{"v2 with a CRC32C TLV of 2 bytes", ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"),
			[]string{v2TCP4("\x03\x00\x02\xde\xad") + req}, engine.OutcomeBadProxyHeader},
	}
	for _, tc := range cases {
		// Refusals in http1 mode too (its sessions read the header on
		// their own path on the loops).
		backends := map[string]config.Backend{"tcp": defaultBackend(be)}
		if tc.outcome != engine.OutcomeOK {
			backends["http1"] = http1Backend(be)
		}
		for mode, bk := range backends {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				h := startProxy(t, tc.ln, bk)
				got, _ := exchange(t, h.addr, tc.parts...)
				td := h.record(t)
				if td.Outcome != tc.outcome {
					t.Fatalf("outcome %s (%v), want %s", td.Outcome, td.Err, tc.outcome)
				}
				if tc.outcome == engine.OutcomeOK && got != response {
					t.Errorf("response %q", got)
				}
				if tc.outcome != engine.OutcomeOK {
					if got != "" {
						t.Errorf("a refused client got %q", got)
					}
					// A refusal cuts nothing: no byte of the backend's existed.
					if td.Front.Close != policy.CloseReset || td.Front.TimeWait != policy.SideNone || td.Err == nil || td.Front.Cut {
						t.Errorf("refusal record: close %s time_wait %s cut %v err %v", td.Front.Close, td.Front.TimeWait, td.Front.Cut, td.Err)
					}
					// What came was the refused header's: no payload.
					if td.Front.BytesIn != 0 || td.Back.BytesOut != 0 {
						t.Errorf("refusal record: front bytes_in %d, back bytes_out %d; want 0 (PROXY headers are not counted)", td.Front.BytesIn, td.Back.BytesOut)
					}
				}
			})
		}
	}
}

// A client that closes before its PROXY header is whole: with "optional"
// one that sent nothing (a load balancer's TCP check) is a client without
// a header, passed on as with "off"; with "required" it is refused, and
// every refusal says what came.
func TestProxyHeaderClientClosesFirst(t *testing.T) {
	be := httpBackend(t, true)
	cases := []struct {
		name, sent string
		mode       config.ProxyProtocolMode
		outcome    engine.Outcome
		says       string
	}{
		{"optional, nothing sent", "", config.ProxyProtocolOptional, engine.OutcomeOK, ""},
		{"required, nothing sent", "", config.ProxyProtocolRequired, engine.OutcomeBadProxyHeader, "the client closed before sending one"},
		{"required, half a v1 header", "PROXY TCP4 192.0.2.7 ", config.ProxyProtocolRequired, engine.OutcomeBadProxyHeader, "the client closed in the middle of it"},
		{"optional, half a v2 header", v2Signature[:7], config.ProxyProtocolOptional, engine.OutcomeBadProxyHeader, "the client closed in the middle of it"},
		{"required, a v2 header cut inside its addresses", v2Signature + "\x21\x11\x00\x28" + strings.Repeat("\x01", 12),
			config.ProxyProtocolRequired, engine.OutcomeBadProxyHeader, "the client closed in the middle of it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := startProxy(t, ppListener(tc.mode, "127.0.0.0/8"), defaultBackend(be))
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.sent)
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(c)
			td := h.record(t)
			if td.Outcome != tc.outcome || tc.says != "" && (td.Err == nil || !strings.Contains(td.Err.Error(), tc.says)) {
				t.Errorf("outcome %s (%v), want %s saying %q", td.Outcome, td.Err, tc.outcome, tc.says)
			}
			if tc.outcome == engine.OutcomeOK && string(got) != response {
				t.Errorf("a client without a header got %q, want the backend's answer to its FIN", got)
			}
		})
	}
}

// With "optional", a client whose first bytes only could begin a PROXY
// header (a lone CRLF, as an HTTP client may send before its request)
// and which then waits past proxy_protocol_timeout has no header: its
// bytes go on as its own, where they were refused as a header cut short.
// Once "PROXY" came, a header it is, and one cut short is refused.
func TestProxyHeaderOptionalPrefixThenSilence(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		h := startProxy(t, ppListener(config.ProxyProtocolOptional, "127.0.0.0/8"), defaultBackend(loopback.Serve(t, loopback.Echo)))
		c := dialClient(t, h.addr, false)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "\r\n")
		got := make([]byte, 2)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "\r\n" { // echoed: relayed after the timeout
			t.Fatalf("echo of the CRLF: %q, %v", got, err)
		}
		io.WriteString(c, "hello")
		got = make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		if td := h.record(t); td.Outcome != engine.OutcomeOK || td.ProxyProtocol != "none" || td.Front.BytesIn != 7 {
			t.Errorf("record: outcome %s (%v), proxy_protocol %s, front bytes_in %d; want ok, none, 7", td.Outcome, td.Err, td.ProxyProtocol, td.Front.BytesIn)
		}
	})
	t.Run("http1", func(t *testing.T) {
		ln := ppListener(config.ProxyProtocolOptional, "127.0.0.0/8")
		ln.ProxyProtocolTimeout = 100 * time.Millisecond
		h := startProxy(t, ln, http1Backend(httpBackend(t, false)))
		c := dialClient(t, h.addr, false)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "\r\n")
		time.Sleep(300 * time.Millisecond) // the client's pause, past the timeout: no event tells it ran out
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("response: %v, %v; want 200", r, err)
		}
		c.Close()
		if td := h.record(t); td.Outcome != engine.OutcomeOK || td.BackRequests != 1 {
			t.Errorf("record: outcome %s (%v), %d requests; want ok, 1", td.Outcome, td.Err, td.BackRequests)
		}
	})
	t.Run("PROXY begun", func(t *testing.T) {
		ln := ppListener(config.ProxyProtocolOptional, "127.0.0.0/8")
		ln.ProxyProtocolTimeout = 100 * time.Millisecond
		h := startProxy(t, ln, defaultBackend(loopback.Serve(t, loopback.Echo)))
		c := dialClient(t, h.addr, false)
		io.WriteString(c, "PROXY TCP4 ")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
		if td := h.record(t); td.Outcome != engine.OutcomeBadProxyHeader || !strings.Contains(fmt.Sprint(td.Err), "incomplete") {
			t.Errorf("record: outcome %s (%v), want bad_proxy_header, incomplete", td.Outcome, td.Err)
		}
	})
}

// A client that resets before its PROXY header is whole (a load
// balancer's TCP check connects and resets) ends as its reset, not as a
// bad header: header rejects are what an operator alerts on.
func TestProxyHeaderClientResets(t *testing.T) {
	be := httpBackend(t, true)
	cases := []struct {
		name, sent string
		mode       config.ProxyProtocolMode
	}{
		{"optional, nothing sent", "", config.ProxyProtocolOptional},
		{"required, nothing sent", "", config.ProxyProtocolRequired},
		{"required, half a v1 header", "PROXY TCP4 192.0.2.7 ", config.ProxyProtocolRequired},
		// Fewer than a v2 signature's 12 bytes: looking for one read the
		// reset and dropped it (goroutines: "closed in the middle").
		{"required, 10 bytes of a v1 header", "PROXY TCP4", config.ProxyProtocolRequired},
		{"optional, half a v2 header", v2Signature + "\x21\x11", config.ProxyProtocolOptional},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := startProxy(t, ppListener(tc.mode, "127.0.0.0/8"), defaultBackend(be))
			c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(h.addr)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.sent != "" {
				io.WriteString(c, tc.sent)
				awaitRead(t, c)
			}
			c.SetLinger(0)
			c.Close()
			td := h.record(t)
			if td.Outcome != engine.OutcomeClientReset || td.Err == nil || !strings.Contains(td.Err.Error(), "reset") {
				t.Errorf("outcome %s (%v), want client_reset", td.Outcome, td.Err)
			}
			// The client's reset, not one of the proxy's.
			if td.Front.Close != policy.ClosePeerReset || td.Front.RSTOut >= 0 || td.Front.Reason != policy.ReasonPeerReset {
				t.Errorf("front close %s reason %s rst_out %v, want peer_reset, no RST of the proxy's", td.Front.Close, td.Front.Reason, td.Front.RSTOut)
			}
		})
	}
}

// Shutdown does not wait for a PROXY header past shutdown_timeout, however
// long proxy_protocol_timeout is, and the record says shutdown cut it; a
// client that sent nothing is not passed on (with "optional") to a
// backend only to be cut there.
func TestProxyHeaderCutByShutdown(t *testing.T) {
	be := httpBackend(t, true)
	for _, mode := range []config.ProxyProtocolMode{config.ProxyProtocolRequired, config.ProxyProtocolOptional} {
		for _, sent := range []string{"", "PROXY TCP4 192.0.2.7 "} {
			t.Run(fmt.Sprintf("%s %q", mode, sent), func(t *testing.T) {
				ln := ppListener(mode, "127.0.0.0/8")
				ln.ProxyProtocolTimeout = time.Minute
				obs := acceptedObs{accepted: make(chan struct{}, 1)}
				h := startProxyWith(t, ln, defaultBackend(be), []Option{WithObserver(obs)})
				c, err := net.Dial("tcp", h.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				<-obs.accepted
				if sent != "" {
					io.WriteString(c, sent)
					awaitRead(t, c)
				}
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // shutdown_timeout ran out at once
				h.srv.Shutdown(ctx)
				td := h.record(t)
				if td.Outcome != engine.OutcomeDrained || td.Err == nil || !strings.Contains(td.Err.Error(), "shutdown") || td.Back.BytesIn != 0 {
					t.Errorf("outcome %s (%v), back.bytes_in %d; want drained, nothing from a backend", td.Outcome, td.Err, td.Back.BytesIn)
				}
			})
		}
	}
}

// acceptedObs says when the server accepted a connection.
type acceptedObs struct{ accepted chan struct{} }

func (o acceptedObs) Accepted(string)                   { o.accepted <- struct{}{} }
func (acceptedObs) Rejected(string, string)             {}
func (acceptedObs) Ended(*engine.Teardown)              {}
func (acceptedObs) Dialed(string, time.Duration, error) {}
func (acceptedObs) AutoSwitched(string, bool)           {}

// The parser's terse refusals come with what a header should look like.
func TestProxyHeaderRefusalsSayWhatIsExpected(t *testing.T) {
	be := httpBackend(t, true)
	long := v2Signature + "\x21\x11\x13\x88" + strings.Repeat("\x00", 5000) // TCP4, length 5000
	for sent, says := range map[string]string{
		"PROXY TCP4  192.0.2.7 192.0.2.1 5555 80\r\n": "one space apart",
		long:                             "at most 4096 bytes",
		v2Signature + "\x21\x11\xff\xff": "at most 4096 bytes", // at once: the rest is never waited for
	} {
		h := startProxy(t, ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), defaultBackend(be))
		exchange(t, h.addr, sent)
		if td := h.record(t); td.Outcome != engine.OutcomeBadProxyHeader || td.Err == nil || !strings.Contains(td.Err.Error(), says) {
			t.Errorf("%.20q: outcome %s (%v), want bad_proxy_header saying %q", sent, td.Outcome, td.Err, says)
		}
	}
}

// A client silent until proxy_protocol_timeout is refused with "required",
// and the record says nothing came (not "incomplete").
func TestProxyHeaderRequiredSilence(t *testing.T) {
	h := startProxy(t, ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), defaultBackend(httpBackend(t, true)))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	td := h.record(t)
	if td.Outcome != engine.OutcomeBadProxyHeader || td.Err == nil || !strings.Contains(td.Err.Error(), "nothing received within proxy_protocol_timeout 1s") {
		t.Errorf("outcome %s (%v), want bad_proxy_header: nothing received", td.Outcome, td.Err)
	}
}

// A backend that writes part of a response and resets: the client gets the
// bytes sent before the reset, then a reset of its own, never a clean EOF
// that would pass a truncated response off as complete.
func TestBackendResetMidResponse(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		buf := make([]byte, 64)
		c.Read(buf)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		c.SetLinger(0)
		c.Close()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be))
	got, err := exchange(t, h.addr, "GET / HTTP/1.1\r\n\r\n")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %q, err %v; want ECONNRESET after the partial bytes", got, err)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeBackendReset || td.Back.Close != policy.ClosePeerReset || td.Front.Close != policy.CloseReset {
		t.Errorf("outcome %s back.close %s front.close %s", td.Outcome, td.Back.Close, td.Front.Close)
	}
	if td.Err == nil || !strings.Contains(td.Err.Error(), "backend reset") {
		t.Errorf("record error %v, want it to say the backend reset", td.Err)
	}
	if td.Front.BytesOut != int64(len("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")) {
		t.Errorf("front.bytes_out %d", td.Front.BytesOut)
	}
}

// A client that resets mid-request: the backend learns by a reset too.
func TestClientResetMidStream(t *testing.T) {
	backendSaw := make(chan error, 1)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		_, err := io.Copy(io.Discard, c)
		backendSaw <- err
		c.Close()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc")
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	td := h.record(t)
	if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset {
		t.Errorf("outcome %s front.close %s", td.Outcome, td.Front.Close)
	}
	if td.Err == nil || !strings.Contains(td.Err.Error(), "client reset") {
		t.Errorf("record error %v, want it to say the client reset", td.Err)
	}
	if err := <-backendSaw; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("backend saw %v, want ECONNRESET", err)
	}
}

// Nothing moves for idle_timeout: the session is cut, both legs at once;
// the client gets an RST, never a clean EOF that would pass for an empty
// answer, and the record says timeout, cut.
func TestIdleTimeout(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) { io.Copy(io.Discard, c); c.Close() })
	h := startProxy(t, config.Listener{IdleTimeout: 200 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be))
	got, err := exchange(t, h.addr, "hello")
	if got != "" || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %q, %v; want an RST", got, err)
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeTimeout || !td.Front.Cut || td.Front.Close != policy.CloseReset || td.Back.Close != policy.CloseReset {
		t.Errorf("outcome %s front cut %v close %s back close %s: %+v", td.Outcome, td.Front.Cut, td.Front.Close, td.Back.Close, td)
	}
	if td.Duration < 200*time.Millisecond {
		t.Errorf("ended after %s, before idle_timeout", td.Duration)
	}
}

// arrivingBackend is a backend that says on arrived, once per session (up
// to 16 not yet taken), when a session's first byte reached it, then
// reads to EOF and closes.
func arrivingBackend(t *testing.T) (addr string, arrived <-chan struct{}) {
	got := make(chan struct{}, 16)
	addr = loopback.Serve(t, func(c *net.TCPConn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			got <- struct{}{}
		}
		io.Copy(io.Discard, c)
		c.Close()
	})
	return addr, got
}

// Shutdown with live sessions: after the grace of ctx, each is ended by
// policy and recorded as drained, and the log says how many were cut,
// counted before the cut (a count taken beside it said one of three).
func TestShutdownDrainsLiveSession(t *testing.T) {
	be, arrived := arrivingBackend(t)
	core, logged := observer.New(zapcore.InfoLevel)
	h := startProxyLogging(t, zap.New(core), config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be), nil)
	const n = 3
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "x")
		// The session is live (not still in the listen backlog, which
		// closing the listener resets) once its byte reached the backend.
		<-arrived
		cs = append(cs, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(ctx) }()
	for _, c := range cs {
		if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client: %v; want an RST: shutdown cut the session", err)
		}
		c.Close()
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	for range n {
		if td := h.record(t); td.Outcome != engine.OutcomeDrained || !td.Front.Cut {
			t.Errorf("outcome %s front cut %v, want drained, cut", td.Outcome, td.Front.Cut)
		}
	}
	cut := logged.FilterMessage("shutdown_timeout ran out: the sessions left are cut").All()
	if len(cut) != 1 || cut[0].ContextMap()["sessions"] != int64(n) {
		t.Errorf("shutdown's log of the cut: %v; want one line, sessions %d", cut, n)
	}
	if _, err := net.Dial("tcp", h.addr); err == nil {
		t.Error("listener still accepts after shutdown")
	}
}

func TestProxyHeaderV2SplitAcrossSegments(t *testing.T) {
	be := httpBackend(t, true)
	h := startProxy(t, ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), defaultBackend(be))
	src := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 4444}
	dst := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 80}
	raw, err := proxyHeader(config.SendV2, intake{client: src.AddrPort(), dest: dst.AddrPort()}).Format()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := exchange(t, h.addr, string(raw[:7]), string(raw[7:20]), string(raw[20:])+"GET / HTTP/1.1\r\n\r\n")
	td := h.record(t)
	if got != response || td.ProxyProtocol != "v2" || td.Client.String() != "192.0.2.9:4444" {
		t.Errorf("got %q; record pp=%s client=%s outcome=%s err=%v", got, td.ProxyProtocol, td.Client, td.Outcome, td.Err)
	}
}

// A client that half-closes right after its request, in front of a backend
// slower than peer_fin_grace: the withheld FIN must not give up on the
// backend before it answers, whatever the fallback.
func TestSlowBackendAfterClientHalfClose(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		buf := make([]byte, 64)
		c.Read(buf)
		time.Sleep(900 * time.Millisecond) // slower than the 300 ms grace: the test is about this wait
		io.WriteString(c, response)
		io.Copy(io.Discard, c)
		c.Close()
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetNowhere, policy.FallbackReset)})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if string(got) != response {
		t.Errorf("client got %q, %v", got, err)
	}
	if td := h.record(t); td.Back.BytesIn != int64(len(response)) {
		t.Errorf("back.bytes_in %d fallback %q", td.Back.BytesIn, td.Back.Reason)
	}
}

// Past max_connections a connection is reset at once and recorded as
// over_limit; once a session ends, the next connection is served.
func TestMaxConnectionsResetsBeyond(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) { io.Copy(c, c); c.Close() })
	h := startProxy(t, config.Listener{MaxConnections: 2, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(be))
	echoOnce := func(c net.Conn) error {
		if _, err := io.WriteString(c, "a"); err != nil {
			return err
		}
		var b [1]byte
		_, err := io.ReadFull(c, b[:])
		return err
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c); err != nil {
			t.Fatalf("session within the limit: %v", err)
		}
		held = append(held, c)
	}
	// The reset can come before connect returns (loopback is that fast).
	c, err := net.Dial("tcp", h.addr)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err = echoOnce(c)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("third connection: %v, want a reset", err)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeOverLimit || td.Front.Close != policy.CloseReset {
		t.Errorf("third connection's record: outcome %s front.close %s, want over_limit, reset", td.Outcome, td.Front.Close)
	}
	held[0].Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK {
		t.Errorf("first session ended with %s", td.Outcome)
	}
	c, err = net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echoOnce(c); err != nil {
		t.Errorf("after a session ended, a new one: %v", err)
	}
}

// A leg cut by the proxy's RST: bytes_out says what the peer received,
// not what was written to the socket, for the reset throws away what the
// peer had not acknowledged. A client that stops reading a large answer
// is cut at idle_timeout; it then reads every byte its kernel took, and
// exactly as many as the record says, before the reset.
func TestCutLegCountsWhatThePeerReceived(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		c.Write(make([]byte, 16<<20)) // until the proxy's reset ends it
	})
	ln := config.Listener{IdleTimeout: 300 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}
	h := startProxy(t, ln, defaultBackend(be))
	c := dialClient(t, h.addr, true)
	td := h.record(t) // nothing moves once every buffer is full: idle_timeout
	got, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %d bytes, then %v; want ECONNRESET", got, err)
	}
	if td.Outcome != engine.OutcomeTimeout || !td.Front.Cut {
		t.Errorf("outcome %s (%v), front cut %v; want timeout, cut", td.Outcome, td.Err, td.Front.Cut)
	}
	if td.Front.BytesOut != got {
		t.Errorf("front.bytes_out %d, the client received %d", td.Front.BytesOut, got)
	}
}

// v2TCP4 is a v2 PROXY header from 192.0.2.7:40001 to 192.0.2.1:80 with
// tlvs after its addresses.
func v2TCP4(tlvs string) string {
	n := 12 + len(tlvs)
	return v2Signature + "\x21\x11" + string([]byte{byte(n >> 8), byte(n)}) +
		"\xc0\x00\x02\x07\xc0\x00\x02\x01\x9c\x41\x00\x50" + tlvs
}

// wrongCRC is h, a v2WithCRC header, with its CRC32C's last byte changed.
func wrongCRC(h string) string {
	const at = 16 + 12 + 3 + 3 // as in v2WithCRC
	b := []byte(h)
	b[at]++
	return string(b)
}

// v2WithCRC is v2TCP4 with a CRC32C TLV that matches, a NOOP TLV
// (padding), then tlvs.
func v2WithCRC(tlvs string) string {
	h := []byte(v2TCP4("\x03\x00\x04\x00\x00\x00\x00" + "\x04\x00\x03pad" + tlvs))
	const at = 16 + 12 + 3 // the CRC's value, behind the addresses and its TLV's head
	binary.BigEndian.PutUint32(h[at:at+4], crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	return string(h)
}
