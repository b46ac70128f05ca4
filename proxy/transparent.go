package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/pool"
)

// Transparent mode: a backend with source = "client" is dialed from the
// client's address, and a listener with intercept = "tproxy" | "redirect"
// accepts connections that nftables steered to it. The kernel side (the
// IP_TRANSPARENT option, SO_ORIGINAL_DST, CAP_NET_ADMIN) lives in
// transparent_linux.go.

// errNoSource: a source = "client" dial without a client to dial from. The
// pool never warms such a backend, so only a bug gets here.
var errNoSource = errors.New(`source = "client": no client address to dial from`)

// sourceDialer returns the dialer for one dial of a backend, without
// keep-alive (the caller sets it per backend.tcp_keepalive): a plain one,
// or, with source = "client", one bound to the client's address (carried in
// ctx by pool.WithSource) with IP_TRANSPARENT. The port is left to the
// kernel at connect (IP_BIND_ADDRESS_NO_PORT), so it is chosen per 4-tuple:
// the client's own port could still be pinned by an earlier back leg's
// TIME-WAIT toward the same backend.
func sourceDialer(ctx context.Context, src config.Source, address string) (*net.Dialer, error) {
	if src != config.SourceClient {
		return &net.Dialer{KeepAlive: -1}, nil
	}
	client, err := clientSource(ctx, address)
	if err != nil {
		return nil, err
	}
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: client.AsSlice()}, Control: transparentDial, KeepAlive: -1}, nil
}

// clientSource is the address a source = "client" dial to address starts
// from: the client's, carried in ctx by pool.WithSource, unmapped. One
// that cannot be a connection's source, or of the other address family,
// is refused before any dial.
func clientSource(ctx context.Context, address string) (netip.Addr, error) {
	client, ok := pool.Source(ctx)
	if !ok {
		return netip.Addr{}, errNoSource
	}
	if a := client.Unmap(); a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		// A PROXY header may name one: the kernel would dial from the
		// proxy's own address, and the backend log the proxy as the
		// client, silently. This host's failure, not the backend's.
		return netip.Addr{}, fmt.Errorf("source = \"client\": client address %s cannot be a connection's source: %w", client, syscall.EINVAL)
	}
	if err := sameFamily(client, address); err != nil {
		return netip.Addr{}, err
	}
	return client.Unmap(), nil
}

// sameFamily refuses to dial an IPv6 backend from an IPv4 client or the
// other way round: no socket can carry both. A backend named by host name
// is left to the resolver, which keeps only addresses of the source's
// family.
func sameFamily(client netip.Addr, address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil // the dial reports it
	}
	be, err := netip.ParseAddr(host)
	if err != nil || be.Unmap().Is4() == client.Unmap().Is4() {
		return nil
	}
	return fmt.Errorf("source = \"client\": client %s and backend %s are of different address families: %w",
		client, address, syscall.EAFNOSUPPORT)
}

// interceptedDst returns the address the client dialed on a listener that
// intercepts: for tproxy the accepted socket's own address; for redirect
// the one SO_ORIGINAL_DST reads, or the socket's own address when the
// connection was not redirected (it addressed the listener).
func interceptedDst(c *net.TCPConn, mode config.Intercept) netip.AddrPort {
	switch mode {
	case config.InterceptTProxy:
		return addrPort(c.LocalAddr())
	case config.InterceptRedirect:
		if dst, err := originalDst(c); err == nil {
			return dst
		}
		return addrPort(c.LocalAddr())
	}
	return netip.AddrPort{}
}

// listenConfig is how a listener's socket is opened: with IP_TRANSPARENT
// for tproxy, so the kernel hands it connections addressed elsewhere.
func listenConfig(mode config.Intercept) net.ListenConfig {
	lc := keepAliveListenConfig()
	if mode == config.InterceptTProxy {
		keep := lc.Control
		lc.Control = func(network, address string, c syscall.RawConn) error {
			if keep != nil {
				if err := keep(network, address, c); err != nil {
					return err
				}
			}
			return transparentListen(network, address, c)
		}
	}
	return lc
}

// listenKey tells whether a listener's socket can be kept across a reload:
// the same socket address however it is spelled (":80", "0.0.0.0:80" and
// "[::]:80" are one socket: binding the new spelling beside the old would
// only fail), and IP_TRANSPARENT set as needed. Port 0 and what does not
// parse compare as written.
func listenKey(l config.Listener) string {
	key, ok := config.ListenSpot(l.Listen)
	if !ok {
		key = l.Listen
	}
	if l.Intercept == config.InterceptTProxy {
		return key + " transparent"
	}
	return key
}

// requireNetAdmin refuses a configuration that needs CAP_NET_ADMIN when
// the process lacks it, naming each thing that needs it.
func requireNetAdmin(cfg *config.Config, has func() (bool, error)) error {
	needs := cfg.NeedsNetAdmin()
	if len(needs) == 0 {
		return nil
	}
	ok, err := has()
	if err != nil {
		return fmt.Errorf("%s needs CAP_NET_ADMIN (IP_TRANSPARENT), which could not be checked: %w", needs[0], err)
	}
	if ok {
		return nil
	}
	errs := make([]error, len(needs))
	for i, n := range needs {
		errs[i] = fmt.Errorf("%s needs CAP_NET_ADMIN (IP_TRANSPARENT); run as root or grant the capability", n)
	}
	return errors.Join(errs...)
}

// capEffHas reports whether the CapEff line of a /proc/PID/status text
// has capability bit set.
func capEffHas(status []byte, bit uint) (bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return mask&(1<<bit) != 0, nil
	}
	return false, errors.New("no CapEff line in the process status")
}

// CheckNetAdmin returns the error New would return for cfg because this
// process lacks CAP_NET_ADMIN, or nil; `closeproxy check` prints it as a
// warning, since the check may run elsewhere than the proxy.
func CheckNetAdmin(cfg *config.Config) error {
	return requireNetAdmin(cfg, hasNetAdmin)
}
