package admin

import (
	"net"
	"sync"
	"time"
)

// httpLimits bound what a client of the admin listener can hold: a slow or
// idle client is closed after the timeouts, and no more than maxConns
// connections are open at once, so that probes, scrapes and idle keep-alive
// connections can never take the descriptors the data plane needs.
type httpLimits struct {
	readHeader time.Duration // a request's head
	read       time.Duration // a whole request
	write      time.Duration // a response (POST /drain?wait lifts it)
	idle       time.Duration // a keep-alive connection between requests
	maxConns   int           // open at once; more wait in the kernel's backlog
}

// defaultHTTPLimits fit probes every few seconds and a scrape of /metrics.
var defaultHTTPLimits = httpLimits{
	readHeader: 5 * time.Second,
	read:       10 * time.Second,
	write:      30 * time.Second,
	idle:       30 * time.Second,
	maxConns:   64,
}

// limitListener accepts at most n connections open at once: Accept waits
// for a slot, so a connection past the limit stays in the kernel's accept
// queue and holds no descriptor of this process. (golang.org/x/net's
// netutil.LimitListener, without the dependency.)
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{} // closed by Close: Accept stops waiting
	once  sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitedConn gives its slot back once, on the first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
