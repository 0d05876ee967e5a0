# paysign container image: conf/deploy/kubernetes.yaml runs it as registry.example/paysign:0.1.0.
#   docker build -t registry.example/paysign:0.1.0 .
# Configuration and keys are mounted at run time (/etc/paysign), never baked in.

# ---- build: the Rust toolchain, plus cmake for pingora's zlib-ng (libz-ng-sys)
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
RUN cargo build --release --locked --bin paysign \
 && strip --strip-debug target/release/paysign

# ---- runtime: glibc (libc, libm, libgcc_s: what `ldd paysign` lists) and CA certificates
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 paysign \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin paysign
COPY --from=build /src/target/release/paysign /usr/local/bin/paysign
USER 10001:10001
# 8080: internal callers (proxy) · 8081: platform notifications · 9091: admin (/metrics, /healthz, /readyz)
EXPOSE 8080 8081 9091
# Mount the configuration directory (conf/prod/) at /etc/paysign/config/ and the keys under
# /etc/paysign/keys/ (docs/operations.md, "Container image").
ENTRYPOINT ["/usr/local/bin/paysign"]
CMD ["run", "-c", "/etc/paysign/config/paysign.yaml"]
