package integration

import (
	"fmt"
	"strings"
)

// CloseOpts is one leg's [listener.close] or [backend.close] table; empty
// fields keep closeproxy's defaults.
type CloseOpts struct {
	TimeWait, PeerFinGrace, Fallback, HalfCloseTimeout, DrainTimeout string
}

// ListenerOpts is one [[listener]] with its backend.
type ListenerOpts struct {
	Name, Listen                        string
	ProxyProtocol, ProxyProtocolTimeout string
	ProxyProtocolTrusted                []string
	Backend                             string // backend address; the backend is named after the listener
	SendProxyProtocol, ConnectTimeout   string
	Front, Back                         CloseOpts
}

// closeproxyConfig renders a configuration with one [[listener]] and one
// [[backend]] per entry of ls.
func closeproxyConfig(ls ...ListenerOpts) string {
	var b strings.Builder
	b.WriteString("shutdown_timeout = \"2s\"\n")
	for _, l := range ls {
		fmt.Fprintf(&b, "\n[[listener]]\nname = %q\nlisten = %q\nbackend = %q\n", l.Name, l.Listen, l.Name)
		opt(&b, "proxy_protocol", l.ProxyProtocol)
		opt(&b, "proxy_protocol_timeout", l.ProxyProtocolTimeout)
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
		closeTable(&b, "backend.close", l.Back)
	}
	return b.String()
}

func closeTable(b *strings.Builder, name string, c CloseOpts) {
	fmt.Fprintf(b, "  [%s]\n", name)
	opt(b, "time_wait", c.TimeWait)
	opt(b, "peer_fin_grace", c.PeerFinGrace)
	opt(b, "fallback", c.Fallback)
	opt(b, "half_close_timeout", c.HalfCloseTimeout)
	opt(b, "drain_timeout", c.DrainTimeout)
}

func opt(b *strings.Builder, key, value string) {
	if value != "" {
		fmt.Fprintf(b, "%s = %q\n", key, value)
	}
}
