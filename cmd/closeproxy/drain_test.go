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
	// A mistyped hook says what is wrong, exits 2, and still writes the
	// done file: the container waiting on it must not wait out its bound.
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"-done-file", done, "extra"}, `unexpected argument "extra"`},
		{[]string{"-done-file", done, "-admin", "127.0.0.1"}, `-admin "127.0.0.1": want HOST:PORT`},
		{[]string{"-done-file", done, "-wait", "-timeout", "0s"}, "-timeout 0s: want more than 0"},
		{[]string{"-done-file", done, "-delay", "-1s"}, "-delay -1s: want 0 or more"},
	} {
		os.Remove(done)
		errOut.Reset()
		if code := run(append([]string{"drain"}, c.args...), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), c.says) {
			t.Errorf("drain %q: exit %d, %q; want 2 and %q", c.args, code, errOut.String(), c.says)
		}
		if b, err := os.ReadFile(done); err != nil || string(b) != "2\n" {
			t.Errorf("drain %q: done file %q, %v; want it written with 2", c.args, b, err)
		}
	}
}
