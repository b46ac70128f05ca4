package config

import "time"

// Default is the value of every key that has one. Names and addresses have
// none: they must be written.
type Default struct {
	ShutdownTimeout time.Duration
	Relay           string
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

// Defaults returns every default, as the schema (keys.go) gives them; Parse,
// config.example.toml and docs/configuration.md all follow it.
func Defaults() Default { return defaults() }
