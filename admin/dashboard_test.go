package admin

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
	"github.com/closeproxy/closeproxy/twwatch/twwatchtest"
)

const dashboardPath = "../deploy/grafana/closeproxy.json"

// PromQL words that are not metric names where the extractor meets them.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"offset": true, "bool": true, "and": true, "or": true, "unless": true, "inf": true, "nan": true,
}

var (
	promqlString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	grafanaVar     = regexp.MustCompile(`\$\{?\w+\}?`)
	promqlName     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelValues    = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
)

// metricNames returns the metric names one PromQL expression reads:
// identifiers left once strings, label matchers, ranges, grouping clauses
// and Grafana variables are gone, and that do not call (functions,
// aggregations).
func metricNames(expr string) []string {
	s := promqlString.ReplaceAllString(expr, `""`)
	s = grafanaVar.ReplaceAllString(s, "")
	s = promqlMatchers.ReplaceAllString(s, "")
	s = promqlGrouping.ReplaceAllString(s, "")
	var names []string
	for _, loc := range promqlName.FindAllStringIndex(s, -1) {
		word := s[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(s[loc[0]-1:loc[0]], "0123456789.") {
			continue // the exponent or unit of a number
		}
		if promqlKeywords[strings.ToLower(word)] || strings.HasPrefix(strings.TrimSpace(s[loc[1]:]), "(") {
			continue
		}
		names = append(names, word)
	}
	return names
}

func TestMetricNamesFromPromQL(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (leg, side) (rate(closeproxy_first_fin_total{leg="front",side=~"a|b"}[$__rate_interval]))`: {"closeproxy_first_fin_total"},
		`time() - max(closeproxy_config_last_reload_success_timestamp_seconds{instance=~"$instance"})`:     {"closeproxy_config_last_reload_success_timestamp_seconds"},
		`histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / on (job) group_left y > 1e3`:         {"x_bucket", "y"},
		`a{l="by (x)"} and on(instance) b offset 5m`:                                                       {"a", "b"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// dashboardQueries returns every PromQL expression of the dashboard's
// panels and the metrics its template variables read.
func dashboardQueries(t *testing.T) (exprs, varMetrics []string) {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok {
					if k == "expr" {
						exprs = append(exprs, s)
					}
					for _, m := range labelValues.FindAllStringSubmatch(s, -1) {
						varMetrics = append(varMetrics, m[1])
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	return exprs, varMetrics
}

// Every metric the shipped Grafana dashboard queries is one closeproxy
// exports: present in /metrics after traffic, or, for series that only
// some events create (cuts), described by the registry.
func TestDashboardMetricsAreExported(t *testing.T) {
	exprs, varMetrics := dashboardQueries(t)
	if len(exprs) < 10 {
		t.Fatalf("%d expressions in %s; the dashboard should have its panels", len(exprs), dashboardPath)
	}
	w := startWithTraffic(t, zaptest.NewLogger(t), WithWatcher(fakeWatcher(t)))
	for range 2 {
		w.session(t, "hello")
	}
	exported := map[string]bool{}
	for series := range scrape(t, w.base) {
		name, _, _ := strings.Cut(series, "{")
		exported[name] = true
	}
	described := describedNames(w.adm.reg)
	check := func(where, name string) {
		if exported[name] {
			return
		}
		family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !described[name] && !described[family] {
			t.Errorf("%s reads %s, which closeproxy does not export", where, name)
		}
	}
	for _, expr := range exprs {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("no metric found in %s", expr)
		}
		for _, name := range names {
			check(expr, name)
		}
	}
	for _, name := range varMetrics {
		check("a template variable", name)
	}
}

// describedNames are the metric names of every collector reg holds.
func describedNames(reg *prometheus.Registry) map[string]bool {
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	out := map[string]bool{}
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// fakeWatcher reads a fabricated kernel, so that every kernel series is
// there on any host; it holds one sample before the test scrapes.
func fakeWatcher(t *testing.T) *twwatch.Watcher {
	t.Helper()
	files := map[string]string{
		procnet.SockstatPath:     "TCP: inuse 1 orphan 0 tw 5 alloc 1 mem 1\n",
		procnet.MaxTWBucketsPath: "262144\n",
		procnet.NetstatPath:      "TcpExt: TCPTimeWaitOverflow\nTcpExt: 0\n",
	}
	w := twwatch.New(testConfig("127.0.0.1:8080", "127.0.0.1:80"), zaptest.NewLogger(t),
		twwatch.WithKernel(twwatchtest.Kernel(files, []sockdiag.Socket{sock(sockdiag.TimeWait, "127.0.0.1:8080", "127.0.0.1:40000")})))
	w.Refresh()
	return w
}
