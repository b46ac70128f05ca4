module github.com/closeproxy/closeproxy

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/pires/go-proxyproto v0.15.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
