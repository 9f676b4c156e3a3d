# syntax=docker/dockerfile:1
# auth-sidecar: build in the full Rust image, run as a non-root user in a slim Debian.
# Build context: the repository root (compose/docker-compose.yml sets it).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth-sidecar --bin auth-sidecar \
 && install -D target/release/auth-sidecar /out/auth-sidecar

FROM debian:bookworm-slim AS runtime
# curl only for the healthcheck; ca-certificates for HTTPS JWKS endpoints.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar
COPY --from=build /out/auth-sidecar /usr/local/bin/auth-sidecar
USER 10001:10001
EXPOSE 8700 8701
# /readyz is served on admin_listen (8701) in the shipped config.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8701/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/auth-sidecar"]
CMD ["serve", "--config", "/etc/auth-sidecar/auth-sidecar.yaml"]
