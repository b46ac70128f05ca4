//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process the bench started.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and was reaped
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports that p has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// procs owns every process the bench starts and ends each one by PID.
type procs struct {
	mu   sync.Mutex
	list []*proc
}

// start runs argv in its own process group (a terminal's Ctrl-C reaches
// only the bench, which then ends it), its output in logPath. Pdeathsig
// ends it too if the bench dies without cleaning up.
func (ps *procs) start(name, logPath string, argv ...string) (*proc, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); out.Close(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stop sends SIGTERM to p's PID, then SIGKILL after 3 s, and waits.
func (ps *procs) stop(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i, q := range ps.list {
		if q == p {
			ps.list = append(ps.list[:i], ps.list[i+1:]...)
			break
		}
	}
}

// stopAll ends every process still running, newest first.
func (ps *procs) stopAll() {
	for {
		ps.mu.Lock()
		n := len(ps.list)
		var p *proc
		if n > 0 {
			p = ps.list[n-1]
		}
		ps.mu.Unlock()
		if p == nil {
			return
		}
		ps.stop(p)
	}
}

// waitListening dials addr from ns until it answers, p exits or 10 s
// pass. Polling is the only way to see another process's listener come up.
func waitListening(p *proc, addr string, ns *netns) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before listening on %s", p.name, addr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := ns.dial(ctx, addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: nothing listens on %s after 10s", p.name, addr)
}

// freeAddr returns a loopback address with a port nothing listens on now
// and that no earlier call returned: the kernel may hand out a port just
// closed again, and a candidate whose address was its own backend's
// would fail to bind while the bench, dialing that address, took the
// backend for it (and measured nginx alone in its column).
func freeAddr() (string, error) {
	handed.mu.Lock()
	defer handed.mu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		if !handed.addrs[addr] {
			handed.addrs[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("no loopback port that was not handed out already in 100 tries")
}

// handed is every address freeAddr returned.
var handed = struct {
	mu    sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// usage is a process tree's CPU time, resident memory and descriptors.
type usage struct {
	cpu time.Duration
	rss int64 // bytes
	fds int
}

// treeUsage sums CPU time (utime+stime) and RSS over pid and its
// descendants (nginx's workers).
func treeUsage(pid int) (usage, error) {
	var u usage
	for _, p := range tree(pid) {
		cpu, err := cpuTime(p)
		if err != nil {
			if p == pid {
				return u, err
			}
			continue
		}
		rss, _ := rssBytes(p)
		fds, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(p), "fd"))
		u.cpu += cpu
		u.rss += rss
		u.fds += len(fds)
	}
	return u, nil
}

// tree lists pid and its descendants from /proc/*/stat parent links.
func tree(pid int) []int {
	parent := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := statFields(p); err == nil && len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			parent[pp] = append(parent[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, parent[out[i]]...)
	}
	return out
}

// statFields returns /proc/pid/stat's fields after the command name:
// [0] is the state, [1] the parent, [11] utime, [12] stime.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	return strings.Fields(s[i+1:]), nil
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func cpuTime(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}
