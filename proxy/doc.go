// Package proxy is closeproxy's data plane around the close engine: it
// owns the listeners (PROXY header intake, connection limits, transparent
// interception), turns each accepted connection into a session of the
// right mode (tcp, or http1 with its exchanges and kept-alive backend
// connections), gets each session its backend connection from the pools
// and the balancer, and lives through reload, drain and shutdown. How a
// leg ends — relaying, half-close, the safe reset, the teardown record —
// is the engine package's; where TIME-WAIT should land is the policy
// package's; keeping backend connections is the pool package's.
//
// Usage:
//
//	srv, err := proxy.New(cfg, log)      // checks cfg; opens nothing
//	err = srv.Listen(ctx)                // binds every listener
//	go srv.Serve(ctx)                    // accepts until Shutdown
//	err = srv.Reload(ctx, newCfg)        // SIGHUP: new settings, same sockets
//	srv.Drain()                          // stop accepting; sessions finish
//	err = srv.Shutdown(ctx)              // drain, then end what is left by policy
//
// Every session ends with exactly one teardown record, also when it was
// refused (bad PROXY header, over the connection limit), failed to dial,
// or was cut by shutdown.
package proxy
