#!/usr/bin/env bash
# Runs mesh-admission locally on 127.0.0.1 with development certificates (generated when missing) and
# the embedded default configuration, then prints how to talk to it. Extra arguments go to `serve`,
# e.g. hack/run-local.sh --log-format json --config my-config.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

listen="${LISTEN:-127.0.0.1:8443}"
admin="${ADMIN_LISTEN:-127.0.0.1:9090}"

cat <<TXT
mesh-admission on https://${listen} (admin http://${admin}); try:
  curl -s --cacert certs/ca.crt https://localhost:${listen##*:}/mutate --data @hack/samples/pod.json
  curl -s --cacert certs/ca.crt https://localhost:${listen##*:}/validate --data @hack/samples/helmrelease-bad.json
  curl -s http://${admin}/metrics
Ctrl-C drains and stops it.
TXT
# mimalloc returns freed pages at once, as in the image and the chart (src/main.rs says why).
export MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY:-0}"
exec cargo run --quiet --release -- serve --dev-certs --listen "$listen" --admin-listen "$admin" "$@"
