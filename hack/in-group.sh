#!/usr/bin/env bash
# Runs COMMAND in a process group of its own (setsid) and returns its exit status. The benchmarks use
# it: stopping the group by its id stops etcd, the apiserver and whatever the test started, even
# when the test is killed before its own clean-up (Ctrl-C, SIGTERM, a failed run).
#
#   bash hack/in-group.sh COMMAND [ARGS...]
set -euo pipefail
[ "$#" -gt 0 ] || { echo "in-group: usage: hack/in-group.sh COMMAND [ARGS...]" >&2; exit 2; }

setsid "$@" &
group=$!
# kube-apiserver can hang on SIGTERM once etcd is gone, so the group gets SIGKILL (what the tests'
# own clean-up sends) if it is still there 5 s after the SIGTERM.
stop_group() {
  kill -TERM -- "-$group" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 -- "-$group" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$group" 2>/dev/null || true
}
trap 'stop_group; exit 130' INT
trap 'stop_group; exit 143' TERM
status=0
wait "$group" || status=$?
trap - INT TERM
# A test that failed has stopped its processes already, unless it was killed: make sure.
if [ "$status" -ne 0 ]; then
  stop_group
fi
exit "$status"
