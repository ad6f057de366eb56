# syntax=docker/dockerfile:1
#
# icewatch as a container: a release build in a Rust image, then a small Debian runtime that runs
# it as a non-root user.
#
#   docker build -t icewatch .
#   docker run -p 9464:9464 -v "$PWD/sensors.toml:/etc/icewatch/sensors.toml:ro" \
#       -v icewatch-history:/var/lib/icewatch icewatch
#
# In the mounted sensors.toml, listen on all interfaces (`[server] listen = "0.0.0.0:9464"`,
# or `listen = "${ICEWATCH_LISTEN}"` with `-e ICEWATCH_LISTEN=0.0.0.0:9464`) and keep the
# history in the volume (`[history] path = "/var/lib/icewatch/history.db"` or a `postgres://` URI).
# Secrets go in the environment (`-e PGPASSWORD=...`) and are referenced as `${PGPASSWORD}`.
#
# The health check uses curl (installed in the runtime image, ~0.5 MB with its libraries on top of
# ca-certificates, which HTTPS catalogs, S3 and the Pushgateway need anyway) against `/healthz`
# on the loopback address, which answers whether `listen` is 127.0.0.1 or 0.0.0.0.

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS builder
# aws-lc-sys (rustls' crypto provider) may need cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Dependencies first, in their own layer: editing src/ does not rebuild them. The stub targets
# (including the `it` test target Cargo.toml names) only exist for this step.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/it \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/it/main.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# COPY keeps the files' old mtimes: touch them so cargo does not take the stub build as fresh.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && ./target/release/icewatch --version

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/icewatch --create-home \
      --shell /usr/sbin/nologin icewatch \
 && mkdir -p /etc/icewatch
COPY --from=builder /build/target/release/icewatch /usr/local/bin/icewatch
USER icewatch:icewatch
WORKDIR /var/lib/icewatch
VOLUME ["/var/lib/icewatch"]
ENV ICEWATCH_CONFIG=/etc/icewatch/sensors.toml \
    ICEWATCH_LOG_FORMAT=json
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "--max-time", "4", "-o", "/dev/null", "http://127.0.0.1:9464/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/icewatch"]
CMD ["run"]
