#!/usr/bin/env bash
# Scale benchmark of `mesh-admission controller` against the real kube-apiserver (issue 17): N
# HelmReleases with their Services across M namespaces exist before the controller starts; reports
# the time until every generated object is present, the controller's peak RSS, the API requests per
# HelmRelease, and the time until E annotation edits are reflected. Figures are printed and written
# to target/bench-controller/results.md (and results.json). The driver is the ignored test
# tests/bench_controller.rs; the controller is this checkout's release build.
#
# With --reports it measures the controller's OpenReports instead: testkit::scale::mesh (10,000
# objects in 200 namespaces) exists before it starts; reports the time until the stored reports hold
# every finding `audit` gives, their count and largest size, the peak RSS, and the report writes in
# 30 s of steady state (target/bench-controller/reports.md and reports.json).
#
#   bash hack/bench-controller.sh [--releases N] [--namespaces M] [--edits E]
#   bash hack/bench-controller.sh --reports [--namespaces M]
#
# Environment: BENCH_CONTROLLER_RELEASES (2000), BENCH_CONTROLLER_NAMESPACES (40),
# BENCH_CONTROLLER_EDITS (100), BENCH_CONTROLLER_OUT (target/bench-controller), BENCH_CONTROLLER_BIN
# (another controller build); with --reports BENCH_REPORTS_NAMESPACES (200),
# BENCH_REPORTS_STEADY_SECONDS (30). Needs the control plane (hack/build-control-plane.sh) and kubectl
# (hack/install-tools.sh). Everything runs on 127.0.0.1; every process is stopped at the end, also on
# failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

reports=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --releases) BENCH_CONTROLLER_RELEASES=${2:?--releases needs a number}; shift 2 ;;
    --namespaces) BENCH_CONTROLLER_NAMESPACES=${2:?--namespaces needs a number}; BENCH_REPORTS_NAMESPACES=$2; shift 2 ;;
    --reports) reports=1; shift ;;
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

# In a process group of its own, stopped as a whole on Ctrl-C or failure (hack/in-group.sh).
if [ "$reports" = 1 ]; then
  export BENCH_REPORTS_NAMESPACES="${BENCH_REPORTS_NAMESPACES:-200}"
  echo "== benchmark: the controller's reports of $((BENCH_REPORTS_NAMESPACES * 50)) objects in $BENCH_REPORTS_NAMESPACES namespaces"
  exec bash hack/in-group.sh cargo test --quiet --locked --test bench_controller -- --ignored --nocapture --exact reports_at_scale
fi
echo "== benchmark: $BENCH_CONTROLLER_RELEASES HelmReleases in $BENCH_CONTROLLER_NAMESPACES namespaces, then $BENCH_CONTROLLER_EDITS edits"
exec bash hack/in-group.sh cargo test --quiet --locked --test bench_controller -- --ignored --nocapture --exact controller_at_scale
