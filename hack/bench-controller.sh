#!/usr/bin/env bash
# Scale benchmark of `mesh-admission controller` against the real kube-apiserver (issue 17): N
# HelmReleases with their Services across M namespaces exist before the controller starts; reports
# the time until every generated object is present, the controller's peak RSS, the API requests per
# HelmRelease, and the time until E annotation edits are reflected. Figures are printed and written
# to target/bench-controller/results.md (and results.json). The driver is the ignored test
# tests/bench_controller.rs; the controller is this checkout's release build.
#
#   bash hack/bench-controller.sh [--releases N] [--namespaces M] [--edits E]
#
# Environment: BENCH_CONTROLLER_RELEASES (2000), BENCH_CONTROLLER_NAMESPACES (40),
# BENCH_CONTROLLER_EDITS (100), BENCH_CONTROLLER_OUT (target/bench-controller), BENCH_CONTROLLER_BIN
# (another controller build). Needs the control plane (hack/build-control-plane.sh) and kubectl
# (hack/install-tools.sh). Everything runs on 127.0.0.1; every process is stopped at the end, also on
# failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --releases) BENCH_CONTROLLER_RELEASES=${2:?--releases needs a number}; shift 2 ;;
    --namespaces) BENCH_CONTROLLER_NAMESPACES=${2:?--namespaces needs a number}; shift 2 ;;
    --edits) BENCH_CONTROLLER_EDITS=${2:?--edits needs a number}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-controller: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
export BENCH_CONTROLLER_RELEASES="${BENCH_CONTROLLER_RELEASES:-2000}"
export BENCH_CONTROLLER_NAMESPACES="${BENCH_CONTROLLER_NAMESPACES:-40}"
export BENCH_CONTROLLER_EDITS="${BENCH_CONTROLLER_EDITS:-100}"

for tool in .tools/control-plane/kube-apiserver .tools/control-plane/etcd .tools/bin/kubectl; do
  [ -x "$tool" ] || { echo "bench-controller: $tool is missing: run bash hack/test.sh's tool steps (hack/install-tools.sh, hack/build-control-plane.sh)" >&2; exit 2; }
done

if [ -z "${BENCH_CONTROLLER_BIN:-}" ]; then
  echo "== building the release binary (fat LTO: several minutes the first time)"
  cargo build --quiet --release --locked --bin mesh-admission
fi

echo "== benchmark: $BENCH_CONTROLLER_RELEASES HelmReleases in $BENCH_CONTROLLER_NAMESPACES namespaces, then $BENCH_CONTROLLER_EDITS edits"
# In a process group of its own, stopped as a whole on Ctrl-C or failure (hack/in-group.sh).
exec bash hack/in-group.sh cargo test --quiet --locked --test bench_controller -- --ignored --nocapture
