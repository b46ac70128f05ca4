package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README and docs/ link only to files of the repository and to
// headings that exist, and name no document outside it and no issue.
func TestDocsLinksResolve(t *testing.T) {
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	anchors := map[string]map[string]bool{}
	text := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		f = filepath.Clean(f)
		text[f] = string(b)
		anchors[f] = map[string]bool{}
		for _, m := range heading.FindAllStringSubmatch(string(b), -1) {
			anchors[f][slug(m[1])] = true
		}
	}
	for f, s := range text {
		for _, name := range []string{"DESIGN.md", "STYLE.md"} {
			if strings.Contains(s, name) {
				t.Errorf("%s names %s, which is not in the repository", f, name)
			}
		}
		if m := issueRef.FindString(s); m != "" {
			t.Errorf("%s refers to %q: the documents are for users; history belongs in commit messages", f, m)
		}
		for _, m := range link.FindAllStringSubmatch(s, -1) {
			target := m[2]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			to := f
			if path != "" {
				to = filepath.Clean(filepath.Join(filepath.Dir(f), path))
				if _, err := os.Stat(to); err != nil {
					t.Errorf("%s links to %q: no such file in the repository", f, target)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(to, ".md") && !anchors[to][anchor] {
				t.Errorf("%s links to %q: %s has no such heading", f, target, to)
			}
		}
	}
}

var (
	heading  = regexp.MustCompile(`(?m)^#+ (.*)$`)
	link     = regexp.MustCompile(`\[([^\]]*)\]\(([^)\s]+)\)`)
	issueRef = regexp.MustCompile(`(?i)\b(issue|task)s? #?[0-9]+`)
)

// slug is a heading's anchor as GitHub makes it.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = regexp.MustCompile(`[^\w\- ]`).ReplaceAllString(h, "")
	return strings.ReplaceAll(h, " ", "-")
}

// Every test the documents cite as evidence (`pkg.TestName`) exists.
func TestDocsCiteTestsThatExist(t *testing.T) {
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	cited := map[string]string{} // "pkg.TestName" -> the document citing it
	for _, f := range append(files, "../README.md") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range testRef.FindAllStringSubmatch(string(b), -1) {
			cited[m[1]+"."+m[2]] = f
		}
	}
	if len(cited) == 0 {
		t.Fatal("no document cites a test: the pattern is wrong")
	}
	for ref, doc := range cited {
		pkg, name, _ := strings.Cut(ref, ".")
		dir := filepath.Join("..", pkg)
		if pkg == "main" {
			dir = filepath.Join("..", "cmd", "closeproxy")
		}
		tests, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		found := false
		for _, f := range tests {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "func "+name+"(") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s cites %s: no such test in %s", doc, ref, dir)
		}
	}
}

var testRef = regexp.MustCompile("`([a-z0-9]+)\\.((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]+)`")
