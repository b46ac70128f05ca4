package integration

import (
	"fmt"
	"strings"
)

// CloseOpts is one leg's [listener.close] or [backend.close] table; empty
// fields keep closeproxy's defaults.
type CloseOpts struct {
	TimeWait, PeerFinGrace, Fallback, HalfCloseTimeout, DrainTimeout string
	AdaptiveGrace                                                    string // "true" or "false"; "" leaves the default
}

// ListenerOpts is one [[listener]] with its backend.
type ListenerOpts struct {
	Name, Listen                        string
	ProxyProtocol, ProxyProtocolTimeout string
	ProxyProtocolTrusted                []string
	Backend                             string // backend address; the backend is named after the listener
	SendProxyProtocol, ConnectTimeout   string
	Protocol                            string // backend protocol: "tcp" or "http1"; "" keeps the default
	Intercept                           string // listener intercept: "tproxy" or "redirect"; "" keeps "off"
	Source                              string // backend source: "client"; "" keeps "proxy"
	MaxConnections                      string // listener max_connections, an integer as written; "" keeps the default
	IdleTimeout                         string // listener idle_timeout; "" keeps the default
	Pool                                PoolOpts
	Front, Back                         CloseOpts
}

// PoolOpts is a backend's [backend.pool] table; empty fields keep
// closeproxy's defaults. Warm and MaxConns are integers written as given
// ("0" turns warming off).
type PoolOpts struct {
	Warm, MaxIdleAge, MaxConns string
}

// GlobalOpts are the top-level keys and the [admin] table; empty fields
// keep closeproxyConfig's choices (shutdown_timeout "2s", the rest
// closeproxy's defaults: admin on 127.0.0.1:9901 inside the namespace).
type GlobalOpts struct {
	ShutdownTimeout      string
	AdminListen          string
	KernelSampleInterval string
	Relay                string // "": the default (or CLOSEPROXY_TEST_RELAY's)
}

// closeproxyConfig renders a configuration with one [[listener]] and one
// [[backend]] per entry of ls.
func closeproxyConfig(ls ...ListenerOpts) string {
	return closeproxyConfigWith(GlobalOpts{}, ls...)
}

// closeproxyConfigWith is closeproxyConfig with the top-level keys and the
// [admin] table of g.
func closeproxyConfigWith(g GlobalOpts, ls ...ListenerOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "shutdown_timeout = %q\n", or2(g.ShutdownTimeout, "2s"))
	opt(&b, "relay", g.Relay)
	if g.AdminListen != "" || g.KernelSampleInterval != "" {
		b.WriteString("\n[admin]\n")
		opt(&b, "listen", g.AdminListen)
		opt(&b, "kernel_sample_interval", g.KernelSampleInterval)
	}
	for _, l := range ls {
		fmt.Fprintf(&b, "\n[[listener]]\nname = %q\nlisten = %q\nbackend = %q\n", l.Name, l.Listen, l.Name)
		opt(&b, "proxy_protocol", l.ProxyProtocol)
		opt(&b, "proxy_protocol_timeout", l.ProxyProtocolTimeout)
		opt(&b, "intercept", l.Intercept)
		rawOpt(&b, "max_connections", l.MaxConnections)
		opt(&b, "idle_timeout", l.IdleTimeout)
		if len(l.ProxyProtocolTrusted) > 0 {
			fmt.Fprintf(&b, "proxy_protocol_trusted = [%q", l.ProxyProtocolTrusted[0])
			for _, p := range l.ProxyProtocolTrusted[1:] {
				fmt.Fprintf(&b, ", %q", p)
			}
			b.WriteString("]\n")
		}
		closeTable(&b, "listener.close", l.Front)
	}
	for _, l := range ls {
		fmt.Fprintf(&b, "\n[[backend]]\nname = %q\naddress = %q\n", l.Name, l.Backend)
		opt(&b, "send_proxy_protocol", l.SendProxyProtocol)
		opt(&b, "connect_timeout", l.ConnectTimeout)
		opt(&b, "protocol", l.Protocol)
		opt(&b, "source", l.Source)
		if l.Pool != (PoolOpts{}) {
			b.WriteString("  [backend.pool]\n")
			rawOpt(&b, "warm", l.Pool.Warm)
			opt(&b, "max_idle_age", l.Pool.MaxIdleAge)
			rawOpt(&b, "max_conns", l.Pool.MaxConns)
		}
		closeTable(&b, "backend.close", l.Back)
	}
	return b.String()
}

func closeTable(b *strings.Builder, name string, c CloseOpts) {
	fmt.Fprintf(b, "  [%s]\n", name)
	opt(b, "time_wait", c.TimeWait)
	opt(b, "peer_fin_grace", c.PeerFinGrace)
	rawOpt(b, "adaptive_grace", c.AdaptiveGrace)
	opt(b, "fallback", c.Fallback)
	opt(b, "half_close_timeout", c.HalfCloseTimeout)
	opt(b, "drain_timeout", c.DrainTimeout)
}

func opt(b *strings.Builder, key, value string) {
	if value != "" {
		fmt.Fprintf(b, "%s = %q\n", key, value)
	}
}

// rawOpt writes key = value unquoted (integers), if value is set.
func rawOpt(b *strings.Builder, key, value string) {
	if value != "" {
		fmt.Fprintf(b, "%s = %s\n", key, value)
	}
}
