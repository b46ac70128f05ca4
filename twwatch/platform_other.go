//go:build !linux

package twwatch

// kernelFigures says that this system has the figures a Watcher samples:
// sock_diag and /proc/net are Linux's, so reading them fails as expected.
const kernelFigures = false
