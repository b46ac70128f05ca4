package twwatch

// kernelFigures says that this system has the figures a Watcher samples:
// sock_diag and /proc/net. Elsewhere failing to read them is expected.
const kernelFigures = true
