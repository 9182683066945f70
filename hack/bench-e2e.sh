#!/usr/bin/env bash
# Pod creations through the real kube-apiserver: pods/s, p50/p99 of the create calls and the CPU per pod
# of each admission process, in a namespace labelled istio-injection=enabled, with (a) no webhook, (b)
# the null webhook registered with exactly `webhook-config`'s configuration, (b') the same null webhook
# answering with mesh-admission's patch for the pod, (c) mesh-admission serve, (i) istiod's injector,
# (i+c) istiod and mesh-admission, (p) the same mutation as a MutatingAdmissionPolicy. By default on the
# production path: every webhook registered by Service, called over HTTP/1.1 (--path loopback: by
# 127.0.0.1 URLs over HTTP/2). The modes alternate over the rounds; the table of medians and ratios is
# printed and written to target/bench-e2e/results.md (every round's figures in results.json beside it).
#
#   bash hack/bench-e2e.sh [--pods N] [--in-flight K] [--connections C] [--rate P] [--rounds R]
#                          [--modes a,b,b',c] [--path service|loopback]
#
# Each flag has an environment variable: BENCH_E2E_PODS (1000), BENCH_E2E_IN_FLIGHT (16),
# BENCH_E2E_CONNECTIONS (1), BENCH_E2E_RATE (0: as fast as the apiserver goes; P: P pods per second,
# open-loop, as clients create objects, latency counted from each pod's due time), BENCH_E2E_ROUNDS (2), BENCH_E2E_MODES (a,b,b',c,i,i+c,p; a,b,b',c for
# loopback), BENCH_E2E_PATH (service), BENCH_E2E_OUT (target/bench-e2e), BENCH_E2E_MATCH_CONDITIONS=0
# (register every webhook without its matchConditions, to measure what they save),
# BENCH_E2E_BASELINE_BIN (another mesh-admission build, served as mode c0 to compare two builds in
# alternating rounds, e.g. --modes a,c0,c), BENCH_E2E_BIN (the build served as mode c; this checkout's
# release build by default). Needs the control plane (hack/build-control-plane.sh), istiod for modes i
# and i+c (hack/build-istiod.sh) and kubectl (hack/install-tools.sh). Every process is stopped at the
# end, also on failure or Ctrl-C. The driver is the ignored test tests/bench_e2e.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --pods) BENCH_E2E_PODS=${2:?--pods needs a number}; shift 2 ;;
    --in-flight) BENCH_E2E_IN_FLIGHT=${2:?--in-flight needs a number}; shift 2 ;;
    --connections) BENCH_E2E_CONNECTIONS=${2:?--connections needs a number}; shift 2 ;;
    --rate) BENCH_E2E_RATE=${2:?--rate needs a number of pods per second}; shift 2 ;;
    --rounds) BENCH_E2E_ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
    --modes) BENCH_E2E_MODES=${2:?--modes needs a list such as a,b,c}; shift 2 ;;
    --path) BENCH_E2E_PATH=${2:?--path needs service or loopback}; shift 2 ;;
    --out) BENCH_E2E_OUT=${2:?--out needs a folder}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-e2e: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
export BENCH_E2E_PODS="${BENCH_E2E_PODS:-1000}"
export BENCH_E2E_IN_FLIGHT="${BENCH_E2E_IN_FLIGHT:-16}"
export BENCH_E2E_CONNECTIONS="${BENCH_E2E_CONNECTIONS:-1}"
export BENCH_E2E_RATE="${BENCH_E2E_RATE:-0}"
export BENCH_E2E_ROUNDS="${BENCH_E2E_ROUNDS:-2}"
export BENCH_E2E_PATH="${BENCH_E2E_PATH:-service}"
case "$BENCH_E2E_PATH" in
  service) default_modes="a,b,b',c,i,i+c,p" ;;
  loopback) default_modes="a,b,b',c" ;;
  *) echo "bench-e2e: --path is service or loopback, not $BENCH_E2E_PATH" >&2; exit 2 ;;
esac
export BENCH_E2E_MODES="${BENCH_E2E_MODES:-$default_modes}"
if [ -n "${BENCH_E2E_OUT:-}" ]; then
  export BENCH_E2E_OUT
fi

for tool in .tools/control-plane/kube-apiserver .tools/control-plane/etcd; do
  [ -x "$tool" ] || { echo "bench-e2e: $tool is missing: run bash hack/build-control-plane.sh" >&2; exit 2; }
done
[ -x .tools/bin/kubectl ] || { echo "bench-e2e: kubectl is missing: run bash hack/install-tools.sh" >&2; exit 2; }
case ",$BENCH_E2E_MODES," in
  *,i,* | *,i+c,*)
    [ -x .tools/istiod/pilot-discovery ] || { echo "bench-e2e: istiod is missing: run bash hack/build-istiod.sh" >&2; exit 2; } ;;
esac

echo "== building release binaries (mesh-admission, examples null_webhook and pod_load)"
cargo build --quiet --release --locked --bin mesh-admission --example null_webhook --example pod_load

echo "== benchmark ($BENCH_E2E_PATH path): $BENCH_E2E_PODS pods per round, $BENCH_E2E_IN_FLIGHT in flight, rate $BENCH_E2E_RATE/s (0: saturating), $BENCH_E2E_ROUNDS rounds of $BENCH_E2E_MODES"
# In a process group of its own, stopped as a whole on Ctrl-C or failure (hack/in-group.sh).
exec bash hack/in-group.sh cargo test --quiet --release --locked --test bench_e2e -- --ignored --nocapture
