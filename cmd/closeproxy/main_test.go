package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/admin"
	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/demo"
)

func TestMain(m *testing.M) {
	if os.Getenv("CLOSEPROXY_TEST_MAIN") == "1" { // the test binary run as closeproxy (TestLostStderrReader)
		os.Exit(run(os.Args[slices.Index(os.Args, "--")+1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "closeproxy.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const minimal = `
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
[[backend]]
name = "app"
address = "127.0.0.1:9"
`

// check says in one line that a configuration loads, and what it holds.
func TestCheckSaysOK(t *testing.T) {
	two := minimal + "[[listener]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nbackend = \"app\"\n"
	for _, tc := range []struct{ name, text, want string }{
		{"one of each", minimal, ": ok (1 listener, 1 backend)\n"},
		{"two listeners", two, ": ok (2 listeners, 1 backend)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.text)
			var out, errOut bytes.Buffer
			if code := run([]string{"check", "-config", path}, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if out.String() != path+tc.want || errOut.Len() != 0 {
				t.Errorf("stdout %q, stderr %q; want %q", out.String(), errOut.String(), path+tc.want)
			}
		})
	}
}

// check -print adds the effective configuration, which loads as it is.
func TestCheckPrintsEffectiveConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	path := writeConfig(t, minimal)
	code := run([]string{"check", "-config", path, "-print"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); first != "# "+path+": ok (1 listener, 1 backend)" {
		t.Errorf("first line %q, want the verdict as a comment", first)
	}
	if _, err := config.Parse(out.Bytes(), "effective.toml"); err != nil {
		t.Errorf("effective config does not load: %v", err)
	}
	for _, want := range []string{`time_wait = "backend"`, `fallback = "reset"`, `shutdown_timeout = "30s"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("effective config lacks %s:\n%s", want, out.String())
		}
	}
}

func TestCheckReportsEveryError(t *testing.T) {
	bad := strings.Replace(minimal, `backend = "app"`, "backend = \"app\"\nidle_timeut = \"1s\"\n[listener.close]\ntime_wait = \"sometimes\"", 1)
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", writeConfig(t, bad)}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"closeproxy.toml:8: unknown key listener.idle_timeut", "closeproxy.toml:10: ", `"sometimes" is not one of proxy, client, nowhere`} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("errors lack %q:\n%s", want, errOut.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"check"}, "need -config FILE"},
		{[]string{"check", "closeproxy.toml"}, `"closeproxy.toml" is not a flag: did you mean -config closeproxy.toml?`},
		{[]string{"run", "-config", "closeproxy.toml", "extra"}, `unexpected argument "extra"`},
		{[]string{"demo", "-n", "0"}, "-n and -c take a number of at least 1"},
		{[]string{"healthcheck", "-url", "127.0.0.1:9901"}, `-url "127.0.0.1:9901" is not an http:// URL, such as http://127.0.0.1:9901/healthz`},
		{[]string{"healthcheck", "http://127.0.0.1:9901/readyz"}, `unexpected argument "http://127.0.0.1:9901/readyz" (the endpoint goes in -url URL`},
		{[]string{"healthcheck", "-timeout", "0s"}, "-timeout 0s: want more than 0"}, // 0 would wait forever
		{[]string{"doctor", "-rate", "NaN"}, "(0 < N <= 1e+09)"},
		{[]string{"doctor", "-rate", "+Inf"}, "(0 < N <= 1e+09)"},
		{[]string{"doctor", "-rate", "1e18"}, "(0 < N <= 1e+09)"}, // pinned ports would overflow
		{[]string{"transparent"}, "need setup or teardown"},
		{[]string{"transparent", "-dry-run", "setup"}, "need setup or teardown, before the flags"},
		{[]string{"version", "-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"version", "extra"}, `unexpected argument "extra" (version takes none)`},
		{[]string{"--version", "extra"}, `unexpected argument "extra" (version takes none)`},
		{[]string{"help", "drainn"}, `no command "drainn" (closeproxy help lists them)`},
		{[]string{"help", "drain", "-wait"}, `unexpected argument "drain -wait"`},
	} {
		errOut.Reset()
		if code := run(c.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), c.says) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", c.args, code, errOut.String(), c.says)
		}
	}
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "closeproxy ") {
		t.Errorf("version: exit %d, %q", code, out.String())
	}
}

// -h, --help and help list the subcommands on stdout and exit 0, as
// operators expect; --version answers like version. (They used to reach
// run's flag parser: "Usage of run: -config string", exit 2.)
func TestHelpAndVersionFlags(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help", "help"} {
		var out, errOut bytes.Buffer
		code := run([]string{arg}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), "closeproxy demo") || !strings.Contains(out.String(), "closeproxy check -config FILE [-print]") || errOut.Len() != 0 {
			t.Errorf("closeproxy %s: exit %d, stdout %q, stderr %q; want 0 and the subcommands on stdout", arg, code, out.String(), errOut.String())
		}
	}
	for _, arg := range []string{"--version", "-version"} {
		var out, errOut bytes.Buffer
		if code := run([]string{arg}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "closeproxy ") {
			t.Errorf("closeproxy %s: exit %d, %q", arg, code, out.String())
		}
	}
}

// A subcommand's -h is its usage, asked for: exit 0, not a bad flag's 2.
// (transparent -h, before setup or teardown, used to exit 2.)
func TestSubcommandHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"check", "-h"}, {"run", "-h"}, {"demo", "-h"}, {"doctor", "-h"},
		{"healthcheck", "-h"}, {"drain", "-h"}, {"transparent", "setup", "-h"}, {"transparent", "-h"},
		{"transparent", "--help"}, {"version", "-h"}, {"help", "drain"}, {"help", "transparent"}} {
		var out, errOut bytes.Buffer
		// help COMMAND prints on stdout, as help does (help check | less)
		got := &errOut
		if args[0] == "help" {
			got = &out
		}
		if code := run(args, &out, &errOut); code != 0 || !strings.Contains(got.String(), "Usage of") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 0 and the flags", args, code, out.String(), errOut.String())
		}
	}
}

// Every command exits 0 after -h, 2 on a flag it does not have or an
// argument it does not take, as the README says. (version took anything
// after it and exited 0.)
func TestEveryCommandExitsAsDocumented(t *testing.T) {
	for _, cmd := range [][]string{{"run"}, {"check"}, {"demo"}, {"doctor"}, {"healthcheck"}, {"drain"},
		{"transparent"}, {"transparent", "setup"}, {"transparent", "teardown"}, {"version"}, {"--version"}, {"help"}} {
		for _, c := range []struct {
			arg  string
			want int
		}{{"-h", 0}, {"-bogus", 2}, {"stray", 2}} {
			var out, errOut bytes.Buffer
			args := append(slices.Clip(cmd), c.arg)
			if code := run(args, &out, &errOut); code != c.want {
				t.Errorf("%q: exit %d, want %d; stderr %q", args, code, c.want, errOut.String())
			}
		}
	}
}

// check warns of a [[backend]] no listener names: valid, but run dials it
// and /readyz waits for it all the same.
func TestCheckWarnsOfUnusedBackend(t *testing.T) {
	path := writeConfig(t, minimal+"[[backend]]\nname = \"spare\"\naddress = \"127.0.0.1:10\"\n")
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errOut); code != 0 ||
		out.String() != path+": ok (1 listener, 2 backends)\n" ||
		errOut.String() != "warning: "+path+": backend \"spare\" is used by no listener: nothing dials, checks or waits for it until one names it\n" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0, ok and one warning", code, out.String(), errOut.String())
	}
}

// demo runs no more clients at once than connections: -n 10 -c 1000 said
// "1000 at a time".
func TestDemoClampsConcurrency(t *testing.T) {
	for _, c := range []struct {
		args []string
		want demo.Options
	}{
		{[]string{"-n", "10", "-c", "1000"}, demo.Options{Conns: 10, Concurrency: 10}},
		{nil, demo.Options{Conns: 200, Concurrency: 100}},
	} {
		var got demo.Options
		fake := func(_ context.Context, _ io.Writer, o demo.Options) error { got = o; return nil }
		var out, errOut bytes.Buffer
		if code := cmdDemo(c.args, &out, &errOut, fake); code != 0 || got != c.want {
			t.Errorf("demo %q: exit %d, ran with %+v; want %+v", c.args, code, got, c.want)
		}
	}
}

// check warns of a records file whose directory is missing here, which
// run would fail to open, and run names the configuration it failed on.
func TestRecordsDirectoryMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone", "records.log")
	path := writeConfig(t, "[log]\nrecords = \""+missing+"\"\n"+minimal)
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "-config", path}, &out, &errOut); code != 0 ||
		!strings.Contains(errOut.String(), "warning: "+path+": log.records: directory "+filepath.Dir(missing)+": no such file or directory") {
		t.Errorf("check: exit %d, stderr %q; want 0 and a warning", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"run", "-config", path}, &out, &errOut); code != 1 ||
		!strings.HasPrefix(errOut.String(), path+": log.records: ") {
		t.Errorf("run: exit %d, stderr %q; want 1 and the file named", code, errOut.String())
	}
	dir := t.TempDir() // a directory where a file is meant
	path = writeConfig(t, "[log]\nrecords = \""+dir+"\"\n"+minimal)
	errOut.Reset()
	if code := run([]string{"check", "-config", path}, &out, &errOut); code != 0 ||
		!strings.Contains(errOut.String(), "warning: "+path+": log.records: "+dir+" is a directory; name a file in it") {
		t.Errorf("check, records a directory: exit %d, stderr %q; want 0 and a warning", code, errOut.String())
	}
}

// A listener that cannot bind is a start that failed, not a stop.
func TestStartFailureSaysSo(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	path := writeConfig(t, strings.Replace(minimal, `listen = "127.0.0.1:0"
backend`, `listen = "`+taken.Addr().String()+`"
backend`, 1))
	var out, errOut bytes.Buffer
	if code := run([]string{"run", "-config", path}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), `"msg":"closeproxy could not start"`) || !strings.Contains(errOut.String(), "address already in use") {
		t.Errorf("exit %d, stderr %q; want 1 and could not start", code, errOut.String())
	}
}

// serve returns nil once its context ends: the shutdown path SIGTERM takes.
func TestServeStopsCleanly(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal), "minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, &logs{log: zap.NewNop()}, nil, nil) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// healthcheck exits 0 on the admin listener's 200 only: a 503, or a 200
// from anything else (a web server at a wrong -url), is a failure; drain
// likewise, and it then writes no false "drained".
func TestHealthcheckSubcommand(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", admin.ServerHeader)
		io.WriteString(w, "ok")
	}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", admin.ServerHeader)
		w.WriteHeader(503)
	}))
	defer bad.Close()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }))
	defer web.Close()
	var out, errOut bytes.Buffer
	if code := run([]string{"healthcheck", "-url", ok.URL}, &out, &errOut); code != 0 {
		t.Errorf("healthy: exit %d %s", code, errOut.String())
	}
	if code := run([]string{"healthcheck", "-url", bad.URL}, &out, &errOut); code != 1 {
		t.Errorf("unhealthy: exit %d", code)
	}
	for _, cmd := range [][]string{{"healthcheck", "-url", web.URL}, {"drain", "-admin", strings.TrimPrefix(web.URL, "http://")}} {
		out.Reset()
		errOut.Reset()
		if code := run(cmd, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "not as a closeproxy admin listener") {
			t.Errorf("%q against a web server: exit %d, %q; want 1 and why", cmd, code, errOut.String())
		}
		if strings.Contains(out.String(), "hello") {
			t.Errorf("%q against a web server printed its answer %q on stdout, which reads as a pass", cmd, out.String())
		}
	}
}

// healthcheck -config builds its URL from admin.listen: a zone in it is
// escaped, as a URL needs, and parses back to the same host.
func TestHealthURLEscapesAZone(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:9901":  "http://127.0.0.1:9901/healthz",
		"[::1%lo]:21092":  "http://[::1%25lo]:21092/healthz",
		"[fe80::1%2]:990": "http://[fe80::1%252]:990/healthz",
	} {
		got := healthURL(addr)
		if got != want {
			t.Errorf("healthURL(%q) = %q, want %q", addr, got, want)
		}
		if u, err := url.Parse(got); err != nil || u.Host != addr {
			t.Errorf("healthURL(%q) = %q parses to host %q (%v)", addr, got, u.Host, err)
		}
	}
}

// The descriptors a configuration's sessions may hold: two per session
// under each listener's cap; no figure when a listener has no cap.
func TestDescriptorsWanted(t *testing.T) {
	cfg := &config.Config{Listeners: []config.Listener{{MaxConnections: 10000}, {MaxConnections: 50}}}
	if got := descriptorsWanted(cfg); got != 2*10050 {
		t.Errorf("two listeners, 10000 and 50: %d, want %d", got, 2*10050)
	}
	if msg, _ := fileLimitWarning(2*10050, cfg); msg != "" {
		t.Errorf("a limit that covers the caps warns: %q", msg)
	}
	if msg, _ := fileLimitWarning(2*10050-1, cfg); !strings.Contains(msg, "below what max_connections asks") {
		t.Errorf("a limit below the caps: %q, want the warning", msg)
	}
	cfg.Listeners[1].MaxConnections = 0
	if got := descriptorsWanted(cfg); got != 0 {
		t.Errorf("a listener without a cap: %d, want 0 (no figure)", got)
	}
	if msg, _ := fileLimitWarning(1<<20, cfg); !strings.Contains(msg, "only bound on sessions") {
		t.Errorf("a listener without a cap: %q, want the warning whatever the limit", msg)
	}
}
