# syntax=docker/dockerfile:1
# Multi-stage build of chat_server (the design document's Dockerfile, brought
# up to date): a Rust builder stage, then a small Debian runtime stage that
# runs the binary as an unprivileged user.
#
#   docker build -t chat_server .
#   docker run --rm -p 9001:9001 \
#     -e DATABASE_URL=postgres://user:pass@db-host:5432/chat \
#     -e JWT_SECRET=change-me \
#     chat_server
#
# Then: the web page at http://localhost:9001/, WebSockets on ws://localhost:9001/ws,
# /healthz and /readyz for orchestrators, /metrics for Prometheus
# (docs/prometheus.yml). Migrations are applied at start-up.
#
# Settings (every flag has an environment variable; `chat_server --help`):
#   DATABASE_URL   PostgreSQL connection string (required)
#   JWT_SECRET     HS256 secret for client tokens (required)
#   WS_BIND_ADDR   listen address (this image: 0.0.0.0:9001)
#   CHAT_CORES     shards (default: the container's CPUs)
#   CHAT_WRITERS   writer threads (default 1)
#   CHAT_ALLOWED_ORIGINS  browser origins allowed to connect (default: any)
#   CHAT_DEV       never set it in production: it lets anyone sign tokens
#   RUST_LOG       log filter (default info); logs go to stderr

FROM rust:1.92-bookworm AS builder
WORKDIR /src
COPY . .
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chat_server \
 && cp target/release/chat_server /usr/local/bin/chat_server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin chat
COPY --from=builder /usr/local/bin/chat_server /usr/local/bin/chat_server
USER chat
ENV WS_BIND_ADDR=0.0.0.0:9001 \
    RUST_LOG=info
EXPOSE 9001
STOPSIGNAL SIGTERM
ENTRYPOINT ["chat_server"]
