package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

// NginxOpts shape the web server. The zero value is a server that closes
// every connection after one response and serves only "/".
type NginxOpts struct {
	// Keepalive keeps connections open between requests (for
	// KeepaliveTimeout, default 75s); false sets keepalive_timeout 0, so
	// nginx answers "Connection: close" and closes first.
	Keepalive        bool
	KeepaliveTimeout time.Duration
	// BlobSizes are the fixed bodies served at "/blob/<n>" (n bytes each).
	BlobSizes []int
	// ProxyProtocol makes the listener require a PROXY header (v1 or v2).
	ProxyProtocol bool
	// Also are more addresses the same server listens on ("10.231.2.1:81"),
	// so that tests can tell connections apart by the port they reached.
	Also []string
}

// Nginx is a running nginx: one process (master_process off), its files in
// a test temp directory. A PUT to "/dav/<name>" stores its body as a file
// (DAVFile says where), which a GET then serves. Every path is also served
// under "/close/", where
// keepalive_timeout is 0: those responses say "Connection: close" and nginx
// sends the first FIN, whatever NginxOpts.Keepalive says. "/early" answers
// "early\n" at once, before it reads a request body, which it then reads
// and throws away (a keep-alive connection goes on).
type Nginx struct {
	*Proc
	Addr  netip.AddrPort
	dir   string
	blobs map[int]string // size → SHA-256, hex
}

// AccessEntry is one access log line.
type AccessEntry struct {
	RemoteAddr, RemotePort string
	Connection             int64 // nginx's connection serial number
	ConnectionRequests     int   // requests so far on that connection
	ProxyProtocolAddr      string
	ProxyProtocolPort      string
	Status                 int
	Request                string
	BodyBytesSent          int64
	ServerPort             string // the port the request reached (NginxOpts.Also)
}

// startNginx runs nginx in namespace ns listening on listenAddr
// ("10.231.2.1:80") and waits until it listens.
func startNginx(t testing.TB, topo *Topology, ns, listenAddr string, opts NginxOpts) *Nginx {
	t.Helper()
	bin := needTool(t, "nginx")
	addr, err := netip.ParseAddrPort(listenAddr)
	if err != nil {
		t.Fatalf("nginx listen address: %v", err)
	}
	n := &Nginx{Addr: addr, dir: t.TempDir(), blobs: map[int]string{}}
	n.writeFiles(t, opts)
	conf := filepath.Join(n.dir, "nginx.conf")
	n.Proc = topo.Start(t, ns, bin, "-p", n.dir, "-c", conf, "-e", filepath.Join(n.dir, "error.log"))
	waitListening(t, topo, ns, addr, n.Proc)
	for _, a := range opts.Also {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			t.Fatalf("nginx listen address: %v", err)
		}
		waitListening(t, topo, ns, ap, n.Proc)
	}
	return n
}

var nginxConf = template.Must(template.New("nginx").Parse(`
daemon off;
master_process off;
worker_processes 1;
user root;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
events { worker_connections 8192; }
http {
	default_type application/octet-stream;
	client_body_temp_path {{.Dir}}/tmp/body;
	proxy_temp_path {{.Dir}}/tmp/proxy;
	fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
	uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
	scgi_temp_path {{.Dir}}/tmp/scgi;
	log_format cpt escape=json '{"remote_addr":"$remote_addr","remote_port":"$remote_port",'
		'"connection":"$connection","connection_requests":"$connection_requests",'
		'"proxy_protocol_addr":"$proxy_protocol_addr","proxy_protocol_port":"$proxy_protocol_port",'
		'"status":"$status","request":"$request","body_bytes_sent":"$body_bytes_sent","server_port":"$server_port"}';
	access_log {{.Dir}}/access.log cpt;
	keepalive_timeout {{.Keepalive}};
	keepalive_requests 100000;
	server {
		listen {{.Listen}}{{if .ProxyProtocol}} proxy_protocol{{end}} backlog=4096;
		{{- range .Also}}
		listen {{.}}{{if $.ProxyProtocol}} proxy_protocol{{end}} backlog=4096;
		{{- end}}
		root {{.Dir}}/www;
		location / { }
		location = /early { return 200 "early\n"; }
		location /close/ {
			keepalive_timeout 0;
			alias {{.Dir}}/www/;
		}
		location /dav/ {
			dav_methods PUT;
			create_full_put_path on;
			client_max_body_size 64m;
		}
	}
}
`))

func (n *Nginx) writeFiles(t testing.TB, opts NginxOpts) {
	t.Helper()
	www := filepath.Join(n.dir, "www")
	for _, d := range []string{filepath.Join(www, "blob"), filepath.Join(n.dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(www, "index.html"), []byte("ok\n"))
	for _, size := range opts.BlobSizes {
		body := blob(size)
		writeFile(t, filepath.Join(www, "blob", strconv.Itoa(size)), body)
		sum := sha256.Sum256(body)
		n.blobs[size] = hex.EncodeToString(sum[:])
	}
	keepalive := "0"
	if opts.Keepalive {
		keepalive = fmt.Sprintf("%ds", max(int(opts.KeepaliveTimeout.Seconds()), 1))
		if opts.KeepaliveTimeout == 0 {
			keepalive = "75s"
		}
	}
	var conf strings.Builder
	err := nginxConf.Execute(&conf, map[string]any{
		"Dir": n.dir, "Listen": n.Addr.String(), "Keepalive": keepalive, "ProxyProtocol": opts.ProxyProtocol,
		"Also": opts.Also,
	})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(n.dir, "nginx.conf"), []byte(conf.String()))
}

// blob is a deterministic, incompressible body of size bytes.
func blob(size int) []byte {
	r := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16), byte(size >> 24)})
	b := make([]byte, size)
	_, _ = r.Read(b)
	return b
}

// BlobPath is the path serving the body of size bytes; BlobSHA256 its hash.
func (n *Nginx) BlobPath(size int) string { return "/blob/" + strconv.Itoa(size) }

// DAVFile is where nginx stores the body of a PUT to "/dav/<name>".
func (n *Nginx) DAVFile(name string) string { return filepath.Join(n.dir, "www", "dav", name) }

// BlobSHA256 is the hex SHA-256 of the body at BlobPath(size).
func (n *Nginx) BlobSHA256(t testing.TB, size int) string {
	t.Helper()
	sum, ok := n.blobs[size]
	if !ok {
		t.Fatalf("nginx serves no blob of %d bytes; add it to NginxOpts.BlobSizes", size)
	}
	return sum
}

// AccessLog parses the access log as it stands.
func (n *Nginx) AccessLog(t testing.TB) []AccessEntry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// A line nginx is still writing has no newline yet: it is left for
	// the next read.
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	var entries []AccessEntry
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line != "" {
			entries = append(entries, parseAccessLine(t, line))
		}
	}
	return entries
}

// WaitAccessLog waits until the access log holds at least count entries and
// returns them. nginx writes a line after the response has left, so a
// client can finish before its line exists; polling the file, with a
// deadline, is the only way to know.
func (n *Nginx) WaitAccessLog(t testing.TB, count int, timeout time.Duration) []AccessEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		entries := n.AccessLog(t)
		if len(entries) >= count {
			return entries
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx access log: %d entries after %v, want %d", len(entries), timeout, count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitAccessPort waits until the access log holds at least count entries
// for requests that reached port, and returns those. Polling the file,
// with a deadline, is the only way to know (WaitAccessLog).
func (n *Nginx) WaitAccessPort(t testing.TB, port uint16, count int, timeout time.Duration) []AccessEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var at []AccessEntry
		for _, e := range n.AccessLog(t) {
			if e.ServerPort == strconv.Itoa(int(port)) {
				at = append(at, e)
			}
		}
		if len(at) >= count {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx access log: %d entries for port %d after %v, want %d", len(at), port, timeout, count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func parseAccessLine(t testing.TB, line string) AccessEntry {
	t.Helper()
	var raw map[string]string
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		t.Fatalf("nginx access log line %q: %v", line, err)
	}
	num := func(key string) int64 {
		v, err := strconv.ParseInt(raw[key], 10, 64)
		if err != nil {
			t.Fatalf("nginx access log line %q: %s: %v", line, key, err)
		}
		return v
	}
	return AccessEntry{
		RemoteAddr: raw["remote_addr"], RemotePort: raw["remote_port"],
		Connection: num("connection"), ConnectionRequests: int(num("connection_requests")),
		ProxyProtocolAddr: raw["proxy_protocol_addr"], ProxyProtocolPort: raw["proxy_protocol_port"],
		Status: int(num("status")), Request: raw["request"], BodyBytesSent: num("body_bytes_sent"),
		ServerPort: raw["server_port"],
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
