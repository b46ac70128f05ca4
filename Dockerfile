# syntax=docker/dockerfile:1
#
# closeproxy: a static binary on distroless, running as uid/gid 65532.
#
#   docker build --build-arg VERSION=$(git describe --always) -t closeproxy .
#   docker run --network container:WEB closeproxy
#
# The default configuration (deploy/sidecar.toml) is a sidecar: it accepts
# on :8080, forwards to a web server on 127.0.0.1:80 and serves the admin
# endpoints on 0.0.0.0:9901 for the kubelet's probes. It must share the
# web server's network namespace (a pod, or --network container:WEB with
# WEB the web server's container, which publishes 8080): in a namespace of
# its own nothing listens on 127.0.0.1:80 and every request gets a 502.
# Mount your own configuration over /etc/closeproxy/closeproxy.toml.
#
# Capabilities: none are needed for the shipped configuration (port 8080).
# Binding a port below 1024 needs CAP_NET_BIND_SERVICE
# (docker run --cap-add NET_BIND_SERVICE …, or sysctl
# net.ipv4.ip_unprivileged_port_start). Transparent mode (backend source =
# "client", listener intercept = "tproxy") needs CAP_NET_ADMIN in the
# process's effective set; runtimes do not raise added capabilities for a
# non-root user, so run such a container as root: --user 0 --cap-add
# NET_ADMIN, plus the policy routing of `closeproxy transparent setup`
# (README, "Transparent mode"). Nothing else needs a capability.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
	-o /closeproxy ./cmd/closeproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /closeproxy /closeproxy
COPY --from=build /src/deploy/sidecar.toml /etc/closeproxy/closeproxy.toml
# Numeric, so that a kubelet with runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080 9901
# No shell or curl in the image: the binary asks its own admin listener,
# at the admin.listen of the configuration it runs (a mounted file with
# another admin.listen included).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
	CMD ["/closeproxy", "healthcheck", "-config", "/etc/closeproxy/closeproxy.toml"]
ENTRYPOINT ["/closeproxy"]
CMD ["run", "-config", "/etc/closeproxy/closeproxy.toml"]
