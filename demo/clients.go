package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"
)

// closer is who ends a row's HTTP exchanges.
type closer string

const (
	// serverFirst: the client asks for "Connection: close" and waits
	// (briefly) for the server's FIN before closing.
	serverFirst closer = "server"
	// clientFirst: keep-alive; the client closes after the response while
	// the server waits for the next request.
	clientFirst closer = "client"
	// racing: "Connection: close", and the client closes the instant it
	// has the body (as curl does) while the server closes right after
	// sending it: both FINs leave at about the same moment.
	racing closer = "race"
)

// load is what a burst of clients saw.
type load struct {
	dialed     int // connections established
	ok, failed int
	firstErr   error
	socks      map[tuple]bool // the clients' sockets: local ↔ the address dialed
}

// burst runs n short connections, at most at a time, each with one
// request, and counts how many got an intact response. It starts no new
// connection once ctx is done.
func burst(ctx context.Context, addr netip.AddrPort, c closer, n, at int) load {
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := load{socks: map[tuple]bool{}}
	slots := make(chan struct{}, at)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sock, err := request(addr, c)
			mu.Lock()
			res.add(sock, err)
			mu.Unlock()
			<-slots
		}()
	}
	wg.Wait()
	return res
}

func (l *load) add(sock tuple, err error) {
	if sock.local.IsValid() {
		l.dialed++
		l.socks[sock] = true
	}
	if err == nil {
		l.ok++
		return
	}
	l.failed++
	if l.firstErr == nil {
		l.firstErr = err
	}
}

// linger is how long a serverFirst client waits for the server's FIN after
// a complete response before closing by itself.
const linger = 200 * time.Millisecond

// request sends one GET the way c says and returns the client's socket
// (zero if the dial failed).
func request(addr netip.AddrPort, c closer) (tuple, error) {
	conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return tuple{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	sock := tuple{conn.LocalAddr().(*net.TCPAddr).AddrPort(), addr}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
	if c == clientFirst {
		req = "GET / HTTP/1.1\r\nHost: demo\r\n\r\n"
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return sock, fmt.Errorf("send request %s → %s: %w", sock.local, addr, err)
	}
	br := bufio.NewReader(conn)
	if err := readResponse(br); err != nil {
		return sock, fmt.Errorf("response %s ← %s: %w", sock.local, addr, err)
	}
	if c != serverFirst {
		return sock, nil // conn.Close, deferred, sends the FIN at once
	}
	conn.SetReadDeadline(time.Now().Add(linger))
	_, err = br.ReadByte()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
		return sock, fmt.Errorf("wait for the FIN %s ← %s: %w", sock.local, addr, err)
	}
	return sock, nil
}

// readResponse reads one response and its whole body, and fails unless it
// is a 200 with as many bytes as announced.
func readResponse(br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("read head: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || int64(len(body)) != resp.ContentLength {
		return fmt.Errorf("status %d with %d of %d bytes: %q", resp.StatusCode, len(body), resp.ContentLength, body[:min(len(body), 64)])
	}
	return nil
}
