#!/usr/bin/env bash
# Builds istiod for the end-to-end tests (DESIGN.md section 11, "Istio in the loop") from the Go module
# istio.io/istio, and renders its configuration from that module's own charts:
#   .tools/istiod/pilot-discovery         pilot/cmd/pilot-discovery (hack/istiod/main.go)
#   .tools/istiod/configmaps.yaml         ConfigMaps `istio` and `istio-sidecar-injector`, `helm template` of
#                                         manifests/charts/istio-control/istio-discovery with the `spire` and
#                                         `spire-gw` templates of charts/mesh-admission/values.yaml (the block
#                                         its header documents: one source for both) and hack/istiod/values.yaml
#   .tools/istiod/charts/{istio-discovery,base}   the module's charts, from which the tests render istiod's
#                                         webhooks for the URL and CA of the istiod they start
# Needs Go, the Go module proxy and .tools/bin/helm (hack/install-tools.sh). The binary takes 4-9 minutes on
# 2 cores and is rebuilt only when the pin, hack/istiod or the Go version changes (a stamp); the ConfigMaps
# are rendered on every run (a second).
#
# Usage: hack/build-istiod.sh      (OUT=/some/dir to build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned version: bump it here and in hack/istiod/go.mod.
ISTIO_MODULE=istio.io/istio
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad
src=hack/istiod
OUT="${OUT:-$PWD/.tools/istiod}"
HELM="${HELM:-$PWD/.tools/bin/helm}"
CHART_VALUES=charts/mesh-admission/values.yaml

log() { printf 'build-istiod: %s\n' "$*" >&2; }
grep -q "^require $ISTIO_MODULE $ISTIO_VERSION\$" "$src/go.mod" || {
  log "$src/go.mod does not pin $ISTIO_MODULE $ISTIO_VERSION"
  exit 1
}
[[ -x "$HELM" ]] || {
  log "$HELM is missing: run bash hack/install-tools.sh first"
  exit 1
}
export CGO_ENABLED=0 GOFLAGS=-mod=mod

stamp="$OUT/.stamp"
pins() { echo "$ISTIO_MODULE $ISTIO_VERSION, $(go env GOVERSION), $(cat "$src/go.mod" "$src/main.go" | sha256sum | cut -c1-16)"; }
want="$(pins)"
mkdir -p "$OUT"
if [[ -x "$OUT/pilot-discovery" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  log "pilot-discovery present in $OUT ($want)"
else
  rm -f "$stamp"
  log "building pilot-discovery from $ISTIO_MODULE $ISTIO_VERSION (go $(go env GOVERSION)); 4-9 minutes on 2 cores"
  start=$SECONDS
  go -C "$src" build -trimpath \
    -ldflags "-s -w -X istio.io/istio/pkg/version.buildVersion=$ISTIO_VERSION" \
    -o "$OUT/pilot-discovery.part" .
  mv "$OUT/pilot-discovery.part" "$OUT/pilot-discovery"
  pins >"$stamp"
  log "built in $((SECONDS - start)) s: $(du -m "$OUT/pilot-discovery" | cut -f1) MB"
fi

# The charts of exactly the module that was built.
go -C "$src" mod download "$ISTIO_MODULE"
module_dir="$(go -C "$src" list -m -f '{{.Dir}}' "$ISTIO_MODULE")"
rm -rf "$OUT/charts.part"
mkdir -p "$OUT/charts.part"
cp -R "$module_dir/manifests/charts/istio-control/istio-discovery" "$module_dir/manifests/charts/base" "$OUT/charts.part/"
chmod -R u+w "$OUT/charts.part"
rm -rf "$OUT/charts"
mv "$OUT/charts.part" "$OUT/charts"

# The istiod values our chart's header documents, uncommented: from `#   meshConfig:` to the first bare `#`.
spire_values="$OUT/spire-values.yaml"
sed -n '/^#   meshConfig:$/,/^#$/p' "$CHART_VALUES" | sed -e '$d' -e 's/^#   //' >"$spire_values"
grep -q '^  templates:$' "$spire_values" || {
  log "found no sidecarInjectorWebhook.templates block in the header of $CHART_VALUES"
  exit 1
}
"$HELM" template istiod "$OUT/charts/istio-discovery" --namespace istio-system \
  --values "$spire_values" --values "$src/values.yaml" \
  --show-only templates/configmap.yaml --show-only templates/istiod-injector-configmap.yaml \
  >"$OUT/configmaps.yaml.part"
mv "$OUT/configmaps.yaml.part" "$OUT/configmaps.yaml"
log "rendered $OUT/configmaps.yaml with the spire templates of $CHART_VALUES"
