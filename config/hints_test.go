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
			name: "a listener's keys written below [listener.close]",
			src:  strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\n[listener.close]\ntime_wait = \"proxy\"\nidle_timeout = \"1m\"\nmax_connections = 100", 1),
			want: []string{
				`config.toml:8: unknown key listener.close.idle_timeout (idle_timeout belongs to [[listener]]: write it above [listener.close])`,
				`config.toml:9: unknown key listener.close.max_connections (max_connections belongs to [[listener]]: write it above [listener.close])`,
			},
		},
		{
			name: "a backend's key written below [backend.pool]",
			src:  minimal + "[backend.pool]\nwarm = 2\nconnect_timeout = \"1s\"\n",
			want: []string{`config.toml:12: unknown key backend.pool.connect_timeout (connect_timeout belongs to [[backend]]: write it above [backend.pool])`},
		},
		{
			name: "keys of other tables",
			src:  "[log]\nsample_interval = \"1s\"\n" + strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\nconnect_timeout = \"1s\"", 1),
			want: []string{
				`config.toml:2: unknown key log.sample_interval (sample_interval is a key of [auto])`,
				`config.toml:8: unknown key listener.connect_timeout (connect_timeout is a key of [[backend]])`,
			},
		},
		{
			name: "a top-level key written below [log]",
			src:  "[log]\nlevel = \"warn\"\nshutdown_timeout = \"10s\"\n" + minimal,
			want: []string{`config.toml:3: unknown key log.shutdown_timeout (shutdown_timeout is a top-level key: write it above [log] and every other table)`},
		},
		{
			name: "HAProxy's timeout, maxconn and mode",
			src: strings.Replace(strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\nmaxconn = 100", 1),
				`address = "127.0.0.1:8081"`, "address = \"127.0.0.1:8081\"\ntimeout = \"1s\"\nmode = \"http\"", 1),
			want: []string{
				`config.toml:6: unknown key listener.maxconn (did you mean listener.max_connections?)`,
				`config.toml:11: unknown key backend.timeout (did you mean backend.connect_timeout?)`,
				`config.toml:12: unknown key backend.mode (did you mean backend.protocol?)`,
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
