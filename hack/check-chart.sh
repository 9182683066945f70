#!/usr/bin/env bash
# Checks the Helm chart (charts/mesh-admission) the way CI does, with no cluster:
#   1. installs helm, kubernetes-validate & co. into .tools/ (hack/install-tools.sh, skipped when present);
#   2. `helm lint --strict` with the default values and with each certificate mode, and checks that secret
#      mode without its Secret name or caBundle fails with a clear message;
#   3. `helm template` for several scenarios (cert-manager defaults; secret mode; a custom namespace with
#      custom excludedNamespaces, failurePolicy Ignore and the ServiceMonitor; the kube-system namespace);
#   4. validates every rendered object (hack/check_chart.py): built-in kinds with kubernetes-validate in
#      strict mode (unknown fields fail) against each of K8S_VERSIONS; cert-manager Issuer/Certificate and
#      the Prometheus Operator ServiceMonitor with the small JSON schemas of hack/check_chart.py; any other
#      kind is a failure, never skipped; then checks the chart's own invariants (security context, probes,
#      ports, selectors, certificate wiring);
#   5. compares both webhook configurations (selectors, rules, matchConditions) with `mesh-admission
#      webhook-config` output, ignoring metadata.labels, metadata.annotations and caBundle, after
#      normalising both to JSON with sorted keys: the binary is the one source of the shape.
#
# Environment:
#   MESH_ADMISSION_BIN            the binary (default target/debug/mesh-admission; built when missing)
#   K8S_VERSIONS                  Kubernetes versions to validate against (default "1.30.0 1.35.0")
# Exit status: 0 when everything passed, 1 otherwise. Needs no network but the registries of install-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"
PY="$PWD/.tools/venv/bin/python"
CHART=charts/mesh-admission
RELEASE=mesh-admission
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.35.0}"
BIN="${MESH_ADMISSION_BIN:-target/debug/mesh-admission}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }

# --- the binary and a CA certificate for the caBundle ------------------------------------------
if [[ ! -x "$BIN" && -z "${MESH_ADMISSION_BIN:-}" ]]; then
  echo "== building $BIN (cargo build --locked --bin mesh-admission)"
  cargo build --quiet --locked --bin mesh-admission
fi
if [[ -x "$BIN" ]] && "$BIN" certs --service "$RELEASE" --namespace mesh-system --out "$work/certs" >/dev/null 2>&1 \
  && [[ -s "$work/certs/ca.crt" ]]; then
  echo "== CA for caBundle: generated with $BIN certs"
else
  echo "== CA for caBundle: a placeholder PEM ($BIN certs unavailable)"
  mkdir -p "$work/certs"
  printf -- '-----BEGIN CERTIFICATE-----\nbWVzaC1hZG1pc3Npb24gY2hlY2stY2hhcnQgcGxhY2Vob2xkZXI=\n-----END CERTIFICATE-----\n' \
    >"$work/certs/ca.crt"
fi
CA_FILE="$work/certs/ca.crt"
CA_B64="$(base64 -w0 <"$CA_FILE")"

# --- 2. lint -----------------------------------------------------------------------------------
lint() {
  local what="$1"
  shift
  echo "== helm lint --strict ($what)"
  if ! helm lint --strict "$CHART" "$@" >"$work/lint.log" 2>&1; then
    cat "$work/lint.log"
    fail "helm lint --strict ($what)"
  fi
}
lint "default values"
lint "certificates.mode=certManager" --set certificates.mode=certManager
lint "certificates.mode=secret" --set certificates.mode=secret \
  --set certificates.secret.name=mesh-admission-tls --set "certificates.secret.caBundle=$CA_B64"
lint "serviceMonitor.enabled" --set serviceMonitor.enabled=true

# Every key of values.yaml is documented: a comment line right above each top-level key and each key nested
# up to two levels (the contents of the free-form resources/securityContext examples excepted).
echo "== values.yaml documentation"
if ! "$PY" hack/check_values_docs.py "$CHART/values.yaml"; then
  fail "values.yaml has undocumented keys"
fi

# Secret mode without what it needs must fail, naming the missing value.
expect_render_failure() {
  local want="$1"
  shift
  if helm template "$RELEASE" "$CHART" --namespace mesh-system "$@" >"$work/neg.log" 2>&1; then
    fail "helm template $* rendered, but should fail naming $want"
  elif ! grep -qF -- "$want" "$work/neg.log"; then
    cat "$work/neg.log"
    fail "helm template $* failed without naming $want"
  else
    echo "== render refused as expected, naming $want"
  fi
}
expect_render_failure certificates.secret.name --set certificates.mode=secret \
  --set "certificates.secret.caBundle=$CA_B64"
expect_render_failure certificates.secret.caBundle --set certificates.mode=secret \
  --set certificates.secret.name=mesh-admission-tls

# --- 3. render the scenarios -------------------------------------------------------------------
cat >"$work/custom-values.yaml" <<'EOF'
failurePolicy: Ignore
config:
  excludedNamespaces: [kube-system, istio-system, tenant-shared]
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
EOF
scenarios=()
render() {
  # render NAME NAMESPACE FAILURE_POLICY CERT_MODE EXCLUDED [helm args...]
  # EXCLUDED: the configured excludedNamespaces, comma-separated, or "default".
  local name="$1" ns="$2" fp="$3" mode="$4" excluded="$5"
  shift 5
  echo "== helm template $name (namespace $ns, failurePolicy $fp, certificates $mode)"
  if helm template "$RELEASE" "$CHART" --namespace "$ns" "$@" >"$work/$name.yaml" 2>"$work/$name.err"; then
    scenarios+=("$name|$ns|$fp|$mode|$excluded|$work/$name.yaml")
  else
    cat "$work/$name.err"
    fail "helm template $name"
  fi
}
render defaults mesh-system Fail certManager default
render secret mesh-system Fail secret default --set certificates.mode=secret \
  --set certificates.secret.name=mesh-admission-tls --set "certificates.secret.caBundle=$CA_B64"
render custom platform-admission Ignore certManager kube-system,istio-system,tenant-shared -f "$work/custom-values.yaml"
# The PEM given as is (the chart encodes it), in kube-system (listed once among the exclusions).
render kube-system kube-system Fail secret default --set certificates.mode=secret \
  --set certificates.secret.name=webhook-tls --set-file "certificates.secret.caBundle=$CA_FILE"

# --- 4 + 5. validate and compare (hack/check_chart.py) -------------------------------------------
echo "== validating and comparing"
if ! K8S_VERSIONS="$K8S_VERSIONS" BIN="$BIN" CA_FILE="$CA_FILE" CA_B64="$CA_B64" \
  "$PY" hack/check_chart.py "${scenarios[@]}"; then
  fail "validation/comparison (see above)"
fi

if ((failures > 0)); then
  echo "check-chart: FAILED ($failures failing step(s))"
  exit 1
fi
echo "check-chart: all checks passed"
