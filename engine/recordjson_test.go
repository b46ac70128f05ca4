package engine

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/policy"
)

// zapFields renders td's fields as zap's JSON encoder does, without the
// entry's own keys: "{...}\n".
func zapFields(t *testing.T, td *Teardown) []byte {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{})
	buf, err := enc.EncodeEntry(zapcore.Entry{}, td.Fields())
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Free()
	return bytes.Clone(buf.Bytes())
}

func appendJSONLine(td *Teardown) []byte {
	return append(td.AppendJSON([]byte{'{'}), "}\n"...)
}

// AppendJSON writes what zap's encoder writes for MarshalLogObject, byte
// for byte: ordinary records, empty ones, strings that need escaping
// (quotes, control bytes, invalid UTF-8), IPv6 zones, and random bytes
// in every string field. A key added to one rendering and not the other
// fails here.
func TestAppendJSONMatchesZap(t *testing.T) {
	odd := "q\"b\\s/\n\r\t\x00\x1f\x7f é 😀 \xff\xfe end"
	zoned := netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("eth\"0\x01"), 80)
	cases := map[string]*Teardown{
		"short session": benchTeardown(),
		"nothing yet":   NewRecorder(0, "", "", policy.TargetProxy, policy.TargetPeer).Done(),
		"odd strings": func() *Teardown {
			td := benchTeardown()
			td.Listener, td.Backend, td.BackServer, td.ProxyProtocol = odd, odd, odd, odd
			td.Front.AutoReason, td.Back.Wanted = odd, odd
			td.Err = errors.New(odd)
			td.Client, td.LB = zoned, netip.MustParseAddrPort("[2001:db8::1]:443")
			td.OriginalDst = netip.AddrPortFrom(netip.MustParseAddr("fe80::2").WithZone("lo"), 8)
			td.Front.BytesIn, td.Back.BytesOut = -1, 1<<62
			td.Duration, td.BackConnect = 90*time.Hour+time.Nanosecond, -1
			return td
		}(),
	}
	for name, td := range cases {
		if got, want := appendJSONLine(td), zapFields(t, td); !bytes.Equal(got, want) {
			t.Errorf("%s:\nAppendJSON %s\nzap        %s", name, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return string(b)
	}
	for i := range 2000 {
		td := benchTeardown()
		td.Listener, td.Backend, td.BackServer, td.Outcome = str(), str(), str(), Outcome(str())
		td.Front.Wanted, td.Back.AutoReason, td.Front.Reason = str(), str(), policy.Reason(str())
		td.Err = errors.New(str())
		td.Front.FINIn = time.Duration(rng.Int64N(1 << 40))
		if got, want := appendJSONLine(td), zapFields(t, td); !bytes.Equal(got, want) {
			t.Fatalf("random record %d:\nAppendJSON %q\nzap        %q", i, got, want)
		}
	}
}

// appendMillis writes what zap writes for millis(d), strconv's shortest
// decimal, for durations around every power of ten and at random up to
// 2^43 µs and past it.
func TestAppendMillisMatchesFloat(t *testing.T) {
	check := func(d time.Duration) {
		got := string(appendMillis(nil, "", d))
		want := strconv.FormatFloat(millis(d), 'f', -1, 64)
		if got != want {
			t.Fatalf("%d ns: %s, want %s", int64(d), got, want)
		}
	}
	for p := time.Duration(1); p < 1<<62/10; p *= 10 {
		for _, d := range []time.Duration{p - 1, p, p + 1, p + 999, 3*p + 7} {
			check(d)
		}
	}
	check(-1)
	check(0)
	check(1<<43*time.Microsecond - 1)
	check(1 << 43 * time.Microsecond)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		check(time.Duration(rng.Int64N(1 << uint(rng.IntN(62)+1))))
	}
}
