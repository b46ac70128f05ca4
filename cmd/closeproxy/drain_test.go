package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/admin"
	"github.com/closeproxy/closeproxy/config"
)

// drain posts /drain, with wait=TIMEOUT under -wait; its exit code follows
// the answer, and -done-file is written whatever the answer.
func TestDrainSubcommand(t *testing.T) {
	var got []string
	status := http.StatusAccepted
	adm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		w.Header().Set("Server", admin.ServerHeader)
		w.WriteHeader(status)
	}))
	defer adm.Close()
	host := strings.TrimPrefix(adm.URL, "http://")
	done := filepath.Join(t.TempDir(), "drained")

	var out, errOut bytes.Buffer
	if code := run([]string{"drain", "-admin", host}, &out, &errOut); code != 0 {
		t.Errorf("drain: exit %d %s", code, errOut.String())
	}
	status = http.StatusOK
	if code := run([]string{"drain", "-admin", host, "-wait", "-timeout", "45s", "-done-file", done}, &out, &errOut); code != 0 {
		t.Errorf("drain -wait: exit %d %s", code, errOut.String())
	}
	if _, err := os.Stat(done); err != nil {
		t.Errorf("done file: %v", err)
	}
	want := []string{"POST /drain", "POST /drain?wait=45s"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests %q, want %q", got, want)
	}

	status = http.StatusServiceUnavailable // the wait ran out
	os.Remove(done)
	if code := run([]string{"drain", "-admin", host, "-wait", "-done-file", done}, &out, &errOut); code != 1 {
		t.Errorf("drain -wait with sessions left: exit %d, want 1", code)
	}
	if _, err := os.Stat(done); err != nil {
		t.Errorf("done file after a drain that gave up: %v", err)
	}
	// A mistyped hook says what is wrong, exits 2, and still writes the
	// done file: the container waiting on it must not wait out its bound.
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"-done-file", done, "extra"}, `unexpected argument "extra"`},
		{[]string{"-done-file", done, "-admin", "127.0.0.1"}, `-admin "127.0.0.1": want HOST:PORT`},
		{[]string{"-done-file", done, "-wait", "-timeout", "0s"}, "-timeout 0s: want more than 0"},
		{[]string{"-done-file", done, "-admin", "10.1.2.3:9901"}, "takes /drain from loopback only"}, // refused before anything leaves the host
		{[]string{"-done-file", done, "-delay", "-1s"}, "-delay -1s: want 0 or more"},
	} {
		os.Remove(done)
		errOut.Reset()
		if code := run(append([]string{"drain"}, c.args...), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), c.says) {
			t.Errorf("drain %q: exit %d, %q; want 2 and %q", c.args, code, errOut.String(), c.says)
		}
		if b, err := os.ReadFile(done); err != nil || string(b) != "2\n" {
			t.Errorf("drain %q: done file %q, %v; want it written with 2", c.args, b, err)
		}
	}
}

// drain -config and healthcheck -config reach the admin listener at the
// file's admin.listen, a wildcard on loopback; -admin and -url given win.
// (Both could only reach 127.0.0.1:9901 or an address typed again.)
func TestDrainAndHealthcheckFollowConfig(t *testing.T) {
	var got []string
	adm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		w.Header().Set("Server", admin.ServerHeader)
	}))
	defer adm.Close()
	host := strings.TrimPrefix(adm.URL, "http://")
	_, port, _ := net.SplitHostPort(host)
	at := writeConfig(t, strings.Replace(minimal, "127.0.0.1:0", host, 1))
	wildcard := writeConfig(t, strings.Replace(minimal, "127.0.0.1:0", "0.0.0.0:"+port, 1))
	elsewhere := writeConfig(t, strings.Replace(minimal, "127.0.0.1:0", "127.0.0.1:1", 1))
	for _, args := range [][]string{
		{"drain", "-config", at},
		{"drain", "-config", wildcard},
		{"drain", "-config", elsewhere, "-admin", host},
		{"healthcheck", "-config", at},
		{"healthcheck", "-config", wildcard},
		{"healthcheck", "-config", elsewhere, "-url", adm.URL + "/readyz"},
	} {
		got = nil
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 || len(got) != 1 {
			t.Errorf("%q: exit %d, %d requests, stderr %q; want 0 and one request", args, code, len(got), errOut.String())
		}
	}
	if want := "GET /readyz"; got[0] != want {
		t.Errorf("healthcheck -url: asked %q, want %q", got[0], want)
	}
}

// Where admin.listen says nothing can be reached, drain and healthcheck
// say why and what to pass instead.
func TestConfigAdmin(t *testing.T) {
	for _, c := range []struct{ listen, want, err string }{
		{"127.0.0.1:9902", "127.0.0.1:9902", ""},
		{"0.0.0.0:9901", "127.0.0.1:9901", ""},
		{":9901", "127.0.0.1:9901", ""},
		{"[::]:9901", "[::1]:9901", ""},
		{"[::1]:9901", "[::1]:9901", ""},
		{"off", "", `admin.listen is "off": that proxy serves no admin endpoints to reach; set admin.listen = "127.0.0.1:9901" and restart it`},
		{"127.0.0.1:0", "", `admin.listen "127.0.0.1:0" takes a free port at each start: pass -admin`},
	} {
		path := writeConfig(t, strings.Replace(minimal, "127.0.0.1:0", c.listen, 1))
		got, err := configAdmin(path, "-admin", io.Discard)
		if got != c.want || c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("admin.listen %q: %q, %v; want %q, %q", c.listen, got, err, c.want, c.err)
		}
	}
	// A broken edit elsewhere in the file: the address is still read,
	// with a warning; a file that is not TOML at all is refused.
	broken := writeConfig(t, strings.Replace(minimal, "127.0.0.1:0", "127.0.0.1:9903", 1)+"\nlisten_backlog = 5\n")
	if _, err := config.Load(broken); err == nil {
		t.Fatal("the broken file loads")
	}
	var warn bytes.Buffer
	if got, err := configAdmin(broken, "-admin", &warn); got != "127.0.0.1:9903" || err != nil || !strings.Contains(warn.String(), "does not load (closeproxy check -config") {
		t.Errorf("broken file: %q, %v, warning %q; want 127.0.0.1:9903 and a warning", got, err, warn.String())
	}
	// One that names no admin.listen: the default, said as the default.
	warn.Reset()
	if got, err := configAdmin(writeConfig(t, "listen_backlog = 5\n"), "-admin", &warn); got != "127.0.0.1:9901" || err != nil ||
		!strings.Contains(warn.String(), "the default admin.listen (it names none)") {
		t.Errorf("a broken file naming none: %q, %v, warning %q; want the default, said so", got, err, warn.String())
	}
	// Not TOML (a quote left open): the key is found by its line, in
	// [admin] or dotted before any table; not found, refused.
	for _, c := range []struct{ file, want string }{
		{"[admin]\nlisten = \"127.0.0.1:9904\" # ours\n[[listener]]\nname = \"web\nlisten = \"127.0.0.1:8080\"\n", "127.0.0.1:9904"},
		{"admin.listen = \"[::1]:9905\"\n[ listener ]\nlisten = \"x\n", "[::1]:9905"},
		{"[[listener]]\nlisten = \"127.0.0.1:8080\"\nname = \"web\n", ""},
		{"[admin]\nlisten = \"127.0.0.1:9906\n", ""},
		{"[admin]\nlisten = \"127.0.0.1:9906\"\n[admin.x\nlisten = \"\n", "127.0.0.1:9906"},
		{"[other]\nlisten = \"127.0.0.1:9907\"\n[\n", ""},
	} {
		warn.Reset()
		got, err := configAdmin(writeConfig(t, c.file), "-admin", &warn)
		if c.want != "" && (got != c.want || err != nil || !strings.Contains(warn.String(), "does not load")) || c.want == "" && (got != "" || err == nil) {
			t.Errorf("not TOML %q: %q, %v, warning %q; want %q", c.file, got, err, warn.String(), c.want)
		}
	}
	var out, errOut bytes.Buffer
	off := writeConfig(t, strings.Replace(minimal, "127.0.0.1:0", "off", 1))
	if code := run([]string{"drain", "-config", off}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), `admin.listen is "off"`) {
		t.Errorf("drain with admin off: exit %d, %q; want 1 and why", code, errOut.String())
	}
}

// A refused connection asks whether closeproxy runs, and where its admin
// listener was looked for.
func TestNotRunningSaysWhereItLooked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"drain", "-admin", free}, "-admin"},
		{[]string{"healthcheck", "-url", "http://" + free + "/healthz"}, "-url"},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		if want := "is closeproxy running? its admin listener is admin.listen (pass " + c.flag + " or -config)"; code != 1 || !strings.Contains(errOut.String(), want) {
			t.Errorf("%q: exit %d, %q; want 1 and %q", c.args, code, errOut.String(), want)
		}
	}
}

// An admin listener that takes no connection (a proxy out of
// descriptors: the connection and its request wait in the kernel's
// queue) leaves drain without an answer: it fails, and says that the
// request may still be carried out, as it is once the proxy accepts it.
func TestDrainUnansweredSaysItMayStillHappen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepted from
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	orig := drainAnswerWait
	drainAnswerWait = 200 * time.Millisecond
	t.Cleanup(func() { drainAnswerWait = orig })
	var out, errOut bytes.Buffer
	code := run([]string{"drain", "-admin", ln.Addr().String()}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "may still wait in the proxy's kernel and be carried out") {
		t.Errorf("drain to a listener that accepts nothing: exit %d, %q; want 1 and that the request may still be carried out", code, errOut.String())
	}
}
