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
	writeFile(t, filepath.Join(dir, file), []byte(toml))
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
	level := heading[:strings.IndexByte(heading, ' ')+1]
	if j := strings.Index(s[1:], "\n"+level); j >= 0 {
		s = s[:j+1]
	}
	return s
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
