//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what the Lua done() hook prints as one JSON line.
type wrkResult struct {
	Requests   int64 `json:"requests"`
	Bytes      int64 `json:"bytes"`
	DurationUS int64 `json:"duration_us"`
	Connect    int64 `json:"connect"`
	Read       int64 `json:"read"`
	Write      int64 `json:"write"`
	Status     int64 `json:"status"`
	Timeout    int64 `json:"timeout"`
}

func (r wrkResult) rate() float64 {
	return float64(r.Requests) / (float64(r.DurationUS) / 1e6)
}

func (r wrkResult) errors() int64 { return r.Connect + r.Read + r.Write + r.Status + r.Timeout }

const wrkScript = `done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format('{"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
		summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
`

// wrk runs wrk against http://addr+path for d with c connections; close
// adds "Connection: close", so every request opens a new connection.
func wrk(ctx context.Context, ns *netns, dir, addr, path string, c int, d time.Duration, close bool) (wrkResult, error) {
	script := filepath.Join(dir, "done.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return wrkResult{}, err
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	args := []string{"-t", strconv.Itoa(min(2, c)), "-c", strconv.Itoa(c), "-d", strconv.Itoa(secs) + "s", "--timeout", "2s", "-s", script}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+addr+path)
	cmd := ns.command(ctx, "wrk", args...)
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if line := sc.Bytes(); bytes.HasPrefix(line, []byte(`{"requests"`)) {
			var r wrkResult
			err := json.Unmarshal(line, &r)
			return r, err
		}
	}
	return wrkResult{}, fmt.Errorf("wrk printed no summary: %s", out.String())
}
