# mesh-admission container image: a multi-stage build.
#
#   docker build -t mesh-admission:dev .
#   docker run --rm -p 127.0.0.1:8443:8443 -p 127.0.0.1:9090:9090 -v "$PWD/certs:/certs:ro" mesh-admission:dev
#
# Runtime image: gcr.io/distroless/cc-debian12:nonroot. The binary is built against glibc on Debian 12
# (bookworm) and distroless/cc-debian12 ships exactly that glibc, libgcc and the CA certificates, and nothing
# else: no shell, no package manager. That keeps the default (glibc) Rust target and its allocator, with none
# of the musl cross toolchain a static scratch image would need; the image stays ~25 MB.
# The base images are pinned by tag; to pin by digest as well, pass e.g.
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:...
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependency layer: build every dependency against placeholder sources, so that a change under src/ does not
# rebuild (or re-download) them. Rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
# The test harness is a member of the workspace: cargo reads its manifest for any build, and builds
# nothing of it for this one.
COPY tests/support/Cargo.toml ./tests/support/
# .cargo/config.toml sets mimalloc's compile-time default (no transparent huge pages).
COPY .cargo ./.cargo
# The [[bench]] targets must exist for cargo to read Cargo.toml at all; none is built here.
RUN mkdir -p src benches tests/support/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs benches/admission.rs benches/render.rs tests/support/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/mesh-admission* target/release/deps/mesh_admission-* \
       target/release/deps/libmesh_admission-* target/release/.fingerprint/mesh-admission-*

# The real sources. COPY keeps the files' old mtimes: touch them so cargo rebuilds the crate.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin mesh-admission \
    && ./target/release/mesh-admission --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="mesh-admission" \
      org.opencontainers.image.description="Admission webhook for an Istio + SPIRE service mesh"
COPY --from=builder /build/target/release/mesh-admission /mesh-admission
# The default --tls-cert/--tls-key (certs/tls.crt, certs/tls.key) resolve to /certs, where the chart mounts
# the serving certificate's Secret.
WORKDIR /
# mimalloc reads its options when the process loads: freed pages go back to the OS at once rather than
# 10 ms later (a burst of large bodies otherwise stays resident until traffic resumes).
ENV MIMALLOC_PURGE_DELAY=0
# distroless "nonroot": uid/gid 65532, numeric so that runAsNonRoot can verify it.
USER 65532:65532
# 8443: HTTPS admission (/mutate, /validate); 9090: plain-HTTP admin (/healthz, /readyz, /metrics).
EXPOSE 8443 9090
ENTRYPOINT ["/mesh-admission"]
CMD ["serve"]
