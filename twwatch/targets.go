package twwatch

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// ResolveTimeout bounds the one lookup of each backend host name.
const ResolveTimeout = 2 * time.Second

// Resolver looks a host name's addresses up; *net.Resolver implements it.
// Tests pass a fake one: target building then needs no network.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Targets say which TIME-WAIT sockets are the proxy's, and on which leg:
// the front leg's by local port (a listener's, whatever the address), the
// back leg's by peer address (a backend server's). They never change once
// built, so they are safe to share.
type Targets struct {
	frontPorts map[uint16]bool
	backAddrs  map[netip.AddrPort]bool
}

// BuildTargets reads the targets of cfg: each listener's port, and each
// backend server's address, a host name resolved once now with r (nil:
// net.DefaultResolver), every lookup bounded by ResolveTimeout. A listener
// on port 0 is left out (which port the kernel picks is not in the
// configuration), and so is an address that does not parse or resolve;
// each is logged.
func BuildTargets(cfg *config.Config, r Resolver, log *zap.Logger) *Targets {
	if r == nil {
		r = net.DefaultResolver
	}
	t := &Targets{frontPorts: map[uint16]bool{}, backAddrs: map[netip.AddrPort]bool{}}
	for _, l := range cfg.Listeners {
		_, port, err := splitHostPort(l.Listen)
		if err != nil || port == 0 {
			log.Debug("listener port unknown; its TIME-WAIT is not counted",
				zap.String("listener", l.Name), zap.String("listen", l.Listen))
			continue
		}
		t.frontPorts[port] = true
	}
	res := &resolver{r: r, log: log, seen: map[string][]netip.Addr{}}
	for _, b := range cfg.Backends {
		for _, srv := range b.ServerList() {
			for _, ap := range res.server(b.Name, srv.Address) {
				t.backAddrs[ap] = true
			}
		}
	}
	return t
}

// splitHostPort splits host:port and looks the port up (a number or a
// service name).
func splitHostPort(hostport string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := net.LookupPort("tcp", p)
	if err != nil {
		return "", 0, err
	}
	return host, uint16(port), nil
}

// resolver resolves each host name once per BuildTargets, however many
// servers name it.
type resolver struct {
	r    Resolver
	log  *zap.Logger
	seen map[string][]netip.Addr // by host name; nil: did not resolve
}

// server returns a server's addresses: its IP, or its host name's IPs,
// each as the kernel reports a peer (IPv4 unmapped, no zone).
func (res *resolver) server(backend, address string) []netip.AddrPort {
	log := res.log.With(zap.String("backend", backend), zap.String("address", address))
	host, port, err := splitHostPort(address)
	if err != nil {
		log.Warn("backend address unparsed; its TIME-WAIT is not counted", zap.Error(err))
		return nil
	}
	ips, err := res.lookup(host)
	if err != nil {
		log.Warn("backend host unresolved; its TIME-WAIT is not counted", zap.Error(err))
		return nil
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, peer(ip, port))
	}
	return out
}

// lookup returns host's IPs: host itself when it is one, else what the
// resolver says, looked up once.
func (res *resolver) lookup(host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	if ips, ok := res.seen[host]; ok {
		if ips == nil {
			return nil, fmt.Errorf("resolve %s: failed already", host)
		}
		return ips, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ResolveTimeout)
	defer cancel()
	ips, err := res.r.LookupNetIP(ctx, "ip", host)
	if err == nil && len(ips) == 0 {
		err = fmt.Errorf("resolve %s: no addresses", host)
	}
	if err != nil {
		res.seen[host] = nil
		return nil, err
	}
	res.seen[host] = ips
	res.log.Info("backend host resolved once for the kernel TIME-WAIT figures",
		zap.String("host", host), zap.Stringers("addresses", ips))
	return ips, nil
}

// peer writes an address as sock_diag reports a peer.
func peer(ip netip.Addr, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(ip.Unmap().WithZone(""), port)
}

// FrontPorts returns the listeners' ports, in order.
func (t *Targets) FrontPorts() []uint16 {
	out := make([]uint16, 0, len(t.frontPorts))
	for p := range t.frontPorts {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Backends returns the backend servers' addresses, in order.
func (t *Targets) Backends() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(t.backAddrs))
	for ap := range t.backAddrs {
		out = append(out, ap)
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

// filter is what the kernel is asked for: sockets on the listeners' ports
// or toward the backends; nil when there is nothing to ask.
func (t *Targets) filter() *sockdiag.Filter {
	if t == nil || len(t.frontPorts)+len(t.backAddrs) == 0 {
		return nil
	}
	return &sockdiag.Filter{LocalPorts: t.FrontPorts(), Peers: t.Backends()}
}

// count fills s's per-leg figures from socks. sock_diag also answers a
// TIME-WAIT request with orphaned FIN-WAIT-2 timewait sockets (state 5):
// only state TIME-WAIT counts. A leg without targets is left unread.
func (t *Targets) count(s *Sample, socks []sockdiag.Socket) {
	front, back := 0, 0
	toward := make(map[netip.AddrPort]int, len(t.backAddrs))
	for ap := range t.backAddrs {
		toward[ap] = 0
	}
	for _, so := range socks {
		if so.State != sockdiag.TimeWait {
			continue
		}
		if t.frontPorts[so.Local.Port()] {
			front++
		}
		if t.backAddrs[so.Peer] {
			back++
			toward[so.Peer]++
		}
	}
	if len(t.frontPorts) > 0 {
		s.Front = have(front)
	}
	if len(t.backAddrs) > 0 {
		s.Back, s.toward = have(back), toward
	}
}

// unread marks the per-leg figures of the legs with targets as not read.
func (t *Targets) unread(s *Sample, err error) {
	if len(t.frontPorts) > 0 {
		s.Front = Figure{Err: err}
	}
	if len(t.backAddrs) > 0 {
		s.Back = Figure{Err: err}
	}
}
