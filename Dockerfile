# flowlens image: collector + web explorer in one binary.
#
#   docker build -t flowlens:local .                       # builds the binary in the `build` stage
#   docker build --target prebuilt -t flowlens:local \
#       --build-arg FLOWLENS_BINARY=target/release/flowlens .   # packs a binary built on the host
#
# Both end in the same runtime layers (`runtime-base`). The `prebuilt` stage comes before `build` so that
# the classic builder, which builds every stage up to the target, never needs the Rust image for it
# (the tests use it: no registry is reachable there). Run it as docker-compose.yml does (capabilities,
# host PID and network namespaces, read-only mounts): docs/deployment.md.

ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE}-slim AS runtime-base
ARG DEBIAN_RELEASE
LABEL org.opencontainers.image.title="flowlens" \
      org.opencontainers.image.description="Who is behind every network flow: user, process and container, counted in the kernel (eBPF), kept in InfluxDB" \
      org.opencontainers.image.source="https://github.com/flowlens/flowlens" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="debian:${DEBIAN_RELEASE}-slim"
# No packages: the binary needs only glibc and libgcc_s, which the base has. The user is for what needs no
# privileges (`flowlens web`, `replay`); the collector runs as root with only the capabilities it needs
# (docker-compose.yml says why: Docker gives a non-root user no ambient capabilities).
RUN groupadd --system --gid 10001 flowlens \
 && useradd --system --uid 10001 --gid flowlens --home-dir /var/lib/flowlens --shell /usr/sbin/nologin flowlens \
 && install -d -m 0775 -o root -g flowlens /var/lib/flowlens
COPY deploy/docker/healthcheck.sh /usr/local/bin/flowlens-healthcheck
ENV FLOWLENS_LISTEN=127.0.0.1:8647
# The web listener answers /metrics (200) once the process runs and exports.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/flowlens-healthcheck"]
WORKDIR /var/lib/flowlens
USER flowlens
ENTRYPOINT ["/usr/local/bin/flowlens"]
CMD ["--help"]

# A binary built outside the image (CI, tests): pass its path in the build context.
FROM runtime-base AS prebuilt
ARG FLOWLENS_BINARY=target/release/flowlens
COPY ${FLOWLENS_BINARY} /usr/local/bin/flowlens

# Build stage: Rust toolchain + clang for the BPF programs (CO-RE; vmlinux.h is in the repository).
FROM rust:1-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang-19 llvm-19 libbpf-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p flowlens-collector \
 && install -D -m 0755 target/release/flowlens /out/flowlens

# Default target: the runtime with the binary from the build stage.
FROM runtime-base AS runtime
COPY --from=build /out/flowlens /usr/local/bin/flowlens
