package config

import (
	"slices"
	"strings"
	"testing"
)

// Mistakes an operator coming from another proxy's configuration makes
// get the line to change and what to write there.
func TestMistakesGetAHint(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{
			name: "a single [listener] table",
			src:  "[listener]\nname = \"web\"\nlisten = \":8080\"\nbackend = \"app\"\n[[backend]]\nname = \"app\"\naddress = \"127.0.0.1:8081\"\n",
			want: []string{`config.toml:1: listener: written as [listener], a single table; write [[listener]], once before each listener's keys`},
		},
		{
			name: "[listener.close] before any [[listener]]",
			src:  "[listener.close]\ntime_wait = \"proxy\"\n" + minimal,
			want: []string{`config.toml:4: listener: [[listener]] comes after line 1 made listener a single table; write each [[listener]] before its subtables, such as [listener.close]`},
		},
		{
			name: "a duration without a unit",
			src:  strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\nidle_timeout = \"60\"", 1),
			want: []string{`config.toml:6: listener "web": idle_timeout: "60" has no unit; write "60s" or "60ms"`},
		},
		{
			name: "IPv6 without brackets",
			src:  strings.Replace(minimal, `listen = ":8080"`, `listen = "::1:8080"`, 1),
			want: []string{`config.toml:4: listener "web": listen: "::1:8080": an IPv6 address goes in brackets: "[::1]:8080"`},
		},
		{
			name: "addr, as other proxies spell it",
			src:  strings.Replace(minimal, `listen = ":8080"`, `addr = ":8080"`, 1),
			want: []string{
				`config.toml:2: listener "web": listen: missing; give a host:port such as "0.0.0.0:8080"`,
				`config.toml:4: unknown key listener.addr (did you mean listener.listen?)`,
			},
		},
		{
			name: "addr in a server",
			src:  strings.Replace(minimal, `address = "127.0.0.1:8081"`, `servers = [{ addr = "127.0.0.1:8081" }]`, 1),
			want: []string{
				`config.toml:9: unknown key backend.servers.addr (did you mean backend.servers.address?)`,
				`config.toml:9: backend "app": servers[0]: missing; give a host:port such as "10.0.0.11:80"`,
			},
		},
		{
			name: "a PROXY header required from no trusted source",
			src:  strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\nproxy_protocol = \"required\"", 1),
			want: []string{`config.toml:6: listener "web": proxy_protocol_trusted: missing: proxy_protocol = "required" trusts no source without it; list the load balancers' addresses (e.g. "10.0.0.0/8")`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseErrors(t, tt.src); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\ngot  %q\nwant %q", got, tt.want)
			}
		})
	}
}
