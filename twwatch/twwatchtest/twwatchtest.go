// Package twwatchtest fabricates hosts for a twwatch.Watcher, as httptest
// does servers: tests of every package that reads the shared watcher
// (admin's gauges, proxy's auto) use the same fake.
package twwatchtest

import (
	"io/fs"

	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
)

// Kernel is a host whose kernel files are files (by path; any other path
// does not exist) and whose sockets are socks, whatever the filter.
func Kernel(files map[string]string, socks []sockdiag.Socket) twwatch.Kernel {
	return twwatch.Kernel{
		ReadFile: func(name string) ([]byte, error) {
			if s, ok := files[name]; ok {
				return []byte(s), nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		},
		ListSockets: func(*sockdiag.Filter, ...sockdiag.State) ([]sockdiag.Socket, error) { return socks, nil },
	}
}
