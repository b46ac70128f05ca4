//go:build linux

// Command bench measures closeproxy side by side with HAProxy (mode tcp),
// the nginx stream module and no proxy at all, on this machine, on
// loopback, with the same load generators:
//
//	go run ./bench              # about 5 minutes
//	go run ./bench -quick       # about 50 seconds
//	go run ./bench -duration 5s # per load
//	go run ./bench -proxy-cpus 0   # every proxy on CPU 0 only: compare with 0-1
//	go run ./bench -proxy-cpus 1 -load-cpus 0 # proxies and load on CPUs apart
//	go run ./bench -prototype      # add the event-loop prototype (internal/evloop, tcp and http1) as yardsticks
//	go run ./bench -netns=false    # every candidate in this network namespace
//	go run ./bench -teardown errors # closeproxy's records of failures only (default: all, as its own default)
//
// It starts an nginx backend (a small static body at "/", a large blob at
// "/blob", keep-alive allowed) for each candidate, as root each in a
// network namespace of its own where the candidate and the loads against
// it run too (so that none meets another's TIME-WAIT sockets), then for
// each candidate — direct, closeproxy
// tcp (its default relay, the event loops), closeproxy tcp goroutines (the
// same with relay = "goroutines"), closeproxy http1, HAProxy mode tcp,
// nginx stream — measures short connections (wrk,
// "Connection: close"), keep-alive requests (wrk), bulk throughput with 1
// and 64 streams, latency at a fixed rate well below saturation, memory per
// idle proxied connection and CPU per 10,000 short connections (over a
// fixed count of them with ab, which moves less from round to round than
// a timed load), and prints
// one table with each figure's ratio to HAProxy and to direct. The
// closeproxy tcp column comes with an error if its closeproxy logged that
// the loops refused sessions: those relayed on goroutines.
//
// Every process it starts is its own process group and is ended by PID when
// the run ends, also on SIGINT or SIGTERM, and then each namespace it made
// (named cpbench<its PID>-<n>) is deleted by name. It needs root for the
// namespaces (without, every candidate shares the bench's, and it says
// so) and to raise RLIMIT_NOFILE above the hard limit for 10,000 idle
// connections (without, it uses as many as the limit allows and says so).
package main
