#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit, integration and doc tests.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test (unit, integration over real TLS sockets, doc tests)"
cargo test --locked --all-targets
cargo test --locked --doc
