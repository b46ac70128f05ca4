// Package integration holds end-to-end tests of closeproxy across Linux
// network namespaces, with real peers nobody here wrote: nginx as the web
// server (also behind `listen … proxy_protocol`), HAProxy as a load
// balancer sending PROXY v1 and v2, and a small bounded load client
// (internal/loadclient) standing in for the clients.
//
// Each test builds its own three hosts — lb, proxy and web — as fresh
// namespaces joined by veth pairs, so that `ss` inside each namespace counts
// exactly the TIME-WAIT sockets that host holds, and the ports say which leg
// they belong to. Tests assert on those kernel counts and on closeproxy's
// teardown records together.
//
// The package holds no code outside its tests. The tests need root, `ip` and
// `ss`, and skip with a clear message without them; nginx, haproxy and the
// closeproxy binary are needed only by the tests that use them.
//
//	sudo go test ./integration/ -v -count=1
package integration
