package demo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/closeproxy/closeproxy/sockdiag"
)

// burst runs o.Conns short connections, o.Concurrency at a time, each with
// one request, and counts how many got an intact response.
func burst(addr netip.AddrPort, clientCloses bool, o Options) (ok, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, o.Concurrency)
	for range o.Conns {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := request(addr, clientCloses)
			mu.Lock()
			if err == nil {
				ok++
			} else {
				failed++
			}
			mu.Unlock()
			<-slots
		}()
	}
	wg.Wait()
	return ok, failed
}

// linger is how long a client that asked for "Connection: close" waits for
// the server's FIN after a complete response before closing by itself.
const linger = 200 * time.Millisecond

// request sends one GET. When clientCloses, the client keeps the connection
// alive and closes first after the response; otherwise it asks for
// "Connection: close" and waits briefly for the server's FIN.
func request(addr netip.AddrPort, clientCloses bool) error {
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: demo\r\n\r\n"
	if !clientCloses {
		req = "GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(c, req); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || int64(len(body)) != resp.ContentLength {
		return fmt.Errorf("bad response: status %d, %d bytes: %v", resp.StatusCode, len(body), err)
	}
	if clientCloses {
		return nil
	}
	c.SetReadDeadline(time.Now().Add(linger))
	_, err = br.ReadByte()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("wait for the server's FIN: %w", err)
	}
	return nil
}

// settle waits until no socket on the given ports is still opening or
// closing, so that TIME-WAIT counts are final. The kernel offers no event
// for this: it polls, with a deadline.
func settle(ports []uint16, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		socks, err := sockdiag.List(sockdiag.FinWait1, sockdiag.FinWait2, sockdiag.CloseWait, sockdiag.LastAck, 7 /* CLOSING */, 2 /* SYN_SENT */, 3 /* SYN_RECV */)
		if err != nil {
			return err
		}
		busy := sockdiag.Count(socks, func(s sockdiag.Socket) bool { return onPorts(s, ports) })
		if busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sockets still closing after %s", busy, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func onPorts(s sockdiag.Socket, ports []uint16) bool {
	for _, p := range ports {
		if s.Local.Port() == p || s.Peer.Port() == p {
			return true
		}
	}
	return false
}

// kernelCounts splits this host's TIME-WAIT sockets by holder, by port: the
// client's sockets point at the proxy's listener, the proxy's back-leg
// sockets at the backend.
func kernelCounts(front, backend netip.AddrPort, direct bool) (counts, error) {
	socks, err := sockdiag.List(sockdiag.TimeWait)
	if err != nil {
		return counts{}, err
	}
	var c counts
	for _, s := range socks {
		switch {
		case s.Peer == front:
			c.client++
		case s.Local == front && !direct:
			c.proxyFront++
		case s.Peer == backend && !direct:
			c.proxyBack++
		case s.Local == backend:
			c.backend++
		}
	}
	return c, nil
}
