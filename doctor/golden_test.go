package doctor

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/closeproxy/closeproxy/sockdiag"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// The reports are built from fabricated hosts, so the golden files hold
// whatever machine runs the tests.
func TestGolden(t *testing.T) {
	busyConfig, err := os.ReadFile("testdata/busy.toml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts Options
	}{
		{"busy", Options{Config: mustParse(t, string(busyConfig)), ConfigPath: "testdata/busy.toml", Rate: 50, src: busyHost().source()}},
		{"quiet", Options{src: quietHost().source()}},
		{"overflowed_once", Options{src: overflowedOnceHost().source()}},
		{"not_linux", Options{src: fakeHost{goos: "darwin", sockErr: errors.New("sockdiag: listing sockets needs Linux sock_diag")}.source()}},
		{"no_privileges", Options{src: deniedHost().source()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Collect(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var text, js bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".txt.golden", text.Bytes())
			golden(t, tc.name+".json.golden", js.Bytes())
		})
	}
}

// quietHost is a stock Linux host with no TIME-WAIT at all.
func quietHost() fakeHost {
	h := busyHost()
	h.socks = nil
	h.noFile = [2]uint64{1 << 20, 1 << 20}
	for path, v := range map[string]string{
		"ip_local_port_range": "32768 60999", "ip_local_reserved_ports": "", "tcp_max_tw_buckets": "262144",
		"tcp_fin_timeout": "60",
	} {
		h.files[procIPv4+path] = v
	}
	h.files["/proc/sys/net/core/somaxconn"] = "4096"
	h.files[pathNetstat] = "TcpExt: TW TCPTimeWaitOverflow\nTcpExt: 0 0\n"
	return h
}

// overflowedOnceHost is a quiet host whose TIME-WAIT table overflowed at
// some time since boot: 10 TIME-WAIT sockets now, 348,102 destroyed once.
func overflowedOnceHost() fakeHost {
	h := quietHost()
	for i := range 10 {
		h.socks = append(h.socks, sock(sockdiag.TimeWait, fmt.Sprintf("10.0.0.1:%d", 40000+i), "10.0.0.2:8081"))
	}
	h.files[pathNetstat] = "TcpExt: TW TCPTimeWaitOverflow\nTcpExt: 0 348102\n"
	return h
}

// deniedHost is a hardened host where /proc/net/netstat and sock_diag
// refuse an unprivileged reader.
func deniedHost() fakeHost {
	h := quietHost()
	h.denied = map[string]bool{pathNetstat: true}
	h.sockErr = &os.SyscallError{Syscall: "socket NETLINK_SOCK_DIAG", Err: fs.ErrPermission}
	return h
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./doctor -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (go test ./doctor -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
