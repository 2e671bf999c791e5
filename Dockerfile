# syntax=docker/dockerfile:1.7
#
# One image for the whole gateway: `ingress`, `dispatcher`, `notifier` and the operators' tool
# `gatewayctl` (each Kubernetes Deployment / Compose service picks its binary as the command).
# Why one image: the three services share nearly all of their dependency graph, so one build
# compiles it once; one digest is scanned, signed and promoted, and the stages can never run
# mismatched builds of the bus contract. The binaries add a few MB each to a base of about 20 MB.
#
# `--target demo` builds a second image from the same compiled tree with the DingTalk simulator
# and the echo expert added, for `docker compose --profile demo up`; it never goes to production.
#
# Layers: `planner` reduces the workspace to its manifests (cargo-chef's recipe), `builder` compiles
# the dependencies from that recipe alone (cached until a Cargo.toml or Cargo.lock changes), then
# the workspace's own crates.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.71

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when the recipe (manifests and lock file) changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked \
      --bin ingress --bin dispatcher --bin notifier --bin gatewayctl \
      --bin dingtalk-sim --bin echo-expert \
 && mkdir -p /out \
 && cp target/release/ingress target/release/dispatcher target/release/notifier \
       target/release/gatewayctl target/release/dingtalk-sim target/release/echo-expert /out/

# The production image: glibc, libgcc and CA certificates, no shell, no package manager, running
# as the distroless `nonroot` user (65532). TLS to DingTalk uses rustls with the CA bundle here.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/ingress /out/dispatcher /out/notifier /out/gatewayctl /usr/local/bin/
USER 65532:65532
# Public callbacks, admin API, notify tools, and the ops listeners of the three services.
EXPOSE 8080 8081 8091 9100 9101 9102
ENV LOG_FORMAT=json
# No default service: the orchestrator names the binary (`ingress`, `dispatcher` or `notifier`).
ENTRYPOINT []
CMD ["gatewayctl", "--help"]

# The demo image: the runtime plus the simulator, the echo expert, and curl for the demo's
# one-shot seeding script (the runtime image has no shell; this one is never deployed).
FROM debian:bookworm-slim AS demo
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home gateway
COPY --from=builder /out/ /usr/local/bin/
COPY deploy/demo/seed.sh /usr/local/bin/demo-seed
USER 65532:65532
EXPOSE 8080 8081 8091 8123 9100 9101 9102 9300
ENV LOG_FORMAT=json
CMD ["demo-seed"]
