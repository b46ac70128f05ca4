package logfile

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Lines written while the file is renamed and reopened all land whole,
// those before Reopen in the renamed file and those after in the new one.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "records.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const n = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Go(func() {
		<-start
		for range n {
			if _, err := f.Write([]byte("line\n")); err != nil {
				t.Error(err)
				return
			}
		}
	})
	if _, err := f.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	close(start)
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := f.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	old, cur := read(t, path+".1"), read(t, path)
	if !strings.HasPrefix(old, "before\n") || !strings.HasSuffix(cur, "after\n") {
		t.Errorf("rotated file %q, new file %q: want before in the first, after in the second", old, cur)
	}
	if got := strings.Count(old+cur, "line\n"); got != n || strings.Count(old+cur, "\n") != n+2 {
		t.Errorf("%d of %d lines whole across both files:\n%s\n--\n%s", got, n, old, cur)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpenNamesThePath(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "records.log"))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Open in a missing directory: %v, want an error naming the path", err)
	}
}
