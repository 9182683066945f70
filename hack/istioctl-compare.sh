#!/usr/bin/env bash
# Measures what Istio's own tooling says about the objects of DESIGN.md section 10's table, next to
# mesh-admission (README, "Istio security objects"). Not part of hack/test.sh or CI: the first run
# builds istioctl from the Go module istio.io/istio (about 3 minutes on 2 cores, plus module
# downloads), cached in .tools/istioctl/ with a stamp of the pinned version.
#
# For every case of tests/fixtures/istio/cases/ it runs
#   istioctl validate -f CASE                          (istiod's validation, offline)
#   istioctl analyze -A --use-kube=false -o json CASE  (the analyzers; exit 0 even on errors, so the
#                                                       JSON is read; with --meshConfigFile for cases
#                                                       in the SPIRE trust domain)
#   mesh-admission review -f CASE [--config SPIRE]
# and prints one table row per case (hack/istioctl_compare.py).
#
# Usage: hack/istioctl-compare.sh [--markdown]
set -euo pipefail
cd "$(dirname "$0")/.."

ISTIO_MODULE=istio.io/istio
ISTIO_VERSION="$(sed -n 's/^require istio.io\/istio \(.*\)$/\1/p' hack/istioctl/go.mod)"
OUT="${OUT:-$PWD/.tools/istioctl}"
log() { printf 'istioctl-compare: %s\n' "$*" >&2; }

stamp="$OUT/.stamp"
want="$ISTIO_MODULE $ISTIO_VERSION $(go env GOVERSION)"
if [[ -x "$OUT/istioctl" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  log "istioctl present in $OUT ($want)"
else
  mkdir -p "$OUT"
  rm -f "$stamp"
  log "building istioctl from $ISTIO_MODULE $ISTIO_VERSION (go $(go env GOVERSION)); about 3 minutes"
  start=$SECONDS
  CGO_ENABLED=0 GOFLAGS=-mod=mod go -C hack/istioctl build -trimpath \
    -ldflags "-s -w -X istio.io/istio/pkg/version.buildVersion=$ISTIO_VERSION" \
    -o "$OUT/istioctl.part" "$ISTIO_MODULE/istioctl/cmd/istioctl"
  mv "$OUT/istioctl.part" "$OUT/istioctl"
  echo "$want" >"$stamp"
  log "built in $((SECONDS - start)) s"
fi

BIN="${MESH_ADMISSION_BIN:-target/debug/mesh-admission}"
if [[ -z "${MESH_ADMISSION_BIN:-}" ]]; then
  cargo build --quiet --locked --bin mesh-admission
fi
PY="${PY:-.tools/venv/bin/python}"
exec "$PY" hack/istioctl_compare.py --istioctl "$OUT/istioctl" --mesh-admission "$BIN" \
  --cases tests/fixtures/istio/cases "$@"
