#!/usr/bin/env bash
# Side-by-side load benchmark: mesh-admission against the null webhook (examples/null_webhook.rs: the
# same TLS/HTTP stack answering without decoding), both on 127.0.0.1, one after the other, driven by
# the same tools with the same realistic Pod review (hack/samples/pod-4k.json):
#   (a) saturation throughput: h2load, HTTP/1.1 keep-alive with 25 connections, HTTP/2 with 8
#       connections x 8 streams, and HTTP/2 on one connection with 16 streams (as kube-apiserver 1.36
#       sends every webhook call);
#   (b) latency p50/p99/p99.9 at a fixed 1,000 req/s (examples/loadgen.rs, open loop, 25 connections);
#   (c) resident memory idle and after 100,000 requests;
#   (d) time from process start to /readyz 200.
# The server is pinned to CPU $SERVER_CPU and the load tools to CPU $LOAD_CPU. Every run is bounded
# (BENCH_SECONDS, default 10, at most 20). Prints a table with the ratio mesh-admission / null, and
# for each saturation run the share of its core the server used and its CPU time per request (a
# server below 100% was not the bottleneck, so its throughput understates it).
# BENCH_ROUNDS (1 to 5, default 1) alternates the two servers that many times and prints medians;
# BENCH_BODY sends another review (hack/samples/pod-small.json: 2.7 KB, one container);
# BENCH_BASELINE_BIN=path compares with another mesh-admission build instead of the null webhook;
# BENCH_BIN=path measures another build in place of this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v h2load >/dev/null 2>&1; then
  echo "== installing h2load (Debian nghttp2-client)"
  apt-get update -qq >/dev/null && apt-get install -y -qq nghttp2-client >/dev/null
fi
echo "== building release binaries"
cargo build --quiet --release --locked --bin mesh-admission --example null_webhook --example loadgen

exec python3 hack/bench.py "$@"
