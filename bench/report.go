//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// row is one line of the table: a figure of every candidate.
type row struct {
	label  string
	format func(float64) string
	value  func(r, direct result) float64
	ratios bool // print ×HAProxy and ×direct
}

func rows(s settings) []row {
	added := func(f func(result) float64) func(r, d result) float64 {
		return func(r, d result) float64 { return f(r) - f(d) }
	}
	return []row{
		{fmt.Sprintf("short connections/s (c=%d)", s.shortConc), thousands, func(r, _ result) float64 { return r.shortRate }, true},
		{"short-connection errors", thousands, func(r, _ result) float64 { return r.shortErrs }, false},
		{fmt.Sprintf("proxy CPU s / 10k short conns (ab -n %d)", s.cpuConns), decimals(2), func(r, _ result) float64 { return r.cpuPer10k }, true},
		{fmt.Sprintf("keep-alive requests/s (c=%d)", s.kaConc), thousands, func(r, _ result) float64 { return r.kaRate }, true},
		{fmt.Sprintf("proxy CPU µs / keep-alive request (ab -k -n %d)", s.kaCPUReqs), decimals(1), func(r, _ result) float64 { return r.kaCPU }, true},
		{"bulk MB/s, 1 stream", thousands, func(r, _ result) float64 { return r.bulk1 }, true},
		{"bulk MB/s, 64 streams", thousands, func(r, _ result) float64 { return r.bulk64 }, true},
		{fmt.Sprintf("latency p50 µs (%d req/s)", s.rate), thousands, func(r, _ result) float64 { return r.p50 }, true},
		{fmt.Sprintf("latency p99 µs (%d req/s)", s.rate), thousands, func(r, _ result) float64 { return r.p99 }, true},
		{"added p50 µs", thousands, added(func(r result) float64 { return r.p50 }), true},
		{"added p99 µs", thousands, added(func(r result) float64 { return r.p99 }), true},
		{fmt.Sprintf("KiB per idle conn (n=%d)", s.idle), decimals(1), func(r, _ result) float64 { return r.idleKiB }, true},
		{"descriptors per idle conn", decimals(1), func(r, _ result) float64 { return r.idleFDs }, false},
		{twLabel(s), thousands, func(r, _ result) float64 { return r.tw }, false},
	}
}

// twLabel names the TIME-WAIT row: each candidate's namespace, or the
// host's when all share it.
func twLabel(s settings) string {
	if s.isolate {
		return "TIME-WAIT in its namespace before its loads (most)"
	}
	return "host TIME-WAIT before its loads (most)"
}

// printReport writes the machine line, the loads and the table.
func printReport(w io.Writer, s settings, results []result) {
	direct, haproxy := newResult(""), newResult("")
	for _, r := range results {
		switch r.name {
		case "direct":
			direct = r
		case "haproxy tcp":
			haproxy = r
		}
	}
	fmt.Fprintf(w, "machine: %s\n", machine())
	fmt.Fprintf(w, "loads: %d rounds over all candidates, medians; %s each; wrk -t2; CPU per short connection over ab -n %d -c %d, per keep-alive request over ab -k -n %d -c %d; bulk = 8 MiB body over keep-alive; latency = %d req/s over %d keep-alive conns; idle = %d conns", s.rounds, s.duration, s.cpuConns, s.shortConc, s.kaCPUReqs, s.kaConc, s.rate, s.rateConns, s.idle)
	if s.idle < s.idleWant {
		fmt.Fprintf(w, " (%d wanted: RLIMIT_NOFILE too low)", s.idleWant)
	}
	fmt.Fprintf(w, "; closeproxy log.teardown = %q", s.teardown)
	if s.proxyCPUs != "" {
		fmt.Fprintf(w, "; proxies on CPUs %s only (taskset)", s.proxyCPUs)
	}
	if s.loadCPUs != "" {
		fmt.Fprintf(w, "; load generators and backend on CPUs %s", s.loadCPUs)
	}
	if s.isolate {
		fmt.Fprint(w, "; each candidate with its own backend and loads in a network namespace of its own")
	}
	fmt.Fprintf(w, "\neach cell: value (×HAProxy, ×direct)\n\n")
	fmt.Fprint(w, "| figure |")
	for _, r := range results {
		fmt.Fprintf(w, " %s |", r.name)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "|---|"+strings.Repeat("---|", len(results)))
	for _, rw := range rows(s) {
		fmt.Fprintf(w, "| %s |", rw.label)
		h, d := rw.value(haproxy, direct), rw.value(direct, direct)
		for _, r := range results {
			fmt.Fprintf(w, " %s |", cell(rw, rw.value(r, direct), h, d))
		}
		fmt.Fprintln(w)
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "\n%s: %v", r.name, r.err)
		}
	}
	fmt.Fprintln(w)
}

func cell(rw row, v, h, d float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	s := rw.format(v)
	if !rw.ratios {
		return s
	}
	return fmt.Sprintf("%s (%s, %s)", s, ratio(v, h), ratio(v, d))
}

func ratio(v, base float64) string {
	if math.IsNaN(base) || math.IsNaN(v) || base <= 0 || v < 0 {
		return "–"
	}
	return strconv.FormatFloat(v/base, 'f', 2, 64) + "×"
}

// thousands formats v rounded, with commas: 12,345.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(math.Abs(v))), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if v < 0 && s != "0" {
		s = "-" + s
	}
	return s
}

func decimals(n int) func(float64) string {
	return func(v float64) string { return strconv.FormatFloat(v, 'f', n, 64) }
}
