package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// A large response body whose splice pipe cannot be made (the process out
// of descriptors: pipe2 fails with EMFILE) goes to the client whole
// through the proxy's own buffer, recorded ok, on both relays: it was
// cut after its first 16 KiB on the loops and recorded as the backend's
// reset, which counted toward ejecting a healthy server. The test takes
// every free descriptor number of its own process (RLIMIT_NOFILE lowered
// to what is open) between a first exchange and the second, so that the
// session reuses its backend connection and needs nothing but the pipe.
func TestHTTP1LargeBodyWithoutAPipe(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	be := answerEach(t, func(path string) []byte {
		if path == "/big" {
			return big
		}
		return []byte("small")
	}, nil)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	c := dialClient(t, h.addr, false)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
	if status, b, _ := readBody(t, br); status != 200 || string(b) != "small" {
		t.Fatalf("first exchange: %d %q", status, b)
	}
	release := takeEveryDescriptor(t)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		release()
		t.Fatalf("second response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	release()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the large body without a pipe: %d of %d bytes (%v), equal %v; want it whole", len(got), len(big), err, bytes.Equal(got, big))
	}
	c.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK {
		t.Errorf("record: outcome %s (%v), want ok", td.Outcome, td.Err)
	}
}

// takeEveryDescriptor lowers the process's RLIMIT_NOFILE to the
// descriptors it has open and fills every free number below it, so that
// the next descriptor the process asks for fails with EMFILE; release
// gives them back and restores the limit.
func takeEveryDescriptor(t *testing.T) (release func()) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(entries)) + 8 // a few numbers free to fill below
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var held []int
	release = func() {
		for _, fd := range held {
			unix.Close(fd)
		}
		held = nil
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Error(err)
		}
	}
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EMFILE {
			break
		}
		if err != nil || len(held) > 1<<12 {
			release()
			t.Fatalf("filling the descriptor table: %v after %d", err, len(held))
		}
		held = append(held, fd)
	}
	if len(held) == 0 {
		release()
		t.Fatal("no free descriptor number to take below the lowered limit")
	}
	return release
}
