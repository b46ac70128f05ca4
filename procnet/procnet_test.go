package procnet

import (
	"os"
	"runtime"
	"testing"
)

func TestSockstatTW(t *testing.T) {
	in := "sockets: used 11\nTCP: inuse 1 orphan 0 tw 57 alloc 4 mem 269\nUDP: inuse 0 mem 0\n"
	if n, err := SockstatTW([]byte(in)); err != nil || n != 57 {
		t.Fatalf("got %d, %v; want 57", n, err)
	}
	if _, err := SockstatTW([]byte("sockets: used 1\n")); err == nil {
		t.Fatal("no TCP line: want an error")
	}
}

func TestNetstatField(t *testing.T) {
	in := "TcpExt: SyncookiesSent TCPTimeWaitOverflow TWRecycled\n" +
		"TcpExt: 0 42 3\n" +
		"IpExt: InNoRoutes TCPTimeWaitOverflow\n" +
		"IpExt: 9 9\n"
	if n, err := NetstatField([]byte(in), "TcpExt", "TCPTimeWaitOverflow"); err != nil || n != 42 {
		t.Fatalf("got %d, %v; want 42", n, err)
	}
	if _, err := NetstatField([]byte(in), "TcpExt", "Missing"); err == nil {
		t.Fatal("missing key: want an error")
	}
	if _, err := NetstatField([]byte("TcpExt: TW\nTcpExt: 5\n"), "TcpExt", "TCPTimeWaitOverflow"); err == nil {
		t.Fatal("a group without the key: want an error")
	}
}

func TestPortRange(t *testing.T) {
	if lo, hi, err := PortRange([]byte("32768\t60999\n")); err != nil || lo != 32768 || hi != 60999 {
		t.Errorf("got %d %d, %v; want 32768 60999", lo, hi, err)
	}
	for _, bad := range []string{"32768", "a b", "2000 1000", ""} {
		if _, _, err := PortRange([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

// On Linux the files are there and parse.
func TestReadHere(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the figures live in Linux's /proc")
	}
	if n, err := ReadTimeWait(); err != nil || n < 0 {
		t.Errorf("ReadTimeWait: %d, %v", n, err)
	}
	if n, err := ReadTimeWaitOf(os.Getpid()); err != nil || n < 0 {
		t.Errorf("ReadTimeWaitOf(self): %d, %v", n, err)
	}
	if _, err := ReadTimeWaitOf(0); err == nil {
		t.Error("ReadTimeWaitOf(0): want an error, there is no process 0 in /proc")
	}
	if n, err := ReadMaxTWBuckets(); err != nil || n <= 0 {
		t.Errorf("ReadMaxTWBuckets: %d, %v", n, err)
	}
	if n, err := ReadTimeWaitOverflow(); err != nil || n < 0 {
		t.Errorf("ReadTimeWaitOverflow: %d, %v", n, err)
	}
	if m := MarkTimeWaitOverflow(); !m.ok || m.Destroyed() < 0 {
		t.Errorf("MarkTimeWaitOverflow: %+v, destroyed since %d", m, m.Destroyed())
	}
	m := MarkTimeWaitOverflow()
	m.at -= 3 // as if 3 were destroyed since
	for missing, want := range map[int]bool{0: false, 3: true, 1 << 40: false} {
		if _, ok := m.Covers(missing); ok != want {
			t.Errorf("Covers(%d) after 3 destroyed: %v, want %v", missing, ok, want)
		}
	}
	if _, ok := (OverflowMark{}).Covers(1); ok {
		t.Error("an unread mark covers a missing socket, want it to cover nothing")
	}
	if n, err := ReadPortRange(); err != nil || n <= 0 {
		t.Errorf("ReadPortRange: %d, %v", n, err)
	}
}

func TestReservedInRange(t *testing.T) {
	cases := []struct {
		list   string
		lo, hi int
		want   int
	}{
		{"", 32768, 60999, 0},
		{"8080", 32768, 60999, 0},
		{"40000", 32768, 60999, 1},
		{"30000-33000,40000-40009,61000", 32768, 60999, 233 + 10},
		{"60990-61010", 32768, 60999, 10},
	}
	for _, tc := range cases {
		got, err := ReservedInRange(tc.list, tc.lo, tc.hi)
		if err != nil || got != tc.want {
			t.Errorf("ReservedInRange(%q): %d, %v; want %d", tc.list, got, err, tc.want)
		}
	}
	if _, err := ReservedInRange("80-x", 1, 2); err == nil {
		t.Error("ReservedInRange(\"80-x\"): no error")
	}
}
