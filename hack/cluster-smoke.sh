#!/usr/bin/env bash
# Cluster smoke test: installs the mesh-admission chart into a real cluster and checks what the webhook does.
#
# THIS CANNOT RUN IN THIS PROJECT'S CI: CI has no Kubernetes cluster and no container engine. It is for
# users and developers who have one (kind, or any cluster your kubeconfig points at). It changes that
# cluster: it installs a cluster-wide admission webhook (removed again on exit, see "Clean-up").
#
# Prerequisites
#   - kubectl and helm on PATH (or in .tools/bin, where hack/install-tools.sh puts them);
#   - a kubeconfig whose current context is the cluster to test;
#   - the image, one of:
#       IMAGE=registry/mesh-admission:tag   an image the cluster can pull (built from the Dockerfile), or
#       a kind cluster (context kind-NAME, or KIND_CLUSTER=NAME) with docker and kind on PATH: the image is
#       built from the Dockerfile and loaded with `kind load docker-image`;
#   - certificates: cert-manager, when its cert-manager.io/v1 API is present (certificates.mode=certManager);
#     otherwise secret mode with certificates from `mesh-admission certs` (MESH_ADMISSION_BIN, default
#     target/debug/mesh-admission, built with cargo when missing);
#   - optional: Flux's HelmRelease CRD (helmreleases.helm.toolkit.fluxcd.io) for the HelmRelease denial step,
#     which is skipped with a message without it. Istio and SPIRE are not needed: the checks read what the
#     webhook wrote into the objects (without the SPIFFE CSI driver the test pod just stays pending).
#
# What it does
#   1. builds and loads the image (kind) or uses IMAGE=;
#   2. installs the chart (`helm upgrade --install --wait`) in NAMESPACE, in cert-manager or secret mode,
#      and waits for the rollout and, with cert-manager, for the caBundle to be injected;
#   3. creates a namespace and checks that it got `istio-injection: enabled`;
#   4. applies a Deployment there and checks a created pod: labels `sidecar.istio.io/inject: "true"` and
#      `spire-managed-identity: "true"`, annotation `inject.istio.io/templates: sidecar,spire`, and the
#      `workload-socket` volume from the csi.spiffe.io CSI driver;
#   5. server-side dry-runs a Deployment with a bad `servicemesh.bigbang.dev/permissivePorts` annotation and,
#      when the CRD exists, a HelmRelease with a bad `servicemesh.bigbang.dev/port`, and checks the denials;
#   6. reads the server's /metrics through the API server's service proxy.
#   Clean-up (on any exit): deletes the test namespace, uninstalls the release and what the script created.
#
# Environment: NAMESPACE (mesh-system), RELEASE (mesh-admission), TEST_NAMESPACE (mesh-smoke-RANDOM),
#   IMAGE, KIND_CLUSTER, MESH_ADMISSION_BIN, TIMEOUT (seconds per wait, 180), KEEP=1 (skip the clean-up).
# Exit status: 0 when every check passed. Every wait and loop is bounded by TIMEOUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$PWD/.tools/bin" # your own kubectl/helm win; .tools/bin is the fallback

NAMESPACE="${NAMESPACE:-mesh-system}"
RELEASE="${RELEASE:-mesh-admission}"
TEST_NAMESPACE="${TEST_NAMESPACE:-mesh-smoke-$RANDOM}"
TIMEOUT="${TIMEOUT:-180}"
BIN="${MESH_ADMISSION_BIN:-target/debug/mesh-admission}"
CHART=charts/mesh-admission

passed=0
failed=0
created_namespace=""
created_test_namespace=""
created_secret=""
installed=""
work="$(mktemp -d)"

say() { printf '== %s\n' "$*"; }
pass() { printf '  ok: %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf '  FAIL: %s\n' "$*"; failed=$((failed + 1)); }
die() { printf 'cluster-smoke: %s\n' "$*" >&2; exit 2; }
expect_eq() { # expect_eq WHAT GOT WANT
  if [[ "$2" == "$3" ]]; then pass "$1 = \"$3\""; else fail "$1 = \"$2\", want \"$3\""; fi
}

cleanup() {
  local rc=$?
  if [[ "${KEEP:-}" == 1 ]]; then
    say "KEEP=1: leaving release $RELEASE in $NAMESPACE and namespace $TEST_NAMESPACE in place"
  else
    say "clean-up"
    if [[ -n "$created_test_namespace" ]]; then
      kubectl delete namespace "$TEST_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    fi
    if [[ -n "$installed" ]]; then
      helm uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout "${TIMEOUT}s" >/dev/null 2>&1 || true
    fi
    if [[ -n "$created_secret" ]]; then
      kubectl -n "$NAMESPACE" delete secret "$created_secret" --ignore-not-found >/dev/null 2>&1 || true
    fi
    if [[ -n "$created_namespace" ]]; then
      kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Retries a command every 2 s until it succeeds or TIMEOUT seconds pass.
retry() {
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 2
  done
}

# --- preflight --------------------------------------------------------------------------------
command -v kubectl >/dev/null || die "kubectl not found (run hack/install-tools.sh)"
command -v helm >/dev/null || die "helm not found (run hack/install-tools.sh)"
context="$(kubectl config current-context 2>/dev/null)" || die "no current kubeconfig context"
kubectl version --request-timeout=10s >/dev/null 2>&1 || die "cannot reach the cluster of context $context"
say "cluster: context $context"

# --- 1. image ---------------------------------------------------------------------------------
if [[ -n "${IMAGE:-}" ]]; then
  image="$IMAGE"
  say "image: $image (IMAGE=)"
else
  kind_cluster="${KIND_CLUSTER:-}"
  [[ -z "$kind_cluster" && "$context" == kind-* ]] && kind_cluster="${context#kind-}"
  [[ -n "$kind_cluster" ]] || die "not a kind cluster: set IMAGE= to an image the cluster can pull"
  command -v docker >/dev/null || die "docker not found (needed to build the image for kind; or set IMAGE=)"
  command -v kind >/dev/null || die "kind not found (needed to load the image; or set IMAGE=)"
  image="mesh-admission:smoke"
  say "image: building $image and loading it into kind cluster $kind_cluster"
  docker build -t "$image" .
  kind load docker-image "$image" --name "$kind_cluster"
fi
if [[ "$image" == *@* ]]; then
  image_args=(--set "image.repository=${image%@*}" --set "image.digest=${image#*@}")
else
  image_args=(--set "image.repository=${image%:*}" --set "image.tag=${image##*:}")
  [[ "${image##*/}" == *:* ]] || die "IMAGE must carry a tag or digest: $image"
fi

# --- 2. install -------------------------------------------------------------------------------
if ! kubectl get namespace "$NAMESPACE" >/dev/null 2>&1; then
  kubectl create namespace "$NAMESPACE" >/dev/null
  created_namespace="$NAMESPACE"
fi
if kubectl api-resources --api-group=cert-manager.io -o name 2>/dev/null | grep -q '^certificates\.'; then
  mode=certManager
  cert_args=(--set certificates.mode=certManager)
else
  mode=secret
  if [[ ! -x "$BIN" ]]; then
    say "building $BIN for \`mesh-admission certs\`"
    cargo build --quiet --locked --bin mesh-admission
  fi
  "$BIN" certs --service "$RELEASE" --namespace "$NAMESPACE" --out "$work/certs" >/dev/null
  secret="$RELEASE-smoke-tls"
  kubectl -n "$NAMESPACE" create secret tls "$secret" \
    --cert "$work/certs/tls.crt" --key "$work/certs/tls.key" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  created_secret="$secret"
  cert_args=(--set certificates.mode=secret --set "certificates.secret.name=$secret"
    --set "certificates.secret.caBundle=$(base64 <"$work/certs/ca.crt" | tr -d '\n')")
fi
say "installing release $RELEASE in $NAMESPACE (certificates: $mode)"
installed=1
helm upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
  --set "fullnameOverride=$RELEASE" "${image_args[@]}" "${cert_args[@]}" \
  --wait --timeout "${TIMEOUT}s"
if kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE" --timeout="${TIMEOUT}s"; then
  pass "deployment/$RELEASE rolled out"
else
  fail "deployment/$RELEASE did not roll out"
  kubectl -n "$NAMESPACE" get pods -o wide || true
  exit 1
fi
ca_bundle_injected() {
  [[ -n "$(kubectl get mutatingwebhookconfiguration "$RELEASE" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" &&
    -n "$(kubectl get validatingwebhookconfiguration "$RELEASE" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]]
}
if retry ca_bundle_injected; then pass "webhook configurations carry a caBundle"; else fail "no caBundle after ${TIMEOUT}s"; fi

# --- 3. namespace label -----------------------------------------------------------------------
say "namespace $TEST_NAMESPACE"
# The first call may race the Service endpoints: retry the creation itself.
create_test_namespace() {
  kubectl get namespace "$TEST_NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$TEST_NAMESPACE" >/dev/null 2>&1
}
kubectl get namespace "$TEST_NAMESPACE" >/dev/null 2>&1 && die "namespace $TEST_NAMESPACE already exists: pick another TEST_NAMESPACE"
created_test_namespace="$TEST_NAMESPACE"
if retry create_test_namespace; then
  expect_eq "namespace $TEST_NAMESPACE label istio-injection" \
    "$(kubectl get namespace "$TEST_NAMESPACE" -o jsonpath='{.metadata.labels.istio-injection}')" enabled
else
  fail "could not create namespace $TEST_NAMESPACE"
fi

# --- 4. pod mutation --------------------------------------------------------------------------
say "deployment smoke in $TEST_NAMESPACE"
kubectl -n "$TEST_NAMESPACE" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
spec:
  replicas: 1
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
EOF
pod_name() { kubectl -n "$TEST_NAMESPACE" get pods -l app=smoke -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }
pod_exists() { [[ -n "$(pod_name)" ]]; }
if retry pod_exists; then
  pod="$(pod_name)"
  get() { kubectl -n "$TEST_NAMESPACE" get pod "$pod" -o jsonpath="$1"; }
  expect_eq "pod $pod label sidecar.istio.io/inject" "$(get '{.metadata.labels.sidecar\.istio\.io/inject}')" true
  expect_eq "pod $pod label spire-managed-identity" "$(get '{.metadata.labels.spire-managed-identity}')" true
  expect_eq "pod $pod annotation inject.istio.io/templates" \
    "$(get '{.metadata.annotations.inject\.istio\.io/templates}')" sidecar,spire
  expect_eq "pod $pod volume workload-socket csi driver" \
    "$(get '{.spec.volumes[?(@.name=="workload-socket")].csi.driver}')" csi.spiffe.io
  expect_eq "pod $pod volume workload-socket csi readOnly" \
    "$(get '{.spec.volumes[?(@.name=="workload-socket")].csi.readOnly}')" true
else
  fail "no pod of deployment smoke appeared within ${TIMEOUT}s"
  kubectl -n "$TEST_NAMESPACE" get events --sort-by=.lastTimestamp | tail -n 20 || true
fi

# --- 5. validation denials (server-side dry run: the webhooks run, nothing is stored) -----------
expect_denied() { # expect_denied WHAT NEEDLE... < manifest
  local what="$1" out needle
  shift
  if out="$(kubectl -n "$TEST_NAMESPACE" apply --dry-run=server -f - 2>&1)"; then
    fail "$what was admitted: $out"
    return
  fi
  for needle in "$@"; do
    if [[ "$out" != *"$needle"* ]]; then
      fail "$what denied, but the message lacks '$needle': $out"
      return
    fi
  done
  pass "$what denied: ${out//$'\n'/ }"
}
say "validation"
expect_denied "Deployment with permissivePorts 80,80a" "denied the request" \
  "servicemesh.bigbang.dev/permissivePorts" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke-bad
spec:
  replicas: 1
  selector:
    matchLabels: {app: smoke-bad}
  template:
    metadata:
      labels: {app: smoke-bad}
      annotations:
        servicemesh.bigbang.dev/permissivePorts: "80,80a"
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
EOF
if kubectl get crd helmreleases.helm.toolkit.fluxcd.io >/dev/null 2>&1; then
  versions="$(kubectl get crd helmreleases.helm.toolkit.fluxcd.io -o jsonpath='{.spec.versions[?(@.served==true)].name}')"
  hr_version=v2
  [[ " $versions " == *" v2 "* ]] || hr_version="${versions%% *}"
  expect_denied "HelmRelease ($hr_version) with servicemesh.bigbang.dev/port 80a" "denied the request" \
    'metadata.annotations[servicemesh.bigbang.dev/port]' '"80a"' <<EOF
apiVersion: helm.toolkit.fluxcd.io/$hr_version
kind: HelmRelease
metadata:
  name: smoke-bad
  annotations:
    servicemesh.bigbang.dev/expose: web
    servicemesh.bigbang.dev/host: web
    servicemesh.bigbang.dev/port: "80a"
spec:
  interval: 10m
  chart:
    spec:
      chart: web
      sourceRef: {kind: HelmRepository, name: web}
EOF
else
  say "SKIPPED: HelmRelease denial (CRD helmreleases.helm.toolkit.fluxcd.io not installed; install Flux to run it)"
fi

# --- 6. metrics -------------------------------------------------------------------------------
say "metrics"
if metrics="$(kubectl get --raw "/api/v1/namespaces/$NAMESPACE/services/http:$RELEASE:metrics/proxy/metrics" 2>&1)" &&
  [[ "$metrics" == *mesh_admission_requests_total* ]]; then
  pass "/metrics serves mesh_admission_requests_total"
else
  fail "/metrics through the service proxy: ${metrics:0:300}"
fi

echo
echo "cluster-smoke: $passed passed, $failed failed"
((failed == 0))
