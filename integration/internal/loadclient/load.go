package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	addr, path, host, connection, close, sha256 string
	src                                         *net.TCPAddr // local address to dial from; nil: the kernel's choice
	n, c                                        int
	expectBytes                                 int64
	timeout, maxDuration, closeDelay            time.Duration
}

// summary is the JSON the client prints.
type summary struct {
	Attempted     int            `json:"attempted"`      // connections started
	OK            int            `json:"ok"`             // full, checked response and the chosen close
	ConnectErrors int            `json:"connect_errors"` // connect() failed (any reason)
	AddrNotAvail  int            `json:"addr_not_avail"` // of which EADDRNOTAVAIL: local ports exhausted
	OtherErrors   int            `json:"other_errors"`   // failed after connecting
	ServerResets  int            `json:"server_resets"`  // of the ok: -close server met an RST, not an EOF
	Errors        map[string]int `json:"errors,omitempty"`
	DeadlineHit   bool           `json:"deadline_hit"` // -max-duration stopped new connections
	ElapsedMS     int64          `json:"elapsed_ms"`
}

// maxErrorKinds bounds the distinct error messages kept in the summary.
const maxErrorKinds = 10

// errServerReset: the server ended a complete response with an RST instead
// of a FIN (a safe reset). The response arrived whole, so it counts as ok.
var errServerReset = errors.New("server reset after a complete response")

// connectError marks a failure of the connect itself.
type connectError struct{ err error }

func (e connectError) Error() string { return "connect: " + e.err.Error() }
func (e connectError) Unwrap() error { return e.err }

func run(cfg config) summary {
	start := time.Now()
	deadline := start.Add(cfg.maxDuration)
	var next atomic.Int64
	var mu sync.Mutex
	sum := summary{Errors: map[string]int{}}
	var wg sync.WaitGroup
	for range cfg.c {
		wg.Go(func() {
			for next.Add(1) <= int64(cfg.n) {
				if time.Now().After(deadline) {
					mu.Lock()
					sum.DeadlineHit = true
					mu.Unlock()
					return
				}
				err := once(cfg)
				mu.Lock()
				sum.record(err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sum.ElapsedMS = time.Since(start).Milliseconds()
	return sum
}

func (s *summary) record(err error) {
	s.Attempted++
	var ce connectError
	switch {
	case err == nil:
		s.OK++
		return
	case errors.Is(err, errServerReset):
		s.OK++
		s.ServerResets++
		return
	case errors.As(err, &ce):
		s.ConnectErrors++
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			s.AddrNotAvail++
		}
	default:
		s.OtherErrors++
	}
	msg := err.Error()
	if _, ok := s.Errors[msg]; ok || len(s.Errors) < maxErrorKinds {
		s.Errors[msg]++
	}
}

// once runs one connection: connect, request, response, close.
func once(cfg config) error {
	d := net.Dialer{Timeout: cfg.timeout}
	if cfg.src != nil {
		d.LocalAddr = cfg.src
	}
	c, err := d.Dial("tcp", cfg.addr)
	if err != nil {
		return connectError{err}
	}
	conn := c.(*net.TCPConn)
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(cfg.timeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, request(cfg)); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	if cfg.close == "halfclose" {
		if err := conn.CloseWrite(); err != nil {
			return fmt.Errorf("half-close after the request: %w", err)
		}
	}
	br := bufio.NewReader(conn)
	if err := readResponse(cfg, br); err != nil {
		return err
	}
	return finish(cfg, conn, br)
}

func request(cfg config) string {
	req := "GET " + cfg.path + " HTTP/1.1\r\nHost: " + cfg.host + "\r\n"
	if cfg.connection != "" {
		req += "Connection: " + cfg.connection + "\r\n"
	}
	return req + "\r\n"
}

// readResponse reads one response and checks its status and body.
func readResponse(cfg config, br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return fmt.Errorf("read response header: %w", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("read body after %d bytes: %w", n, err)
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case cfg.expectBytes >= 0 && n != cfg.expectBytes:
		return fmt.Errorf("body %d bytes, want %d", n, cfg.expectBytes)
	case cfg.sha256 != "" && hex.EncodeToString(h.Sum(nil)) != cfg.sha256:
		return errors.New("body sha256 mismatch")
	}
	return nil
}

// finish ends the connection as -close says; the deferred Close in once
// sends the FIN (or, after SetLinger(0), the RST). With halfclose the FIN
// went out right after the request; the server's EOF is awaited as with
// server; halfclose-after sends it now, then awaits the EOF too.
func finish(cfg config, conn *net.TCPConn, br *bufio.Reader) error {
	time.Sleep(cfg.closeDelay)
	if cfg.close == "halfclose-after" {
		if err := conn.CloseWrite(); err != nil {
			return fmt.Errorf("half-close after the response: %w", err)
		}
	}
	switch cfg.close {
	case "reset":
		return conn.SetLinger(0)
	case "server", "halfclose", "halfclose-after":
		n, err := io.Copy(io.Discard, br)
		if errors.Is(err, syscall.ECONNRESET) && n == 0 {
			return errServerReset
		}
		if err != nil {
			return fmt.Errorf("wait for server EOF: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("%d unexpected bytes before server EOF", n)
		}
	}
	return nil
}
