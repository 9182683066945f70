#!/usr/bin/env bash
# Generates development certificates with `mesh-admission certs` (rcgen): a CA and a serving certificate
# for the webhook Service. An existing CA in the output directory is reused, so re-running rotates the
# serving certificate while the caBundle stays valid.
#
# Usage: hack/gen-certs.sh [OUT_DIR] [SERVICE] [NAMESPACE]
#   defaults: certs/  mesh-admission  mesh-system
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-certs/}"
service="${2:-mesh-admission}"
namespace="${3:-mesh-system}"

cargo run --quiet --release -- certs --out "$out" --service "$service" --namespace "$namespace"
echo "caBundle for a webhook configuration: base64 -w0 ${out%/}/ca.crt"
