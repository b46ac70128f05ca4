// Package demo runs closeproxy's built-in demonstration on loopback, without
// root: an embedded HTTP backend, the real proxy on the embedded default
// settings (only the addresses and the close targets change), and bounded
// bursts of short-connection clients for several front/back policies and
// three closing orders: the server first, the client first, and both at
// once (FINs racing). It then matches every teardown record's TIME-WAIT
// claims to the kernel's TIME-WAIT sockets by exact 4-tuple (sock_diag,
// Linux only), so TIME-WAIT left by an earlier run or another process
// counts for nothing, prints per holder what the kernel holds beside what
// the records claim, and fails on any leg whose claim the kernel
// contradicts. It owns this one job so that cmd/closeproxy only wires.
//
// Usage:
//
//	err := demo.Run(ctx, os.Stdout, demo.Options{})
package demo
