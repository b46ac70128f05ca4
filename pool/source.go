package pool

import (
	"context"
	"net/netip"
)

type sourceKey struct{}

// WithSource returns ctx carrying the address a dial for it must come from
// (transparent mode: the client's). Get with such a context never hands
// out an idle connection, which came from another address or none; it
// dials, and the DialFunc reads the address back with Source.
func WithSource(ctx context.Context, a netip.Addr) context.Context {
	return context.WithValue(ctx, sourceKey{}, a)
}

// Source returns the address WithSource put in ctx, if any.
func Source(ctx context.Context) (netip.Addr, bool) {
	a, ok := ctx.Value(sourceKey{}).(netip.Addr)
	return a, ok && a.IsValid()
}
