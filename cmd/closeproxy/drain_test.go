package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// drain posts /drain, with wait=TIMEOUT under -wait; its exit code follows
// the answer, and -done-file is written whatever the answer.
func TestDrainSubcommand(t *testing.T) {
	var got []string
	status := http.StatusAccepted
	adm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		w.WriteHeader(status)
	}))
	defer adm.Close()
	host := strings.TrimPrefix(adm.URL, "http://")
	done := filepath.Join(t.TempDir(), "drained")

	var out, errOut bytes.Buffer
	if code := run([]string{"drain", "-admin", host}, &out, &errOut); code != 0 {
		t.Errorf("drain: exit %d %s", code, errOut.String())
	}
	status = http.StatusOK
	if code := run([]string{"drain", "-admin", host, "-wait", "-timeout", "45s", "-done-file", done}, &out, &errOut); code != 0 {
		t.Errorf("drain -wait: exit %d %s", code, errOut.String())
	}
	if _, err := os.Stat(done); err != nil {
		t.Errorf("done file: %v", err)
	}
	want := []string{"POST /drain", "POST /drain?wait=45s"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests %q, want %q", got, want)
	}

	status = http.StatusServiceUnavailable // the wait ran out
	os.Remove(done)
	if code := run([]string{"drain", "-admin", host, "-wait", "-done-file", done}, &out, &errOut); code != 1 {
		t.Errorf("drain -wait with sessions left: exit %d, want 1", code)
	}
	if _, err := os.Stat(done); err != nil {
		t.Errorf("done file after a drain that gave up: %v", err)
	}
	if code := run([]string{"drain", "extra"}, &out, &errOut); code != 2 {
		t.Errorf("drain with an argument: exit %d, want 2", code)
	}
}
