package config

import (
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// Default is the value of every key that has one. Names and addresses have
// none: they must be written.
type Default struct {
	ShutdownTimeout time.Duration
	Log             Log
	Admin           Admin
	Auto            Auto
	// Listener is what every [[listener]] starts from; Name, Listen and
	// Backend are left empty.
	Listener Listener
	// Backend is what every [[backend]] starts from; Name and Address are
	// left empty. Its health check is the one of a single server.
	Backend Backend
	// SeveralServersCheck is the health check of a backend whose servers
	// list more than one: there, a check decides where sessions go. A
	// single server is not checked unless asked: with nowhere else to
	// send a session, a check could only refuse it.
	SeveralServersCheck HealthCheck
}

// Defaults returns every default. It is the only place defaults are written
// down; Parse, the example file's comments and the tests all follow it.
func Defaults() Default {
	return Default{
		ShutdownTimeout: 30 * time.Second,
		Log:             Log{Level: "info", Teardown: "all", Records: "stderr"},
		Admin:           Admin{Listen: "127.0.0.1:9901", KernelSample: time.Second},
		Auto:            Auto{TWBudget: 0, TWResume: 0.8, PortShare: 0.5, PortResume: 0.4, SampleInterval: 250 * time.Millisecond},
		Listener: Listener{
			ProxyProtocol:        ProxyProtocolOff,
			ProxyProtocolTrusted: nil, // trust nobody's header
			ProxyProtocolTimeout: 3 * time.Second,
			IdleTimeout:          60 * time.Second,
			MaxConnections:       10000,
			Intercept:            InterceptOff,
			Close: Close{
				TimeWait:         policy.TargetProxy,
				PeerFinGrace:     time.Second,
				AdaptiveGrace:    true,
				Fallback:         policy.FallbackFIN,
				HalfCloseTimeout: 30 * time.Second,
				DrainTimeout:     time.Second,
			},
		},
		Backend: Backend{
			Balance: BalanceLeastConn,
			Health: Health{
				Check: HealthOff, Interval: 2 * time.Second, Timeout: time.Second,
				Rise: 2, Fall: 3, HTTPRequest: "GET / HTTP/1.1", ExpectStatus: 200,
				EjectAfter: 3, EaseIn: 10 * time.Second,
			},
			Protocol:          ProtocolTCP,
			ConnectTimeout:    2 * time.Second,
			SendProxyProtocol: SendOff,
			Source:            SourceProxy,
			Pool:              Pool{Warm: 8, MaxIdleAge: 30 * time.Second, MaxConns: 1024},
			Close: Close{
				TimeWait:         policy.TargetPeer, // spelled "backend"
				PeerFinGrace:     time.Second,
				AdaptiveGrace:    true,
				Fallback:         policy.FallbackReset,
				HalfCloseTimeout: 30 * time.Second,
				DrainTimeout:     time.Second,
			},
		},
		SeveralServersCheck: HealthTCP,
	}
}
