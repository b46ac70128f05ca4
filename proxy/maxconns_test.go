package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// More keep-alive clients than backend connections (max_conns), each
// sending its next request the moment it has an answer: the connections
// are shared, every request answered 200, none refused pool_exhausted
// for waiting out connect_timeout, on both relays. On the loops a
// session keeps its connection for its client's next request, and a
// client that never pauses kept it for good while the others waited
// (10-50 refusals of about 300,000 requests with wrk, none on
// goroutines): a session gives it back when a Get waits at the cap.
func TestHTTP1KeepAliveClientsShareMaxConns(t *testing.T) {
	o := startOrigin(t, hello)
	be := http1Backend(o.addr)
	be.Pool = config.Pool{MaxConns: 2}
	be.ConnectTimeout = 300 * time.Millisecond
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
	// Each client sends for a second: past connect_timeout, so that a
	// session that waits for a connection as long gives up.
	const clients = 6
	until := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := map[int]int{}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialClient(t, h.addr, false)
			br := bufio.NewReader(c)
			for j := 0; time.Now().Before(until); j++ {
				if _, err := fmt.Fprintf(c, "GET /c%d/r%d HTTP/1.1\r\nHost: x\r\n\r\n", i, j); err != nil {
					t.Errorf("client %d request %d: %v", i, j, err)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Errorf("client %d response %d: %v", i, j, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					mu.Lock()
					refused[resp.StatusCode]++
					mu.Unlock()
					if resp.Close {
						return
					}
				}
			}
			c.Close()
		}()
	}
	wg.Wait()
	if len(refused) > 0 {
		t.Errorf("%d clients sending for a second over max_conns 2: answers other than 200: %v; want none (the connections shared)", clients, refused)
	}
	for range clients {
		h.record(t)
	}
}
