package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
)

// checkLoop checks sv every health.interval until ctx ends and feeds the
// results to its health. The first check runs one interval after start: a
// server starts up, so a fresh backend serves at once.
func (s *Server) checkLoop(ctx context.Context, b *backend, sv *server) {
	h := b.cfg.Health
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	log := s.log.With(zap.String("backend", b.cfg.Name), zap.String("server", sv.addr))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := check(ctx, h, sv.addr)
		if ctx.Err() != nil {
			return
		}
		if err != nil && pool.IsLocal(err) {
			// Our ports or descriptors ran out: never the server's fault
			// (varnish-cache#2622).
			log.Warn("health check failed on this host; server not blamed", zap.Error(err))
			continue
		}
		if sv.health.Checked(err == nil, time.Now()) {
			if err != nil {
				log.Warn("server down: health checks failed", zap.Int("fall", h.Fall), zap.Error(err))
			} else {
				log.Info("server up: health checks passed", zap.Int("rise", h.Rise), zap.Duration("ease_in", h.EaseIn))
			}
		}
	}
}

// check runs one health check of addr, bounded by health.timeout. The
// connection always ends with an RST: a check leaves no TIME-WAIT.
func check(ctx context.Context, h config.Health, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("health check %s: %w", addr, err)
	}
	tc := c.(*net.TCPConn)
	defer func() { _ = tc.SetLinger(0); _ = tc.Close() }()
	if h.Check != config.HealthHTTP {
		return nil
	}
	deadline, _ := ctx.Deadline()
	_ = tc.SetDeadline(deadline)
	req := h.HTTPRequest + "\r\nHost: " + hostHeader(addr) + "\r\nConnection: close\r\nUser-Agent: closeproxy-health\r\n\r\n"
	if _, err := tc.Write([]byte(req)); err != nil {
		return fmt.Errorf("health check %s: send: %w", addr, err)
	}
	line, err := bufio.NewReaderSize(tc, 512).ReadString('\n')
	if err != nil {
		return fmt.Errorf("health check %s: read status: %w", addr, err)
	}
	status, err := statusCode(line)
	if err != nil {
		return fmt.Errorf("health check %s: %w", addr, err)
	}
	if status != h.ExpectStatus {
		return fmt.Errorf("health check %s: status %d, want %d", addr, status, h.ExpectStatus)
	}
	return nil
}

// statusCode reads the status of "HTTP/1.1 200 OK".
func statusCode(line string) (int, error) {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return 0, fmt.Errorf("not an HTTP/1 status line: %q", strings.TrimSpace(line))
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 100 || n > 599 {
		return 0, fmt.Errorf("bad status in %q", strings.TrimSpace(line))
	}
	return n, nil
}

// hostHeader is addr as a Host header carries it: an IPv6 zone, which
// only means something on this host, left out ("[fe80::1%eth0]:80" is
// "[fe80::1]:80"), as browsers send it.
func hostHeader(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	return net.JoinHostPort(host, port)
}
