#!/usr/bin/env bash
# `mesh-admission graph` on the synthetic mesh of benches/graph/input.rs (50 namespaces of 10
# Deployments: 500 workloads, 1,000 NetworkPolicies, 1,000 AuthorizationPolicies), and IBM's nca
# (`nca --connectivity`, hack/install-tools.sh) on the same file beside it: wall time and peak RSS of
# each, from /usr/bin/time. Figures go to stdout and target/bench-graph/results.md.
#
#   bash hack/bench-graph.sh [NAMESPACES [PER_NAMESPACE]]
#
# Environment: NCA_TIMEOUT (seconds nca may take, default 900; it is stopped after that and the row
# says so). The builds are this checkout's release binary and example graph_input.
set -euo pipefail
cd "$(dirname "$0")/.."

namespaces=${1:-50}
per_namespace=${2:-10}
nca_timeout=${NCA_TIMEOUT:-900}
out_dir=target/bench-graph
mkdir -p "$out_dir"
[[ -x .tools/bin/nca ]] || { echo "bench-graph: .tools/bin/nca is missing: run bash hack/install-tools.sh" >&2; exit 2; }

cargo build --release --quiet --bin mesh-admission --example graph_input
input="$out_dir/mesh.yaml"
target/release/examples/graph_input "$namespaces" "$per_namespace" >"$input"

results="$out_dir/results.md"
{
  echo "| command | wall s | peak RSS MiB | output bytes |"
  echo "| --- | --- | --- | --- |"
} >"$results"

# measure NAME COMMAND...: runs COMMAND under /usr/bin/time, output to a file; one row per command.
measure() {
  local name=$1
  shift
  local status=0
  /usr/bin/time -f '%e %M' -o "$out_dir/time" "$@" >"$out_dir/out" 2>"$out_dir/err" || status=$?
  local secs kib
  read -r secs kib <"$out_dir/time" || true
  local note=""
  [[ $status -eq 124 ]] && note=" (stopped after ${nca_timeout} s)"
  [[ $status -ne 0 && $status -ne 124 ]] && note=" (exit $status)"
  printf '| %s%s | %s | %s | %s |\n' "$name" "$note" "$secs" "$((kib / 1024))" "$(wc -c <"$out_dir/out")" | tee -a "$results"
}

bin=target/release/mesh-admission
measure "graph -o json" "$bin" graph -f "$input" -o json
measure "graph -o json --no-generated" "$bin" graph -f "$input" -o json --no-generated
measure "graph (table)" "$bin" graph -f "$input"
measure "graph -o svg --from team-0" "$bin" graph -f "$input" -o svg --from team-0 --no-generated
measure "nca --connectivity" timeout "$nca_timeout" .tools/bin/nca --connectivity "$input" \
  --resource_list "$input" --output_format txt_no_fw_rules
echo "bench-graph: $(grep -c '^kind: Deployment' "$input") workloads, $(grep -c '^kind: NetworkPolicy' "$input") NetworkPolicies, $(grep -c '^kind: AuthorizationPolicy' "$input") AuthorizationPolicies; results in $results" >&2
