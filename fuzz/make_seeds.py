#!/usr/bin/env python3
"""Adds the starting inputs to fuzz/corpus/<target>/ (PyYAML needed; run from anywhere).

Sources: hack/samples/*.json (AdmissionReviews as kube-apiserver sends them), tests/fixtures/*.yaml
(objects, wrapped here as the apiserver would wrap them), the examples of Contrast's service-mesh docs
(shared/seeds/contrast-service-mesh.md, copied here so the repository has them), and the string literals of
the unit tests of the grammars. Files are named by content hash, so re-running adds nothing twice;
`cargo fuzz cmin` afterwards keeps only what adds coverage.
"""

import glob
import hashlib
import json
import os
import re

import yaml

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "corpus")

# Must match fuzz_support::KINDS (the kinds table of src/policy/kinds.rs in its order, then the two
# extras) and NAMESPACES.
KINDS = [
    ("", "v1", "Namespace"),
    ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
    ("", "v1", "Pod"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("apps", "v1", "ReplicaSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
    ("", "v1", "ReplicationController"),
    ("security.istio.io", "v1", "AuthorizationPolicy"),
    ("security.istio.io", "v1", "PeerAuthentication"),
    ("networking.istio.io", "v1", "DestinationRule"),
    ("networking.istio.io", "v1", "VirtualService"),
    ("networking.istio.io", "v1", "Gateway"),
    ("helm.toolkit.fluxcd.io", "v2beta1", "HelmRelease"),
    ("", "v1", "ConfigMap"),
]
NAMESPACES = ["apps", "payments", "", "kube-system", "istio-system", "mesh-system"]

# The examples of seeds/contrast-service-mesh.md, exactly as written there.
CONTRAST_DOC = [
    "<name>#<port>#false",
    "<name>#<port>#true",
    "web#8080#false##metrics#7890#true",
    "<name>#<chosen IP>:<chosen port>#<original-hostname-or-ip>:<original-port>",
    "billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080",
]
CONTRAST_DEPLOYMENTS = [
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "runtimeClassName": "contrast-cc",
                    "initContainers": [
                        {
                            "name": "initializer",
                            "image": "ghcr.io/edgelesssys/contrast/initializer@sha256:...",
                            "env": [{"name": "COORDINATOR_HOST", "value": "coordinator"}],
                            "volumeMounts": [{"name": "tls-certs", "mountPath": "/tls-config"}],
                        },
                        {
                            "name": "sidecar",
                            "image": "ghcr.io/edgelesssys/contrast/service-mesh-proxy@sha256:...",
                            "restartPolicy": "Always",
                            "volumeMounts": [{"name": "tls-certs", "mountPath": "/tls-config"}],
                            "env": [{"name": "EDG_INGRESS_PROXY_CONFIG", "value": "web#8080#false##metrics#7890#true"}],
                            "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
                        },
                    ],
                    "containers": [
                        {
                            "name": "web-svc",
                            "image": "ghcr.io/edgelesssys/frontend:v1.2.3@...",
                            "ports": [
                                {"containerPort": 8080, "name": "web"},
                                {"containerPort": 7890, "name": "metrics"},
                            ],
                            "volumeMounts": [{"name": "tls-certs", "mountPath": "/tls-config"}],
                        }
                    ],
                    "volumes": [{"name": "tls-certs", "emptyDir": {}}],
                }
            },
        },
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "runtimeClassName": "contrast-cc",
                    "initContainers": [
                        {
                            "name": "initializer",
                            "image": "ghcr.io/edgelesssys/contrast/initializer@sha256:...",
                            "env": [{"name": "COORDINATOR_HOST", "value": "coordinator"}],
                            "volumeMounts": [{"name": "tls-certs", "mountPath": "/tls-config"}],
                        },
                        {
                            "name": "sidecar",
                            "image": "ghcr.io/edgelesssys/contrast/service-mesh-proxy@sha256:...",
                            "restartPolicy": "Always",
                            "volumeMounts": [{"name": "tls-certs", "mountPath": "/tls-config"}],
                            "env": [
                                {
                                    "name": "EDG_EGRESS_PROXY_CONFIG",
                                    "value": (
                                        "billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080"
                                    ),
                                }
                            ],
                            "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
                        },
                    ],
                    "containers": [
                        {
                            "name": "currency-conversion",
                            "image": "ghcr.io/edgelesssys/conversion:v1.2.3@...",
                            "volumeMounts": [{"name": "tls-certs", "mountPath": "/tls-config"}],
                        }
                    ],
                    "volumes": [{"name": "tls-certs", "emptyDir": {}}],
                }
            },
        },
    },
]


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def flatten(doc):
    if doc is None:
        return []
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
        return [o for item in doc["items"] for o in flatten(item)]
    return [doc]


def gvk(obj):
    api = obj.get("apiVersion", "v1")
    group, _, version = api.rpartition("/")
    return group, version, obj.get("kind", "")


def review(obj, operation="CREATE", namespace="apps"):
    group, version, kind = gvk(obj)
    req = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "name": obj.get("metadata", {}).get("name", ""),
        "operation": operation,
        "userInfo": {"username": "admin"},
        "object": obj,
        "dryRun": False,
    }
    if kind != "Namespace":
        req["namespace"] = obj.get("metadata", {}).get("namespace", namespace)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def object_seed(obj):
    group, version, kind = gvk(obj)
    idx = next((i for i, k in enumerate(KINDS) if k == (group, version, kind)), None)
    if idx is None:
        # Same kind name in another group (the Gateway API's Gateway) is not ours: the unread kind.
        idx = next((i for i, k in enumerate(KINDS) if k[:1] + k[2:] == (group, kind)), len(KINDS) - 1)
    ns = obj.get("metadata", {}).get("namespace", "apps")
    ns_idx = NAMESPACES.index(ns) if ns in NAMESPACES else 0
    # review_object: byte 0 holds the kind's low 4 bits, byte 1 its high bits above the namespace.
    return bytes([idx & 0x0F, ns_idx | (idx >> 4) << 4]) + json.dumps(obj, separators=(",", ":")).encode()


def main():
    objects = []
    for path in sorted(glob.glob(os.path.join(ROOT, "hack/samples/*.json"))):
        raw = open(path, "rb").read()
        write("review_body", raw)
        body = json.loads(raw)
        objects.append(body["request"]["object"])
    fixtures = glob.glob(os.path.join(ROOT, "tests/fixtures/*.yaml"))
    fixtures += glob.glob(os.path.join(ROOT, "tests/fixtures/istio/**/*.yaml"), recursive=True)
    for path in sorted(fixtures):
        for doc in yaml.safe_load_all(open(path)):
            objects.extend(flatten(doc))
    objects.extend(CONTRAST_DEPLOYMENTS)
    for obj in objects:
        write("review_body", json.dumps(review(obj), separators=(",", ":")))
        write("review_object", object_seed(obj))
    # A few envelope variants: UPDATE, DELETE, an old apiVersion of the review, no object.
    first = review(objects[0])
    for op in ["UPDATE", "DELETE", "CONNECT"]:
        v = json.loads(json.dumps(first))
        v["request"]["operation"] = op
        write("review_body", json.dumps(v))
    v = json.loads(json.dumps(first))
    v["apiVersion"] = "admission.k8s.io/v1beta1"
    del v["request"]["object"]
    write("review_body", json.dumps(v))

    literals = set(CONTRAST_DOC) | {"db#10.0.0.1:5432#db:5432", ""}
    tests = open(os.path.join(ROOT, "src/policy/contrast_tests.rs")).read()
    literals |= {
        s for s in re.findall(r'"((?:[^"\\]|\\.)*)"', tests) if "#" in s and "{" not in s and "must be" not in s
    }
    for s in sorted(literals):
        write("contrast", s)

    words = set()
    for f in ["src/policy/syntax.rs", "src/policy/helmrelease_tests.rs", "src/policy/podtemplate_tests.rs"]:
        text = open(os.path.join(ROOT, f)).read()
        words |= {s for s in re.findall(r'"((?:[^"\\]|\\.)*)"', text) if len(s) <= 80 and "\\" not in s}
    words |= {
        "80",
        "8080",
        "80,,80",
        " 80 , 8080",
        "STRICT",
        "permissive",
        "podinfo",
        "podinfo.apps",
        "*.apps",
        "https://grafana.example:443/x",
        "mtlsmode",
        "expsoe",
        "1",
        "t",
        "TRUE",
        "False",
    }
    for s in sorted(words):
        write("syntax", s)


if __name__ == "__main__":
    main()
