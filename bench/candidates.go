//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
)

// env is what every candidate needs: a scratch directory, the backend and
// the closeproxy binary.
type env struct {
	dir        string
	procs      *procs
	backend    string   // nginx's host:port
	closeproxy string   // built binary
	prototype  string   // built evrun, with -prototype
	nofile     uint64   // RLIMIT_NOFILE children inherit
	proxyCPUs  string   // taskset CPU list for the proxies; "" leaves them free
	teardown   string   // closeproxy's log.teardown
	ns         *netns   // where the next processes start (nil: the bench's namespace)
	spaces     []*netns // every namespace made (isolate), deleted at the end
}

// candidate is one way to reach the backend. start returns the address to
// load and the process to measure (nil for direct). check, if set, runs
// after the last round: an error says the figures are not what the column
// claims.
type candidate struct {
	name  string
	start func(e *env) (addr string, p *proc, err error)
	check func(e *env) error
}

// prototypeCandidates are the event-loop prototype's two modes, with
// -prototype: relaying bytes, and serving http1 exchanges on the loops.
var prototypeCandidates = []candidate{
	{name: "evloop prototype", start: func(e *env) (string, *proc, error) { return e.startPrototype("evloop") }},
	{name: "evloop http1 prototype", start: func(e *env) (string, *proc, error) { return e.startPrototype("evloop-http1", "-http1") }},
}

var candidates = []candidate{
	{name: "direct", start: func(e *env) (string, *proc, error) { return e.backend, nil, nil }},
	{name: "closeproxy tcp", start: func(e *env) (string, *proc, error) { return e.startCloseproxy("tcp", "loop") },
		check: func(e *env) error { return e.checkLoops("tcp", "loop") }},
	{name: "closeproxy tcp goroutines", start: func(e *env) (string, *proc, error) { return e.startCloseproxy("tcp", "goroutines") }},
	{name: "closeproxy http1", start: func(e *env) (string, *proc, error) { return e.startCloseproxy("http1", "loop") }},
	{name: "haproxy tcp", start: (*env).startHAProxy},
	{name: "nginx stream", start: (*env).startNginxStream},
}

const (
	smallPath = "/"
	blobPath  = "/blob"
	blobSize  = 8 << 20
	smallBody = "closeproxy bench: a small static body of about one hundred bytes, served by nginx....\n"
)

// run renders tmpl with data into name (in e.dir), starts argv (with
// "{conf}" replaced by that file) and waits for addr to listen. An empty
// tmpl writes no file: the candidate takes its settings from argv.
func (e *env) run(name, tmpl string, data any, addr string, argv ...string) (*proc, error) {
	if tmpl != "" {
		conf, err := e.writeConf(name, tmpl, data)
		if err != nil {
			return nil, err
		}
		if i := slices.Index(argv, "{conf}"); i >= 0 {
			argv[i] = conf
		}
	}
	if e.proxyCPUs != "" && !strings.HasPrefix(name, "backend") { // taskset execs: the PID stays the proxy's
		argv = append([]string{"taskset", "-c", e.proxyCPUs}, argv...)
	}
	p, err := e.procs.start(name, filepath.Join(e.dir, name+".log"), e.ns.wrap(argv...)...)
	if err != nil {
		return nil, err
	}
	if err := waitListening(p, addr, e.ns); err != nil {
		e.procs.stop(p)
		return nil, fmt.Errorf("%w (see %s)", err, filepath.Join(e.dir, name+".log"))
	}
	return p, nil
}

const nginxBackendConf = `daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {{.NoFile}};
user root;
pid {{.Dir}}/{{.Name}}.pid;
error_log {{.Dir}}/{{.Name}}.error.log warn;
events { worker_connections 65536; }
http {
	access_log off;
	default_type application/octet-stream;
	sendfile on;
	keepalive_timeout 75s;
	keepalive_requests 10000000;
	client_body_temp_path {{.Dir}}/tmp/body;
	proxy_temp_path {{.Dir}}/tmp/proxy;
	fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
	uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
	scgi_temp_path {{.Dir}}/tmp/scgi;
	server {
		listen {{.Addr}} backlog=4096;
		root {{.Dir}}/www;
		location = / { try_files /index.html =404; }
		location / { }
	}
}
`

// writeBodies writes what the backends serve.
func (e *env) writeBodies() error {
	www := filepath.Join(e.dir, "www")
	if err := os.MkdirAll(filepath.Join(e.dir, "tmp"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(smallBody), 0o644); err != nil {
		return err
	}
	blob := make([]byte, blobSize)
	for i := range blob {
		blob[i] = byte(i*7 + i>>11)
	}
	return os.WriteFile(filepath.Join(www, "blob"), blob, 0o644)
}

// startBackend runs an nginx backend named name (its files' names) in
// e.ns and makes it the one the next candidate proxies to.
func (e *env) startBackend(name string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	e.backend = addr
	data := map[string]any{"Dir": e.dir, "Addr": addr, "NoFile": e.nofile, "Name": name}
	return e.run(name, nginxBackendConf, data, addr, nginxBin, "-p", e.dir, "-c", "{conf}", "-e", filepath.Join(e.dir, name+".error.log"))
}

const nginxBin = "nginx"

// streamModule is where Debian's libnginx-mod-stream puts the module.
const streamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

const nginxStreamConf = `daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {{.NoFile}};
user root;
load_module {{.Module}};
pid {{.Dir}}/stream.pid;
error_log {{.Dir}}/stream.error.log warn;
events { worker_connections 65536; }
stream {
	server {
		listen {{.Addr}} backlog=4096;
		proxy_pass {{.Backend}};
	}
}
`

func (e *env) startNginxStream() (string, *proc, error) {
	if _, err := os.Stat(streamModule); err != nil {
		return "", nil, fmt.Errorf("nginx stream module missing (apt-get install libnginx-mod-stream): %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	data := map[string]any{"Dir": e.dir, "Addr": addr, "Backend": e.backend, "NoFile": e.nofile, "Module": streamModule}
	p, err := e.run("stream", nginxStreamConf, data, addr, nginxBin, "-p", e.dir, "-c", "{conf}", "-e", filepath.Join(e.dir, "stream.error.log"))
	return addr, p, err
}

// haproxyConf: mode tcp, no logging, no health checks; maxconn as high as
// the file limit allows (HAProxy refuses to start when it cannot have about
// two descriptors per connection).
const haproxyConf = `global
	maxconn {{.MaxConn}}
defaults
	mode tcp
	maxconn {{.MaxConn}}
	timeout connect 2s
	timeout client 60s
	timeout server 60s
frontend fe
	bind {{.Addr}}
	default_backend be
backend be
	server s1 {{.Backend}}
`

func (e *env) startHAProxy() (string, *proc, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return "", nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	data := map[string]any{"Addr": addr, "Backend": e.backend, "MaxConn": (e.nofile - 500) / 2}
	p, err := e.run("haproxy", haproxyConf, data, addr, bin, "-db", "-f", "{conf}")
	return addr, p, err
}

// closeproxyConf: defaults except admin off, teardown records as -teardown
// says (to stderr, the candidate's log file), no caps on sessions or pool,
// a short shutdown; relay as the candidate says ("loop" is the default,
// written out so that the two tcp configs differ in that line only; http1
// always relays on goroutines).
const closeproxyConf = `shutdown_timeout = "1s"
relay = "{{.Relay}}"
[log]
level = "warn"
teardown = "{{.Teardown}}"
[admin]
listen = "off"
[[listener]]
name = "bench"
listen = "{{.Addr}}"
backend = "nginx"
max_connections = 0
[[backend]]
name = "nginx"
address = "{{.Backend}}"
protocol = "{{.Protocol}}"
  [backend.pool]
  warm = 8
  max_conns = 0
`

func (e *env) startCloseproxy(protocol, relay string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	data := map[string]any{"Addr": addr, "Backend": e.backend, "Protocol": protocol, "Relay": relay, "Teardown": e.teardown}
	p, err := e.run(closeproxyName(protocol, relay), closeproxyConf, data, addr, e.closeproxy, "run", "-config", "{conf}")
	return addr, p, err
}

// closeproxyName names a closeproxy candidate's config and log files: each
// candidate needs its own, as all run at once.
func closeproxyName(protocol, relay string) string {
	if relay == "loop" {
		return "closeproxy-" + protocol
	}
	return "closeproxy-" + protocol + "-" + relay
}

// checkLoops fails if the candidate's closeproxy said that its relay loops
// could not start or refused a session: it logs that once, at warn, and
// relays on goroutines instead, so the column would silently show the
// goroutines relay.
func (e *env) checkLoops(protocol, relay string) error {
	log := filepath.Join(e.dir, closeproxyName(protocol, relay)+".log")
	b, err := os.ReadFile(log)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "relay on goroutines") { // both warnings say so
			return fmt.Errorf("sessions relayed on goroutines, not loops: %s", strings.TrimSpace(line))
		}
	}
	return nil
}

// writeConf renders tmpl with data into name.conf in e.dir.
func (e *env) writeConf(name, tmpl string, data any) (string, error) {
	var buf bytes.Buffer
	if err := template.Must(template.New(name).Parse(tmpl)).Execute(&buf, data); err != nil {
		return "", err
	}
	conf := filepath.Join(e.dir, name+".conf")
	return conf, os.WriteFile(conf, buf.Bytes(), 0o644)
}

// startPrototype runs the event-loop prototype (internal/evloop/evrun)
// with flags: one loop per CPU, each with its own listener; nothing to
// configure.
func (e *env) startPrototype(name string, flags ...string) (string, *proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	argv := append(append([]string{e.prototype}, flags...), addr, e.backend)
	p, err := e.run(name, "", nil, addr, argv...)
	return addr, p, err
}
