package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binaries are built once per test binary, into one directory that
// TestMain removes at the end.
var builds struct {
	mu   sync.Mutex
	dir  string
	bins map[string]buildResult // by package path
}

type buildResult struct {
	path string
	err  string
}

// buildBinary builds the main package pkg (a path relative to the module
// root, e.g. "./cmd/closeproxy") once per test binary and returns the
// executable's path. A failed build fails every test that asks for it.
func buildBinary(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if r, ok := builds.bins[pkg]; ok {
		if r.err != "" {
			t.Fatal(r.err)
		}
		return r.path
	}
	r := build(pkg)
	if builds.bins == nil {
		builds.bins = map[string]buildResult{}
	}
	builds.bins[pkg] = r
	if r.err != "" {
		t.Fatal(r.err)
	}
	return r.path
}

// build runs `go build` for pkg from the module root; builds.mu is held.
func build(pkg string) buildResult {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		return buildResult{err: err.Error()}
	}
	if builds.dir == "" {
		if builds.dir, err = os.MkdirTemp("", "closeproxy-integration-"); err != nil {
			return buildResult{err: "build dir: " + err.Error()}
		}
	}
	out := filepath.Join(builds.dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return buildResult{err: "go build " + pkg + ": " + err.Error() + "\n" + string(msg)}
	}
	return buildResult{path: out}
}

// moduleRoot is the directory of the go.mod governing this package.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: the tests do not run inside the closeproxy module")
	}
	return filepath.Dir(gomod), nil
}

// removeBuildDir deletes the built binaries; TestMain calls it last.
func removeBuildDir() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
}
