# Sluice images, multi-stage. Build from the repository root:
#   docker build -t sluice-worker .                       (the worker; the default target)
#   docker build --target api -t sluice-api .             (the HTTP API, sluice-api)
#   docker build --target mock -t sluice-mock .           (the bundled mock model API, for demos)
# The runtime images are Debian slim with only CA certificates, running as an unprivileged user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-worker -p sluice-producer -p sluice-tests \
        --bin sluice-worker --bin sluice --bin sluice-api --bin mock-model-api \
 && mkdir -p /out \
 && cp target/release/sluice-worker target/release/sluice target/release/sluice-api \
       target/release/mock-model-api /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sluice
USER 10001:10001

FROM runtime AS mock
COPY --from=build /out/mock-model-api /usr/local/bin/mock-model-api
EXPOSE 8088
ENTRYPOINT ["mock-model-api", "--listen", "0.0.0.0:8088"]

FROM runtime AS api
COPY --from=build /out/sluice-api /out/sluice /usr/local/bin/
# The same config file as the workers ([api] section); probes GET /healthz and /readyz on 8080.
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice-api", "--listen", "0.0.0.0:8080"]

FROM runtime AS worker
COPY --from=build /out/sluice-worker /out/sluice /usr/local/bin/
# Configuration: --config /etc/sluice/sluice.toml (mounted) and/or SLUICE__SECTION__KEY variables;
# the defaults are built in.
EXPOSE 9464
# Probes: GET /healthz (alive) and /readyz (Redis reachable, library loaded, not stopping).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice-worker"]
