package admin

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// BenchmarkSessionMetrics is what the metrics cost one short session:
// its accept, its backend dial and its record's counts, on two
// goroutines at once as two relay loops end sessions.
func BenchmarkSessionMetrics(b *testing.B) {
	a := New(testConfig("127.0.0.1:0", "127.0.0.1:1"), zap.NewNop())
	td := &engine.Teardown{Listener: "web", Backend: "app", BackServer: "127.0.0.1:1", ProxyProtocol: "none",
		Outcome: engine.OutcomeOK, Duration: 3 * time.Millisecond,
		Front: engine.LegRecord{FirstFIN: policy.SideProxy, Close: policy.CloseFIN, TimeWait: policy.SideProxy, BytesIn: 83, BytesOut: 183},
		Back:  engine.LegRecord{FirstFIN: policy.SideBackend, Close: policy.CloseFIN, TimeWait: policy.SideBackend, BytesIn: 183, BytesOut: 83}}
	b.ReportAllocs()
	b.SetParallelism(1)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Accepted("web")
			a.Dialed("app", time.Millisecond, nil)
			a.Ended(td)
		}
	})
}
