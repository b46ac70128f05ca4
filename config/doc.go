// Package config turns a closeproxy TOML file into a validated, typed
// [Config] with every default filled in.
//
// It owns the TOML schema, strict decoding and validation. The schema is
// one table (keys.go): each key's path, default, whether a reload applies
// it, its own checks and its documentation, written once. Decoding,
// [Defaults], [Config.TOML], the per-key checks of [Config.Validate],
// [RestartOnly], config.example.toml and docs/configuration.md all follow
// it; `go generate ./config` rewrites the two files. It opens no sockets, resolves no names and starts no
// goroutines: whether a port is free or a backend answers is for the proxy
// to find out.
//
// Decoding is strict. A key the schema does not have is an error naming
// the key and its line, as are a value of the wrong type and TOML syntax
// errors. Validation then collects every problem rather than stopping at
// the first, each naming its object and key:
//
//	config.toml:12: unknown key listener.clsoe (did you mean listener.close?)
//	config.toml:14: listener "web": close.time_wait: "sometimes" is not one of proxy, client, nowhere
//	config.toml:21: backend "app": send_proxy_protocol: "v3" is not one of off, v1, v2
//
// Each problem is an [*Error]; the returned error joins them.
//
// Usage:
//
//	cfg, err := config.Load("/etc/closeproxy/config.toml")
//	if err != nil {
//		return err // every problem, one per line
//	}
//	os.Stdout.Write(cfg.TOML()) // the effective configuration
//
// A Config built in code is checked with [Config.Validate].
package config
