package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestQuickStart follows the README's quick start word for word: every
// command of its shell blocks runs as written (in a fresh network
// namespace, with a stock-configured nginx on 127.0.0.1:80 as "the web
// server on this host"), its TOML block is the configuration file, and
// what the steps promise is checked: check passes, curl prints 200, the
// proxy writes an ok teardown record, the metrics answer.
func TestQuickStart(t *testing.T) {
	needRoot(t)
	needTool(t, "curl")
	section := readmeSection(t, "## Quick start")
	blocks := fencedBlocks(section)
	var shell []string
	var toml string
	for _, b := range blocks {
		switch b.lang {
		case "sh":
			shell = append(shell, b.lines...)
		case "toml":
			toml = strings.Join(b.lines, "\n") + "\n"
		}
	}
	const file = "sidecar.toml"
	if toml == "" || !strings.Contains(section, "`"+file+"`") {
		t.Fatalf("the quick start has no TOML block for %s:\n%s", file, section)
	}
	metrics := regexp.MustCompile("`(curl [^`]*/metrics[^`]*)`").FindStringSubmatch(section)
	if metrics == nil {
		t.Fatalf("the quick start names no metrics command:\n%s", section)
	}

	ns := "cpt" + randomHex(t, 3) + "-qs"
	addNetns(t, ns)
	topo := &Topology{Web: ns}
	startNginx(t, topo, ns, "127.0.0.1:80", NginxOpts{Keepalive: true})

	dir, bin := t.TempDir(), t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	writeCloseproxyConfig(t, filepath.Join(dir, file), toml)
	env := append(os.Environ(), "GOBIN="+bin, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var proxy *Proc
	var curled bool
	records := &lineSignal{want: `"msg":"teardown"`, found: make(chan string, 1)}
	for _, line := range shell {
		switch {
		case strings.HasPrefix(line, "go install"): // builds, needs no network: on the host, in the clone
			cmd := exec.Command("bash", "-c", line)
			cmd.Dir, cmd.Env = root, env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
		case strings.HasPrefix(line, "closeproxy run"): // stays in the foreground
			cmd := topo.Cmd(ns, "bash", "-c", "exec "+line)
			cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, records, records
			proxy = startCmd(t, "closeproxy@"+ns, cmd)
			waitListening(t, topo, ns, mustAddrPort(t, "0.0.0.0:8080"), proxy)
		default:
			cmd := topo.Cmd(ns, "bash", "-c", line)
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			if strings.HasPrefix(line, "curl") {
				curled = true
				if string(out) != "200\n" {
					t.Errorf("%s printed %q, the quick start says 200", line, out)
				}
			}
		}
	}
	if proxy == nil || !curled {
		t.Fatalf("the quick start's commands neither run the proxy nor send a request: %q", shell)
	}
	var rec map[string]any
	select {
	case line := <-records.found:
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a teardown record that is not JSON: %v: %s", err, line)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no teardown record 5s after the request:\n%s", proxy.Output())
	}
	if rec["outcome"] != "ok" || rec["front.time_wait"] == nil || rec["back.time_wait"] == nil {
		t.Errorf("the teardown record: outcome %v, front.time_wait %v, back.time_wait %v; want ok and both named",
			rec["outcome"], rec["front.time_wait"], rec["back.time_wait"])
	}
	cmd := topo.Cmd(ns, "bash", "-c", metrics[1])
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "closeproxy_") {
		t.Errorf("%s: %v\n%s", metrics[1], err, out)
	}
}

// readmeSection is the README's section whose heading starts with heading,
// up to the next heading of its level.
func readmeSection(t testing.TB, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+heading)
	if i < 0 {
		t.Fatalf("README has no %q section", heading)
	}
	s = s[i+1:]
	level := strings.IndexByte(heading, ' ')
	fence := false
	lines := strings.SplitAfter(s, "\n")
	for n, l := range lines[1:] {
		if strings.HasPrefix(strings.TrimLeft(l, " "), "```") {
			fence = !fence
		}
		if h := strings.IndexByte(l, ' '); !fence && h > 0 && h <= level && strings.Trim(l[:h], "#") == "" {
			return strings.Join(lines[:n+1], "")
		}
	}
	return s
}

// TestSidecarSnippet runs the README's sidecar configuration as written in
// front of a stock nginx (no PROXY protocol): requests get 200, not the
// 400 a stray PROXY header would earn, and the records say ok.
func TestSidecarSnippet(t *testing.T) {
	needRoot(t)
	needTool(t, "curl")
	var toml string
	for _, b := range fencedBlocks(readmeSection(t, "### As a sidecar")) {
		if b.lang == "toml" {
			toml = strings.Join(b.lines, "\n") + "\n"
			break
		}
	}
	if toml == "" {
		t.Fatal("the README's sidecar section has no TOML block")
	}
	ns := "cpt" + randomHex(t, 3) + "-sc"
	addNetns(t, ns)
	topo := &Topology{Web: ns}
	web := startNginx(t, topo, ns, "127.0.0.1:80", NginxOpts{Keepalive: true})
	file := filepath.Join(t.TempDir(), "sidecar.toml")
	writeCloseproxyConfig(t, file, toml)
	records := &lineSignal{want: `"msg":"teardown"`, found: make(chan string, 1)}
	cmd := topo.Cmd(ns, buildBinary(t, "./cmd/closeproxy"), "run", "-config", file)
	cmd.Stdout, cmd.Stderr = records, records
	proxy := startCmd(t, "closeproxy@"+ns, cmd)
	waitListening(t, topo, ns, mustAddrPort(t, "0.0.0.0:8080"), proxy)
	out, err := topo.Cmd(ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8080/").CombinedOutput()
	if err != nil || string(out) != "200" {
		t.Errorf("curl through the README's sidecar config: %v, status %q; want 200", err, out)
	}
	select {
	case line := <-records.found:
		if !strings.Contains(line, `"outcome":"ok"`) {
			t.Errorf("the record: %s; want outcome ok", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no teardown record 5s after the request:\n%s", proxy.Output())
	}
	if n := len(web.WaitAccessLog(t, 1, 5*time.Second)); n != 1 {
		t.Errorf("nginx logged %d requests, want 1", n)
	}
}

type fenced struct {
	lang  string
	lines []string // without the block's indentation; blank lines and comments dropped for sh
}

// fencedBlocks lists the fenced code blocks of markdown text, in order.
func fencedBlocks(text string) []fenced {
	var out []fenced
	var cur *fenced
	indent := ""
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			out = append(out, fenced{lang: strings.TrimPrefix(trimmed, "```")})
			cur, indent = &out[len(out)-1], line[:len(line)-len(trimmed)]
		case cur != nil && trimmed == "```":
			cur = nil
		case cur != nil:
			l := strings.TrimPrefix(line, indent)
			if cur.lang == "sh" && (strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#")) {
				continue
			}
			cur.lines = append(cur.lines, l)
		}
	}
	return out
}

// lineSignal is a process's output writer that hands over the first
// complete line containing want.
type lineSignal struct {
	want  string
	found chan string // buffered: one line
	mu    sync.Mutex
	part  []byte
	sent  bool
}

func (w *lineSignal) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.part[:i])
		w.part = w.part[i+1:]
		if !w.sent && strings.Contains(line, w.want) {
			w.sent = true
			w.found <- line
		}
	}
}
