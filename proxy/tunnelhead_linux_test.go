package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend's 101 (or 200 to a CONNECT) that comes while the proxy drains,
// or on a client connection whose backend a reload replaced, reaches the
// client byte for byte as the backend sent it, on both relays: such a
// connection ends after its exchange, but a tunnel is the exchange, and a
// "Connection: close" beside the 101's "Connection: Upgrade" makes Go's
// clients (net/http, x/net/websocket) refuse the upgrade. The tunnel then
// carries bytes both ways and ends ok.
func TestHTTP1TunnelHeadUnchangedWhenTheConnectionWouldEnd(t *testing.T) {
	const (
		upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
		connect = "CONNECT echo.test:443 HTTP/1.1\r\nHost: echo.test:443\r\n\r\n"
		head101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		head200 = "HTTP/1.1 200 Connection Established\r\n\r\n"
	)
	for _, c := range []struct {
		name, req, head string
		reload          bool
	}{
		{"upgrade_draining", upgrade, head101, false},
		{"connect_draining", connect, head200, false},
		{"upgrade_after_reload", upgrade, head101, true},
		{"connect_after_reload", connect, head200, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			asked, answer := make(chan struct{}, 1), make(chan struct{})
			be := loopback.Serve(t, func(bc *net.TCPConn) {
				defer bc.Close()
				br := bufio.NewReader(bc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.Method == http.MethodGet && req.Header.Get("Upgrade") == "" {
					io.WriteString(bc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					if req, err = http.ReadRequest(br); err != nil {
						return
					}
				}
				asked <- struct{}{}
				<-answer
				io.WriteString(bc, c.head)
				io.Copy(bc, br) // echoes until the client's FIN, then closes
			})
			other := loopback.Serve(t, func(bc *net.TCPConn) { bc.Close() })
			h := startProxy(t, config.Listener{IdleTimeout: 10 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
			cl := dialClient(t, h.addr, false)
			cl.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(cl)
			if c.reload {
				// A keep-alive exchange first, then the reload that moves
				// the backend: this connection's sessions end after their
				// next exchange.
				io.WriteString(cl, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				if status, _, closing := readBody(t, br); status != 200 || closing {
					t.Fatalf("before the reload: %d closing %v; want 200, kept", status, closing)
				}
				next := runningConfig(h)
				next.Backends[0].Address = other
				if err := h.srv.Reload(context.Background(), &next); err != nil {
					t.Fatal(err)
				}
			}
			io.WriteString(cl, c.req)
			select {
			case <-asked:
			case <-time.After(5 * time.Second):
				t.Fatal("the backend got no request within 5s")
			}
			if !c.reload {
				h.srv.Drain()
			}
			close(answer)
			got := make([]byte, len(c.head))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != c.head {
				rest, _ := br.Peek(br.Buffered())
				t.Fatalf("the client read the head %q%q (%v), want %q as the backend sent it", got, rest, err, c.head)
			}
			io.WriteString(cl, "ping")
			echo := make([]byte, 4)
			if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "ping" {
				t.Fatalf("through the tunnel: %q %v, want ping", echo, err)
			}
			cl.CloseWrite()
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the tunnel's end: %v, want EOF", err)
			}
			cl.Close()
			if td := h.record(t); td.Outcome != engine.OutcomeOK {
				t.Errorf("record: outcome %s (%v), want ok", td.Outcome, td.Err)
			}
		})
	}
}
