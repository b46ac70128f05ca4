package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The admin listener (/metrics, /healthz, /readyz) listens inside the
// proxy namespace, on loopback by default, so the test process asks it from
// a socket it opens inside that namespace (see netnsconn_linux_test.go).
//
// Each request goes on its own connection, which the test ends with an RST
// (SO_LINGER 0) once the response is read: whoever sent the first FIN would
// keep a TIME-WAIT socket in the proxy namespace, and the tests compare
// that namespace's TIME-WAIT count with closeproxy's own figures.

// adminGet sends GET path to the admin listener at addr inside namespace ns
// and returns the status and body. It returns errors rather than failing,
// so that callers can poll.
func adminGet(t testing.TB, ns, addr, path string) (int, string, error) {
	t.Helper()
	c, err := dialFrom(t, ns, addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	defer c.SetLinger(0)
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return 0, "", err
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: body: %w", path, err)
	}
	return resp.StatusCode, string(body), nil
}

// Metric is one sample of the Prometheus text format.
type Metric struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is a parsed /metrics page.
type Metrics []Metric

// scrape fetches and parses /metrics from the admin listener at addr in ns.
func scrape(t testing.TB, ns, addr string) Metrics {
	t.Helper()
	status, body, err := adminGet(t, ns, addr, "/metrics")
	if err != nil {
		t.Fatalf("scrape %s in %s: %v", addr, ns, err)
	}
	if status != http.StatusOK {
		t.Fatalf("scrape %s in %s: status %d: %s", addr, ns, status, body)
	}
	m, err := parseMetrics(body)
	if err != nil {
		t.Fatalf("scrape %s in %s: %v", addr, ns, err)
	}
	return m
}

// parseMetrics reads the Prometheus text format as client_golang writes
// it: `name{k="v",…} value` or `name value`, comments skipped. Label
// values with escapes are not expected here and are refused.
func parseMetrics(text string) (Metrics, error) {
	var ms Metrics
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := Metric{Labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i || strings.Contains(line[i:j], `\`) {
				return nil, fmt.Errorf("metrics line %q: labels unparsed", line)
			}
			m.Name, rest = line[:i], strings.TrimSpace(line[j+1:])
			for _, kv := range strings.Split(line[i+1:j], `",`) {
				if kv == "" {
					continue
				}
				k, v, ok := strings.Cut(kv, `="`)
				if !ok {
					return nil, fmt.Errorf("metrics line %q: label %q", line, kv)
				}
				m.Labels[k] = strings.TrimSuffix(v, `"`)
			}
		} else {
			var ok bool
			m.Name, rest, ok = strings.Cut(line, " ")
			if !ok {
				return nil, fmt.Errorf("metrics line %q: no value", line)
			}
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m.Value = v
		ms = append(ms, m)
	}
	return ms, nil
}

// Get returns the value of the sample of name whose labels include the
// given key, value pairs, and whether there is exactly one.
func (ms Metrics) Get(name string, kv ...string) (float64, bool) {
	var v float64
	n := 0
	for _, m := range ms {
		if m.Name == name && m.has(kv) {
			v, n = m.Value, n+1
		}
	}
	return v, n == 1
}

func (m Metric) has(kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if m.Labels[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// By returns the non-zero samples of name keyed by the values of labels
// joined with "/" (e.g. By("…first_fin_total", "leg", "side") gives
// "front/client": 150).
func (ms Metrics) By(name string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		if m.Name != name || m.Value == 0 {
			continue
		}
		vals := make([]string, len(labels))
		for i, l := range labels {
			vals[i] = m.Labels[l]
		}
		out[strings.Join(vals, "/")] += m.Value
	}
	return out
}

// countBy counts records by the values of keys joined with "/", the shape
// of Metrics.By.
func countBy(recs []Record, keys ...string) map[string]float64 {
	out := map[string]float64{}
	for _, r := range recs {
		vals := make([]string, len(keys))
		for i, k := range keys {
			vals[i] = r.Str(k)
		}
		out[strings.Join(vals, "/")]++
	}
	return out
}

// legCounts counts records by leg and the value of the leg's field (e.g.
// "first_fin"): "front/client", "back/backend", … — the shape of
// Metrics.By(name, "leg", label).
func legCounts(recs []Record, field string) map[string]float64 {
	out := map[string]float64{}
	for _, leg := range []string{"front", "back"} {
		for k, n := range countBy(recs, leg+"."+field) {
			out[leg+"/"+k] += n
		}
	}
	return out
}

// sameCounts reports whether two count maps hold the same non-zero entries.
func sameCounts(a, b map[string]float64) bool {
	n := 0
	for k, v := range a {
		if v == 0 {
			continue
		}
		if b[k] != v {
			return false
		}
		n++
	}
	for _, v := range b {
		if v != 0 {
			n--
		}
	}
	return n == 0
}

// fmtCounts renders a count map sorted by key, for messages.
func fmtCounts(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%g ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}
