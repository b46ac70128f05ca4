package pool

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkGetWarm takes an idle connection (liveness check included) and
// puts it back.
func BenchmarkGetWarm(b *testing.B) {
	be := newBackend(b, false)
	p := New(Config{Address: be.addr, ConnectTimeout: 2 * time.Second, MaxIdleAge: time.Minute}, new(counter).dial, zap.NewNop())
	ctx := context.Background()
	p.Put(get(b, p))
	b.ReportAllocs()
	for b.Loop() {
		c, err := p.Get(ctx)
		if err != nil || !c.Pooled {
			b.Fatalf("Get: %v (pooled %v)", err, c != nil && c.Pooled)
		}
		p.Put(c)
	}
}

// BenchmarkGetFresh dials a new connection for every Get, then resets it.
func BenchmarkGetFresh(b *testing.B) {
	be := newBackend(b, true)
	p := New(Config{Address: be.addr, ConnectTimeout: 2 * time.Second}, new(counter).dial, zap.NewNop())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, err := p.Get(ctx)
		if err != nil {
			b.Fatal(err)
		}
		drop(p, c)
	}
}
