// Builds istioctl for hack/istioctl-compare.sh (not part of the test suite). The Go module proxy
// serves istio.io/istio only as pseudo-versions (its release tags are not semver); this one is the
// master snapshot of 2026-08-27 (1.31 development), close to the CRDs in ../shared/crds.
module mesh-admission.local/istioctl

go 1.26.0

require istio.io/istio v0.0.0-20260827124520-eed52ebb66ad
