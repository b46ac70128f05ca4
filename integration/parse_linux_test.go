package integration

import (
	"net/netip"
	"testing"
)

// The harness's parsers, checked on captured output without namespaces.

func TestHarnessParseSS(t *testing.T) {
	cases := []struct {
		name, line, state string
		want              Socket
	}{
		{"single state leaves the column out", "0      0      10.231.1.1:40312 10.231.2.1:80", "time-wait",
			Socket{"TIME-WAIT", netip.MustParseAddrPort("10.231.1.1:40312"), netip.MustParseAddrPort("10.231.2.1:80")}},
		{"state all keeps it", "FIN-WAIT-2 0 0 10.231.1.1:40312 10.231.2.1:80", "all",
			Socket{"FIN-WAIT-2", netip.MustParseAddrPort("10.231.1.1:40312"), netip.MustParseAddrPort("10.231.2.1:80")}},
		{"IPv6", "ESTAB 0 0 [::1]:8080 [::1]:51000", "all",
			Socket{"ESTAB", netip.MustParseAddrPort("[::1]:8080"), netip.MustParseAddrPort("[::1]:51000")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseSSLine(tc.line, tc.state)
			if !ok || got != tc.want {
				t.Errorf("parseSSLine(%q) = %+v, %v; want %+v", tc.line, got, ok, tc.want)
			}
		})
	}
	if _, ok := parseSSLine("garbage", "all"); ok {
		t.Error("parseSSLine accepted garbage")
	}
}

func TestHarnessParseListening(t *testing.T) {
	addr := netip.MustParseAddrPort("10.231.2.1:80")
	for line, want := range map[string]bool{
		"LISTEN 0 4096 10.231.2.1:80 0.0.0.0:*":  true,
		"LISTEN 0 4096 0.0.0.0:80 0.0.0.0:*":     true,
		"LISTEN 0 4096 *:80 *:*":                 true,
		"LISTEN 0 4096 10.231.2.9:80 0.0.0.0:*":  false,
		"LISTEN 0 4096 10.231.2.1:800 0.0.0.0:*": false,
		"":                                       false,
	} {
		if got := listensOn(line, addr); got != want {
			t.Errorf("listensOn(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestHarnessRecordLog(t *testing.T) {
	l := newRecordLog()
	_, changed := l.teardowns()
	for _, chunk := range []string{
		`{"level":"info","msg":"listening"}` + "\n" + `{"level":"info","msg":"teard`,
		`own","front.time_wait":"proxy","back.bytes_in":42}` + "\n",
		"config: listener[0].listen: missing\n",
		`{"msg":"teardown","outcome":"ok"}` + "\n" + `{"msg":"tear`,
	} {
		if _, err := l.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-changed:
	default:
		t.Fatal("no signal after a teardown record")
	}
	recs, _ := l.teardowns()
	if len(recs) != 2 || len(l.lines(false)) != 3 {
		t.Fatalf("got %d records of %d JSON lines, want 2 of 3: %v", len(recs), len(l.lines(false)), recs)
	}
	if recs[0].Str("front.time_wait") != "proxy" || recs[0].Num("back.bytes_in") != 42 || recs[1].Str("outcome") != "ok" {
		t.Errorf("records: %v", recs)
	}
}
