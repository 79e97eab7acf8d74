# Images for ksd-exporter and ksd-syncer, built from one file, one target each:
#
#   docker build --target exporter -t ksd-exporter:0.1.0 .
#   docker build --target syncer   -t ksd-syncer:0.1.0 .
#
# Both binaries come out of one build stage (one compile of the shared crates). The
# runtime stages hold one binary each on distroless/cc: glibc, libgcc, CA certificates,
# /etc/passwd with the `nonroot` user (65532) and nothing else (no shell, no package
# manager). The binaries link glibc dynamically rather than statically with musl because
# the AWS SDK's TLS stack (aws-lc-sys) is C code whose musl builds need extra kernel
# headers and have broken between releases; building on the same Debian release as the
# runtime image keeps the glibc versions equal.
#
# Base images are pinned by tag here. Release builds should also pin them by digest
# (`docker buildx imagetools inspect IMAGE` prints it; Renovate or Dependabot keep it
# current). distroless publishes no version tags, only the Debian release in its name,
# so its digest is the only exact pin.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target directory across builds (BuildKit). The
# binaries are copied out of the cached target directory within the same step, because
# the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ksd-exporter -p ksd-syncer \
    && mkdir -p /out \
    && cp target/release/ksd-exporter target/release/ksd-syncer /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS exporter
LABEL org.opencontainers.image.title="ksd-exporter" \
      org.opencontainers.image.description="Publishes a Kubernetes cluster's Service endpoints to a bucket as a Traefik document" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ksd-exporter /usr/local/bin/ksd-exporter
USER 65532:65532
# ADMIN_ADDR: /livez, /readyz, /metrics
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/ksd-exporter"]

FROM gcr.io/distroless/cc-debian12:nonroot AS syncer
LABEL org.opencontainers.image.title="ksd-syncer" \
      org.opencontainers.image.description="Merges every cluster's document from a bucket into one Traefik dynamic-configuration file" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ksd-syncer /usr/local/bin/ksd-syncer
USER 65532:65532
# ADMIN_ADDR: /livez, /readyz, /metrics
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/ksd-syncer"]
