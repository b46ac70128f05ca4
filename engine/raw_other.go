//go:build !linux

package engine

import (
	"errors"
	"net"
)

// CloseFD closes a bare socket descriptor; there are none on this system.
func CloseFD(int) error { return errors.ErrUnsupported }

// RawWriter writes to a TCP connection; on this system through the
// connection itself (raw system calls are Linux's).
type RawWriter struct{ c *net.TCPConn }

// NewRawWriter returns a RawWriter for c.
func NewRawWriter(c *net.TCPConn) (*RawWriter, error) { return &RawWriter{c: c}, nil }

// Write writes p whole, or returns why not.
func (w *RawWriter) Write(p []byte) (int, error) { return w.c.Write(p) }

// Ask writes p whole; the reply is read as any other.
func (w *RawWriter) Ask(p []byte) (int, error) { return w.c.Write(p) }

// Writev writes a then b whole, or returns why not.
func (w *RawWriter) Writev(a, b []byte) (int, error) {
	bufs := net.Buffers{a, b}
	n, err := bufs.WriteTo(w.c)
	return int(n), err
}

// RawReader reads a TCP connection; on this system through the
// connection itself.
type RawReader struct{ c *net.TCPConn }

// NewRawReader returns a RawReader for c.
func NewRawReader(c *net.TCPConn) (*RawReader, error) { return &RawReader{c: c}, nil }

// Read reads what is there, up to len(p), once something is.
func (r *RawReader) Read(p []byte) (int, error) { return r.c.Read(p) }
