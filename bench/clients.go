//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpConn is a keep-alive HTTP/1.1 client connection that reads only
// what it needs: the status line, Content-Length, the body.
type httpConn struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

func dialHTTP(ctx context.Context, ns *netns, addr, path string) (*httpConn, error) {
	c, err := ns.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: bench\r\n\r\n"
	return &httpConn{c: c, br: bufio.NewReaderSize(c, 4096), req: []byte(req)}, nil
}

// get sends one request and reads the response into buf-sized reads,
// returning the body length.
func (h *httpConn) get(buf []byte) (int64, error) {
	if _, err := h.c.Write(h.req); err != nil {
		return 0, err
	}
	n := int64(-1)
	for first := true; ; first = false {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		s := string(line)
		if first && !strings.HasPrefix(s, "HTTP/1.1 200") {
			return 0, fmt.Errorf("response %q", strings.TrimSpace(s))
		}
		if s == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(s), "content-length:"); ok {
			n, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if n < 0 {
		return 0, errors.New("no Content-Length")
	}
	for left := n; left > 0; {
		m, err := h.br.Read(buf[:min(int64(len(buf)), left)])
		left -= int64(m)
		if err != nil && left > 0 {
			return 0, err
		}
	}
	return n, nil
}

// bulk fetches the blob over streams keep-alive connections for d and
// returns MB/s (10^6 bytes) of body received.
func bulk(ctx context.Context, ns *netns, addr string, streams int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range streams {
		wg.Go(func() {
			h, err := dialHTTP(ctx, ns, addr, blobPath)
			if err != nil {
				once.Do(func() { firstErr = err })
				return
			}
			defer h.c.Close()
			stop := context.AfterFunc(ctx, func() { h.c.SetDeadline(time.Now()) })
			defer stop()
			h.br = bufio.NewReaderSize(h.c, 256<<10)
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				n, err := h.get(buf)
				total.Add(n)
				if err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
			}
		})
	}
	wg.Wait()
	// bytes of a fetch cut by the deadline are not counted; over d they are
	// a few blobs at most
	return float64(total.Load()) / time.Since(start).Seconds() / 1e6, firstErr
}

// latencies issues rate requests/s in total over conns keep-alive
// connections for d, each request at its scheduled time, and returns the
// p50 and p99 of scheduled-send-to-last-byte.
func latencies(ctx context.Context, ns *netns, addr string, rate, conns int, d time.Duration) (p50, p99 time.Duration, err error) {
	interval := time.Duration(conns) * time.Second / time.Duration(rate)
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(d)
	for i := range conns {
		wg.Go(func() {
			lat, err := paced(ctx, ns, addr, start.Add(interval*time.Duration(i)/time.Duration(conns)), end, interval)
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	if len(all) == 0 {
		return 0, 0, fmt.Errorf("no latency samples: %w", firstErr)
	}
	slices.Sort(all)
	return all[len(all)/2], all[len(all)*99/100], firstErr
}

// paced sends one request every interval from start until end on one
// connection.
func paced(ctx context.Context, ns *netns, addr string, start, end time.Time, interval time.Duration) ([]time.Duration, error) {
	h, err := dialHTTP(ctx, ns, addr, smallPath)
	if err != nil {
		return nil, err
	}
	defer h.c.Close()
	buf := make([]byte, 4096)
	var out []time.Duration
	for at := start; at.Before(end) && ctx.Err() == nil; at = at.Add(interval) {
		time.Sleep(time.Until(at))
		h.c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := h.get(buf); err != nil {
			return out, err
		}
		out = append(out, time.Since(at))
	}
	return out, nil
}

// idleConns opens n connections to addr, each sending one keep-alive
// request and reading its response, and leaves them open. The caller
// closes them with closeAll.
func idleConns(ctx context.Context, ns *netns, addr string, n int) ([]*httpConn, error) {
	conns := make([]*httpConn, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				h, err := dialHTTP(ctx, ns, addr, smallPath)
				if err == nil {
					h.c.SetDeadline(time.Now().Add(5 * time.Second))
					_, err = h.get(buf)
					h.c.SetDeadline(time.Time{})
					conns[i] = h
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("idle connection %d: %w", i, err) })
					return
				}
			}
		})
	}
	wg.Wait()
	return conns, firstErr
}

// closeAll resets every connection (SO_LINGER 0: no TIME-WAIT left on the
// bench's ports).
func closeAll(conns []*httpConn) {
	for _, h := range conns {
		if h == nil {
			continue
		}
		if tc, ok := h.c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		h.c.Close()
	}
}
