package admin

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every metric the package exports is in docs/metrics.md, which says it
// lists them all, and in the package comment: operators build dashboards
// and alerts from that table.
func TestEveryMetricIsDocumented(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricName.FindAllStringSubmatch(string(src), -1) {
			seen++
			if !strings.Contains(string(docs), "`"+m[1]+"`") {
				t.Errorf("%s (%s) is not in docs/metrics.md", m[1], f)
			}
			if !strings.Contains(string(pkg), "\t"+m[1]) {
				t.Errorf("%s (%s) is not in the package comment's list", m[1], f)
			}
		}
	}
	if seen < 20 {
		t.Fatalf("found %d metric names in the sources: the pattern no longer finds them", seen)
	}
}

var metricName = regexp.MustCompile(`"(closeproxy_[a-z0-9_]+)"`)
