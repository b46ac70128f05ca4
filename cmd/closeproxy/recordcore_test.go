package main

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time                         { return c.t }
func (c fixedClock) NewTicker(d time.Duration) *time.Ticker { return time.NewTicker(d) }

func testRecord() *engine.Teardown {
	return &engine.Teardown{ID: 7, Listener: "web", Backend: "app", ProxyProtocol: "v2",
		Client: netip.MustParseAddrPort("192.0.2.1:51000"), LB: netip.MustParseAddrPort("[2001:db8::9]:443"),
		Front: engine.LegRecord{FirstFIN: policy.SideClient, Close: policy.CloseFIN, TimeWait: policy.SideClient,
			Wanted: "proxy", BytesIn: 83, BytesOut: 4096, FINIn: 1500 * time.Microsecond, FINOut: 2 * time.Millisecond, RSTOut: -1,
			Local: netip.MustParseAddrPort("10.0.0.1:8080"), Peer: netip.MustParseAddrPort("192.0.2.1:51000")},
		Back: engine.LegRecord{FirstFIN: policy.SideBackend, Close: policy.CloseReset, TimeWait: policy.SideNone,
			Wanted: "backend", Reason: policy.ReasonGraceExpired, FINIn: -1, FINOut: -1, RSTOut: 3 * time.Millisecond},
		BackConnect: 41 * time.Microsecond, BackServer: "10.0.0.2:80", BackTries: 1,
		Duration: 3*time.Millisecond + 7*time.Microsecond, Outcome: engine.OutcomeOK, Err: errors.New("a \"quoted\"\nerror")}
}

// The records logger writes the lines the log's own encoder writes, byte
// for byte: records by AppendJSON (their message escaped as the encoder
// escapes it), anything else (another message, context fields) through
// the encoder. A record takes the fast path: fewer allocations than the
// encoder's.
func TestRecordCoreWritesWhatTheEncoderWrites(t *testing.T) {
	at := zap.WithClock(fixedClock{time.Date(2026, 12, 4, 6, 30, 1, 234567891, time.FixedZone("", 3600))})
	var fast, plain bytes.Buffer
	fl := newRecordLogger(zapcore.AddSync(&fast)).WithOptions(at)
	pl := newLogger(zapcore.DebugLevel, zapcore.AddSync(&plain)).WithOptions(at)
	td := testRecord()
	for _, l := range []*zap.Logger{fl, pl} {
		l.Info("teardown", td.Fields()...)
		l.Warn("teardown", td.Fields()...)
		l.Info("not a record", zap.Int("n", 1))
		l.Info("msg \"quoted\"", td.Fields()...)
		l.With(zap.String("k", "v")).Info("teardown", td.Fields()...)
		l.Info("teardown", (&engine.Teardown{}).Fields()...)
	}
	if !bytes.Equal(fast.Bytes(), plain.Bytes()) {
		t.Fatalf("records logger:\n%s\nencoder:\n%s", fast.Bytes(), plain.Bytes())
	}
	fast.Reset()
	plain.Reset()
	af := testing.AllocsPerRun(100, func() { fl.Info("teardown", td.Fields()...) })
	ap := testing.AllocsPerRun(100, func() { pl.Info("teardown", td.Fields()...) })
	if af >= ap {
		t.Errorf("a record cost %v allocations through the records logger, %v through the encoder: the fast path was not taken", af, ap)
	}
}

// BenchmarkRecordLine is one record's line through the records logger
// (AppendJSON) and through the encoder it replaces, to io.Discard.
func BenchmarkRecordLine(b *testing.B) {
	td := testRecord()
	for name, l := range map[string]*zap.Logger{
		"records_logger": newRecordLogger(zapcore.AddSync(discard{})),
		"encoder":        newLogger(zapcore.DebugLevel, zapcore.AddSync(discard{})),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Info("teardown", td.Fields()...)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
