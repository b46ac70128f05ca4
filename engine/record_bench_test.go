package engine

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/policy"
)

// benchTeardown is the record of an ordinary short session: the backend
// closed first, the proxy's FIN went second on the front leg.
func benchTeardown() *Teardown {
	r := NewRecorder(42, "web", "app", policy.TargetProxy, policy.TargetPeer)
	r.Accepted(netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("10.1.2.3:51234"), netip.AddrPort{})
	r.Intake("none", netip.AddrPort{})
	r.Trying("10.0.0.2:80")
	r.Connecting(120 * time.Microsecond)
	r.Connected(true, false, netip.MustParseAddrPort("10.0.0.1:40312"), netip.MustParseAddrPort("10.0.0.2:80"))
	r.Relayed(true, 78)
	r.Relayed(false, 4096)
	r.finIn(policy.Back)
	r.decided(policy.Back, policy.Decision{Target: policy.TargetPeer})
	r.firstFIN(policy.Back, policy.SideBackend)
	r.finOut(policy.Back)
	r.closed(policy.Back, policy.CloseFIN)
	r.decided(policy.Front, policy.Decision{Target: policy.TargetProxy})
	r.finOut(policy.Front)
	r.finIn(policy.Front)
	r.firstFIN(policy.Front, policy.SideProxy)
	r.closed(policy.Front, policy.CloseFIN)
	return r.Done()
}

// BenchmarkTeardownRecord encodes one record: through zap's JSON encoder
// (encode, and log: a line through a zap logger to io.Discard) and with
// AppendJSON, which cmd/closeproxy's records logger writes with.
//
//	taskset -c 0 go test -run '^$' -bench TeardownRecord ./engine
func BenchmarkTeardownRecord(b *testing.B) {
	td := benchTeardown()
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	b.Run("encode", func(b *testing.B) {
		je := zapcore.NewJSONEncoder(enc)
		ent := zapcore.Entry{Level: zapcore.InfoLevel, Time: time.Now(), Message: "teardown"}
		b.ReportAllocs()
		for b.Loop() {
			buf, err := je.EncodeEntry(ent, td.Fields())
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(buf.Len()))
			buf.Free()
		}
	})
	b.Run("append_json", func(b *testing.B) { // what cmd/closeproxy's records logger writes with
		buf := make([]byte, 0, 2048)
		b.ReportAllocs()
		for b.Loop() {
			buf = td.AppendJSON(buf[:0])
			b.SetBytes(int64(len(buf)))
		}
	})
	b.Run("log", func(b *testing.B) {
		log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.DebugLevel))
		b.ReportAllocs()
		for b.Loop() {
			log.Info("teardown", td.Fields()...)
		}
	})
}
