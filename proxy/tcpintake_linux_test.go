package proxy

import (
	"bufio"
	"crypto/sha256"
	"io"
	"net"
	"sync/atomic"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
)

// Behind a listener that takes a PROXY header, a tcp session reads it on
// a loop: the bytes the client sent with the header and after it reach
// the backend whole (SHA-256 through an echo, the client half-closing),
// relayed on the same loop from a ready backend connection, or, when the
// backend asks for a PROXY header of its own (send_proxy_protocol), from
// a goroutine that dials and sends it naming the header's client. The
// record names that client and says ok. The refusals are
// TestProxyHeaderFaults', which run here too.
func TestTCPLoopProxyHeader(t *testing.T) {
	var judged atomic.Int64
	tcpIntakeHook = func() { judged.Add(1) }
	t.Cleanup(func() { tcpIntakeHook = nil })
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i*17 + i>>11)
	}
	for _, send := range []config.SendProxyProtocol{config.SendOff, config.SendV1} {
		t.Run(string(send), func(t *testing.T) {
			sources := make(chan string, 1)
			be := loopback.Serve(t, func(c *net.TCPConn) {
				defer c.Close()
				var r io.Reader = c
				if send != config.SendOff {
					br := bufio.NewReader(c)
					hdr, err := proxyproto.Read(br)
					if err != nil {
						sources <- err.Error()
						return
					}
					sources <- hdr.SourceAddr.String()
					r = br
				}
				io.Copy(c, r)
				c.CloseWrite()
			})
			bk := defaultBackend(be)
			bk.SendProxyProtocol = send
			h := startProxy(t, ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), bk)
			c := dialClient(t, h.addr, false)
			go func() {
				c.Write(append([]byte("PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n"), payload...))
				c.CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
				t.Errorf("echo: %d bytes (%v), want %d by SHA-256", len(got), err, len(payload))
			}
			c.Close()
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.ProxyProtocol != "v1" || td.Client.String() != "192.0.2.7:5555" || td.Front.BytesIn != int64(len(payload)) {
				t.Errorf("record: outcome %s (%v), proxy_protocol %q, client %s, %d bytes in; want ok, v1, 192.0.2.7:5555, %d",
					td.Outcome, td.Err, td.ProxyProtocol, td.Client, td.Front.BytesIn, len(payload))
			}
			if send != config.SendOff {
				if src := <-sources; src != "192.0.2.7:5555" {
					t.Errorf("the backend's PROXY header names %s, want 192.0.2.7:5555", src)
				}
			}
		})
	}
	if testRelay == "loop" && judged.Load() != 2 {
		t.Errorf("%d headers judged on the loops, want 2", judged.Load())
	}
}
