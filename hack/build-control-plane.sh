#!/usr/bin/env bash
# Builds the real control plane that the end-to-end tests start (DESIGN.md section 11), from Go modules:
#   .tools/control-plane/kube-apiserver   k8s.io/kubernetes          (hack/control-plane/kube-apiserver)
#   .tools/control-plane/etcd             go.etcd.io/etcd/server/v3  (hack/control-plane/etcd)
# Needs Go and the Go module proxy. The first build took 7 minutes on 2 cores, including about 0.8 GB
# of module downloads; later runs find the binaries with a stamp of the pinned versions and skip.
#
# Usage: hack/build-control-plane.sh      (OUT=/some/dir to build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned versions: bump them here and in the go.mod next to each main.go.
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
src=hack/control-plane
OUT="${OUT:-$PWD/.tools/control-plane}"

log() { printf 'build-control-plane: %s\n' "$*" >&2; }
pinned() { grep -q "^[[:space:]]*\(require \)\?$2 $3\$" "$src/$1/go.mod" || { log "$src/$1/go.mod does not pin $2 $3"; exit 1; }; }
pinned kube-apiserver k8s.io/kubernetes "$KUBE_VERSION"
pinned etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"

stamp="$OUT/.stamp"
pins() { echo "kube-apiserver $KUBE_VERSION, etcd $ETCD_VERSION, $(cat "$src"/*/go.mod "$src"/*/main.go | sha256sum | cut -c1-16)"; }
want="$(pins)"
if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  log "present in $OUT ($want)"
  exit 0
fi

mkdir -p "$OUT"
rm -f "$stamp"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
version_pkg=k8s.io/component-base/version
build() { # NAME LDFLAGS
  log "building $1 (go $(go env GOVERSION))"
  go -C "$src/$1" build -trimpath -ldflags "-s -w $2" -o "$OUT/$1.part" .
  mv "$OUT/$1.part" "$OUT/$1"
}
start=$SECONDS
build kube-apiserver "-X $version_pkg.gitVersion=$KUBE_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
build etcd ""
# The build may complete go.mod and writes go.sum: stamp what was built.
pins >"$stamp"
log "built in $((SECONDS - start)) s: $("$OUT/kube-apiserver" --version), etcd $("$OUT/etcd" --version | sed -n 's/^etcd Version: //p')"
