# syntax=docker/dockerfile:1
# omni2: build in the full Rust image, run as a non-root user in a slim Debian.
# Build context: the repository root (compose/docker-compose.yml sets it).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p omni2-core --bin omni2 \
 && install -D target/release/omni2 /out/omni2

FROM debian:bookworm-slim AS runtime
# curl only for the healthcheck; ca-certificates for HTTPS MCP servers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin omni2
COPY --from=build /out/omni2 /usr/local/bin/omni2
USER 10002:10002
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["/usr/local/bin/omni2"]
CMD ["--config", "/etc/omni2/omni2.yaml", "--listen", "0.0.0.0:8000"]
