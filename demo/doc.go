// Package demo runs closeproxy's built-in demonstration on loopback, without
// root: an embedded HTTP backend, the real proxy on the embedded default
// settings (only the addresses and the close targets change), and bounded
// bursts of short-connection clients for several front/back policies. It
// then counts TIME-WAIT in the kernel by port (sock_diag) and prints it
// beside what the teardown records claim. It owns this one job so that
// cmd/closeproxy only wires.
//
// Usage:
//
//	err := demo.Run(ctx, os.Stdout, demo.Options{})
package demo
