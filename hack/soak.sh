#!/usr/bin/env bash
# Soak and fault test of `mesh-admission serve` on 127.0.0.1: the ignored test tests/soak.rs (its header
# lists the checks and the SOAK_* variables; default SOAK_SECONDS=600). Not part of hack/test.sh.
#   SOAK_SECONDS=45 SOAK_ROTATE_SECONDS=15 SOAK_WARMUP_SECONDS=15 hack/soak.sh   # a short run
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --test soak -- --ignored --nocapture
