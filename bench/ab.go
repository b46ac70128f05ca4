//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// abResult is what ab (ApacheBench) reports of a fixed-count load.
type abResult struct {
	complete, failed, non2xx int64
}

// ab runs ApacheBench against http://addr+path: n requests over c
// concurrent connections, each its own connection, or with keepAlive
// (-k) as many as each of the c connections carries. Unlike wrk's timed
// load, a fixed count over one client thread keeps the load's intensity,
// and with it the proxies' batching, the same from round to round.
func ab(ctx context.Context, ns *netns, addr, path string, n, c int, keepAlive bool) (abResult, error) {
	args := []string{"-q", "-r", "-n", strconv.Itoa(n), "-c", strconv.Itoa(c), "-s", "5", "http://" + addr + path}
	if keepAlive {
		args = append([]string{"-k"}, args...)
	}
	cmd := ns.command(ctx, "ab", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return abResult{}, fmt.Errorf("ab %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return parseAB(out.String())
}

// parseAB takes the counts out of ab's report.
func parseAB(out string) (abResult, error) {
	var r abResult
	seen := false
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Complete requests":
			r.complete, seen = n, true
		case "Failed requests":
			r.failed = n
		case "Non-2xx responses":
			r.non2xx = n
		}
	}
	if !seen {
		return r, fmt.Errorf("ab printed no summary: %s", out)
	}
	return r, nil
}
