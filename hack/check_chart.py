"""Validates rendered chart objects and compares the webhook configurations (called by hack/check-chart.sh).

Usage: check_chart.py SCENARIO...; each SCENARIO is NAME|NAMESPACE|FAILURE_POLICY|CERT_MODE|EXCLUDED|RENDERED_YAML.
Environment: K8S_VERSIONS, BIN (the mesh-admission binary), CA_FILE and CA_B64 (the CA given to the chart).
Exit status: 1 when a check failed, 0 otherwise.
"""

import base64
import copy
import difflib
import json
import os
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSIONS = os.environ["K8S_VERSIONS"].split()
BIN = os.environ["BIN"]
CA_FILE = os.environ["CA_FILE"]
CA_B64 = os.environ["CA_B64"]
SERVICE = "mesh-admission"
DEFAULT_EXCLUDED = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
    "spire-system",
    "spire-server",
    "mesh-system",
]
CONFIG_KEYS = {
    "excludedNamespaces",
    "csiDriver",
    "workloadSocketVolume",
    "defaultTemplates",
    "spireTemplate",
    "spireGatewayTemplate",
    "gatewayTemplate",
    "spireIdentityLabel",
    "namespaceLabel",
    "maxBodyBytes",
}
CLUSTER_SCOPED = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"}

failures = []
stats = {"rendered": 0, "k8s-schema": 0, "crd-schema": 0, "compared-cli": 0}


def fail(msg):
    failures.append(msg)
    print(f"  FAIL: {msg}")


def ok(msg):
    print(f"  ok: {msg}")


def check(cond, msg):
    if cond:
        ok(msg)
    else:
        fail(msg)
    return cond


# --- JSON schemas for the custom resources (kubernetes-validate only knows built-in kinds) -----
DNS1123 = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
STR = {"type": "string", "minLength": 1}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": DNS1123, "maxLength": 253},
        "namespace": {"type": "string", "pattern": DNS1123, "maxLength": 63},
        "labels": STRMAP,
        "annotations": STRMAP,
    },
}
ISSUER_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": {"const": "cert-manager.io"}},
}
PRIVATE_KEY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
        "size": {"type": "integer"},
        "encoding": {"enum": ["PKCS1", "PKCS8"]},
        "rotationPolicy": {"enum": ["Never", "Always"]},
    },
}
USAGES = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
]


def cr_schema(api_version, kind, spec):
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


CR_SCHEMAS = {
    # cert-manager.io/v1 (fields this chart may use; any other field is an error, like strict mode).
    ("cert-manager.io/v1", "Issuer"): cr_schema(
        "cert-manager.io/v1",
        "Issuer",
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"crlDistributionPoints": {"type": "array"}},
                },
                "ca": {
                    "type": "object",
                    "required": ["secretName"],
                    "additionalProperties": False,
                    "properties": {"secretName": STR},
                },
            },
        },
    ),
    ("cert-manager.io/v1", "Certificate"): cr_schema(
        "cert-manager.io/v1",
        "Certificate",
        {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "anyOf": [{"required": ["commonName"]}, {"required": ["dnsNames"]}],
            "properties": {
                "secretName": {"type": "string", "pattern": DNS1123},
                "issuerRef": ISSUER_REF,
                "isCA": {"type": "boolean"},
                "commonName": STR,
                "dnsNames": {"type": "array", "minItems": 1, "items": STR},
                "duration": {"type": "string", "pattern": DURATION},
                "renewBefore": {"type": "string", "pattern": DURATION},
                "usages": {"type": "array", "items": {"enum": USAGES}},
                "privateKey": PRIVATE_KEY,
            },
        },
    ),
    # monitoring.coreos.com/v1
    ("monitoring.coreos.com/v1", "ServiceMonitor"): cr_schema(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": STRMAP, "matchExpressions": {"type": "array"}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STR}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": STR,
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    ),
}


def pem_of(b64):
    """The PEM text a caBundle carries, whitespace removed (None when it is not base64)."""
    try:
        return b"".join(base64.b64decode(b64, validate=True).split())
    except ValueError:
        return None


def kn(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_object(obj):
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CR_SCHEMAS:
        errors = sorted(jsonschema.Draft202012Validator(CR_SCHEMAS[key]).iter_errors(obj), key=str)
        for e in errors:
            fail(f"{kn(obj)}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message} [chart CR schema]")
        if not errors:
            ok(f"{kn(obj)}: valid ({key[0]} schema in hack/check_chart.py)")
        stats["crd-schema"] += 1
        return
    good = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            good.append(version)
        except kubernetes_validate.SchemaNotFoundError as e:
            fail(f"{kn(obj)}: no schema to validate it with ({e.message})")
            return
        except kubernetes_validate.ValidationError as e:
            path = "/".join(map(str, e.absolute_path)) or "(root)"
            fail(f"{kn(obj)}: {path}: {e.message} [kubernetes-validate --strict {version}]")
    if len(good) == len(K8S_VERSIONS):
        ok(f"{kn(obj)}: valid (kubernetes-validate --strict {', '.join(good)})")
    stats["k8s-schema"] += 1


def normalise(obj):
    """The comparable part: everything but metadata.labels, metadata.annotations and caBundle."""
    obj = copy.deepcopy(obj)
    obj.get("metadata", {}).pop("labels", None)
    obj.get("metadata", {}).pop("annotations", None)
    for hook in obj.get("webhooks") or []:
        (hook.get("clientConfig") or {}).pop("caBundle", None)
    return json.dumps(obj, sort_keys=True, indent=1)


def compare(what, chart_objs, other_objs):
    """Compares the two webhook configuration kinds of chart_objs and other_objs; True when equal."""
    equal = True
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        mine = [o for o in chart_objs if o.get("kind") == kind]
        theirs = [o for o in other_objs if o.get("kind") == kind]
        if len(mine) != 1 or len(theirs) != 1:
            fail(f"{kind}: chart has {len(mine)}, {what} has {len(theirs)} (want 1 each)")
            equal = False
            continue
        a, b = normalise(mine[0]), normalise(theirs[0])
        if a == b:
            ok(f"{kind}: chart == {what} (labels, annotations, caBundle ignored)")
        else:
            diff = "\n".join(difflib.unified_diff(b.splitlines(), a.splitlines(), what, "chart", lineterm=""))
            fail(f"{kind}: chart != {what}:\n{diff}")
            equal = False
    extra = [
        kn(o)
        for o in other_objs
        if o.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    ]
    if extra:
        fail(f"{what} printed unexpected objects: {extra}")
        equal = False
    return equal


def cli_webhook_config(ns, fp, config_file, cli_help):
    args = [
        BIN,
        "webhook-config",
        "--service",
        SERVICE,
        "--namespace",
        ns,
        "--ca-bundle",
        CA_FILE,
        "--failure-policy",
        fp,
    ]
    if config_file and "--config" in cli_help:
        args += ["--config", config_file]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        fail(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return None
    return [d for d in yaml.safe_load_all(proc.stdout) if d], " ".join(args)


# --- the chart's own invariants -------------------------------------------------------------------
def chart_invariants(objs, ns, mode, fullname):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != ns:
            fail(f"{kn(o)}: metadata.namespace is {o['metadata'].get('namespace')!r}, want {ns!r}")
    deployments = by_kind["Deployment"]
    webhook_deps = [d for d in deployments if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "serve"]
    controller_deps = [
        d for d in deployments if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "controller"
    ]
    check(
        len(webhook_deps) == 1 and len(controller_deps) == 1 and len(deployments) == 2,
        "Deployments: one webhook (serve) and one controller",
    )
    (dep,) = webhook_deps[:1]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(spec["replicas"] == 2, "Deployment: 2 replicas")
    check(
        psc.get("runAsNonRoot") is True
        and psc.get("runAsUser") == 65532
        and csc.get("runAsNonRoot") is True
        and csc.get("runAsUser") == 65532,
        "Deployment: runAsNonRoot with numeric user 65532",
    )
    check(csc.get("readOnlyRootFilesystem") is True, "Deployment: readOnlyRootFilesystem")
    check(
        csc.get("allowPrivilegeEscalation") is False and csc.get("capabilities", {}).get("drop") == ["ALL"],
        "Deployment: no privilege escalation, all capabilities dropped",
    )
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "Deployment: seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, "Deployment: no service account token mounted")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe")}
    check(
        ports.get(probes["livenessProbe"].get("port")) == 9090
        and probes["livenessProbe"].get("path") == "/healthz"
        and ports.get(probes["readinessProbe"].get("port")) == 9090
        and probes["readinessProbe"].get("path") == "/readyz",
        "Deployment: probes GET /healthz and /readyz on the admin port 9090",
    )
    args = c["args"]
    want_pairs = {
        "--listen": "0.0.0.0:8443",
        "--admin-listen": "0.0.0.0:9090",
        "--log-format": "json",
        "--tls-cert": "/certs/tls.crt",
        "--tls-key": "/certs/tls.key",
    }
    got_pairs = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    check(
        args[0] == "serve" and all(got_pairs.get(k) == v for k, v in want_pairs.items()),
        f"Deployment: args serve {' '.join(f'{k} {v}' for k, v in want_pairs.items())}",
    )
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    cert_secret = vols.get(mounts.get("/certs"), {}).get("secret", {}).get("secretName")
    config_path = got_pairs.get("--config", "")
    config_dir, config_key = os.path.split(config_path)
    cm_name = vols.get(mounts.get(config_dir), {}).get("configMap", {}).get("name")
    cms = [o for o in by_kind.get("ConfigMap", []) if o["metadata"]["name"] == cm_name]
    if check(
        len(cms) == 1 and config_key in cms[0].get("data", {}),
        f"Deployment: --config {config_path} is key {config_key} of ConfigMap {cm_name}",
    ):
        cfg = yaml.safe_load(cms[0]["data"][config_key])
        check(set(cfg) <= CONFIG_KEYS, f"ConfigMap: only configuration keys of DESIGN.md section 6 ({sorted(cfg)})")
    anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    check(
        any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in anti),
        "Deployment: preferred pod anti-affinity on kubernetes.io/hostname",
    )
    if controller_deps:
        controller_invariants(controller_deps[0], objs, by_kind, ns, pod_labels, pod)
    (svc,) = by_kind["Service"]
    sel = svc["spec"]["selector"]
    check(all(pod_labels.get(k) == v for k, v in sel.items()), "Service: selector matches the pods")
    sports = {p["name"]: p for p in svc["spec"]["ports"]}
    check(
        sports.get("https", {}).get("port") == 443 and ports.get(sports["https"]["targetPort"]) == 8443,
        "Service: https 443 -> container 8443",
    )
    check(
        sports.get("metrics", {}).get("port") == 9090 and ports.get(sports["metrics"]["targetPort"]) == 9090,
        "Service: metrics 9090 -> container 9090",
    )
    (pdb,) = by_kind["PodDisruptionBudget"]
    check(
        pdb["spec"].get("minAvailable") == 1
        and all(pod_labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()),
        "PodDisruptionBudget: minAvailable 1 over the pods",
    )
    for sm in by_kind.get("ServiceMonitor", []):
        check(
            all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
            and all(e["port"] in sports for e in sm["spec"]["endpoints"]),
            "ServiceMonitor: selects the Service and a named Service port",
        )
    hooks = by_kind["MutatingWebhookConfiguration"] + by_kind["ValidatingWebhookConfiguration"]
    if mode == "certManager":
        certs = {o["metadata"]["name"]: o for o in by_kind.get("Certificate", [])}
        issuers = {o["metadata"]["name"]: o for o in by_kind.get("Issuer", [])}
        inject = {h["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") for h in hooks}
        check(len(inject) == 1 and None not in inject, f"webhooks: cert-manager.io/inject-ca-from {inject}")
        target = next(iter(inject)) or "/"
        cert = certs.get(target.split("/", 1)[1]) if target.split("/", 1)[0] == ns else None
        if check(cert is not None, f"webhooks: inject-ca-from names the rendered Certificate {target}"):
            dns = cert["spec"].get("dnsNames", [])
            check(f"{fullname}.{ns}.svc" in dns, f"Certificate {target}: covers {fullname}.{ns}.svc")
            check(
                cert["spec"]["secretName"] == cert_secret,
                f"Certificate {target}: its Secret {cert['spec']['secretName']} is mounted at /certs",
            )
        for c_ in certs.values():
            ref = c_["spec"]["issuerRef"]["name"]
            check(ref in issuers, f"Certificate {c_['metadata']['name']}: Issuer {ref} is rendered")
        for i_ in issuers.values():
            if "ca" in i_["spec"]:
                s = i_["spec"]["ca"]["secretName"]
                check(
                    any(c_["spec"]["secretName"] == s and c_["spec"].get("isCA") for c_ in certs.values()),
                    f"Issuer {i_['metadata']['name']}: CA Secret {s} comes from a CA Certificate",
                )
        check(
            all("caBundle" not in w["clientConfig"] for h in hooks for w in h["webhooks"]),
            "webhooks: no caBundle (cainjector fills it)",
        )
    else:
        check(
            not any(h["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") for h in hooks),
            "webhooks: no cert-manager annotation in secret mode",
        )
        check(not by_kind.get("Certificate") and not by_kind.get("Issuer"), "no cert-manager objects in secret mode")
        bundles = {pem_of(w["clientConfig"].get("caBundle", "")) for h in hooks for w in h["webhooks"]}
        check(bundles == {pem_of(CA_B64)}, "webhooks: caBundle is the base64 of the given CA PEM")


def controller_invariants(dep, objs, by_kind, ns, webhook_pod_labels, webhook_pod):
    """The controller Deployment and its least-privilege RBAC (DESIGN.md sections 8 and 9)."""
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(spec["replicas"] == 2, "controller Deployment: 2 replicas")
    check(
        psc.get("runAsNonRoot") is True
        and csc.get("readOnlyRootFilesystem") is True
        and csc.get("allowPrivilegeEscalation") is False
        and csc.get("capabilities", {}).get("drop") == ["ALL"],
        "controller Deployment: non-root, read-only root FS, no privilege escalation, no capabilities",
    )
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
    check(
        env.get("POD_NAME") == "metadata.name" and env.get("POD_NAMESPACE") == "metadata.namespace",
        "controller Deployment: POD_NAME and POD_NAMESPACE from the downward API",
    )
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    args = c["args"]
    pairs = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    admin_port = int(pairs.get("--admin-listen", ":0").rsplit(":", 1)[1])
    probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe")}
    check(
        ports.get(probes["livenessProbe"].get("port")) == admin_port
        and probes["livenessProbe"].get("path") == "/healthz"
        and ports.get(probes["readinessProbe"].get("port")) == admin_port
        and probes["readinessProbe"].get("path") == "/readyz",
        f"controller Deployment: probes GET /healthz and /readyz on the admin port {admin_port}",
    )
    check(pairs.get("--leader-election-namespace") == ns, f"controller: Lease in the release namespace {ns}")
    # The webhook's selectors must not pick up controller pods, and the other way round.
    check(
        not all(labels.get(k) == v for k, v in webhook_pod_labels.items())
        and not all(webhook_pod_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
        "controller pods and webhook pods select each other's neither",
    )
    sa = pod.get("serviceAccountName")
    webhook_sa = webhook_pod.get("serviceAccountName")
    check(sa and sa != webhook_sa, f"controller: its own ServiceAccount {sa}")
    bindings = by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", [])
    subjects = {(s_.get("kind"), s_.get("name")) for b in bindings for s_ in b.get("subjects", [])}
    check(("ServiceAccount", webhook_sa) not in subjects, "the webhook's ServiceAccount is bound to no role")
    check(subjects == {("ServiceAccount", sa)}, f"every binding is the controller's ServiceAccount's: {subjects}")
    roles = {(r["kind"], r["metadata"]["name"]): r for r in by_kind.get("ClusterRole", []) + by_kind.get("Role", [])}
    want = {
        ("helm.toolkit.fluxcd.io", "helmreleases"): {"get", "list", "watch"},
        ("", "services"): {"get", "list", "watch"},
        ("", "namespaces"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("apps", "deployments"): {"get", "list", "watch"},
        ("apps", "statefulsets"): {"get", "list", "watch"},
        ("apps", "daemonsets"): {"get", "list", "watch"},
        ("apps", "replicasets"): {"get", "list", "watch"},
        ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch", "delete"},
        ("networking.istio.io", "virtualservices"): {"get", "list", "watch", "create", "patch", "delete"},
        ("security.istio.io", "peerauthentications"): {"get", "list", "watch", "create", "patch", "delete"},
        ("security.istio.io", "authorizationpolicies"): {"get", "list", "watch", "create", "patch", "delete"},
        ("events.k8s.io", "events"): {"create", "patch"},
        # The audit behind the reports (DESIGN.md section 13): list only, and the reports themselves.
        ("batch", "jobs"): {"get", "list"},
        ("batch", "cronjobs"): {"get", "list"},
        ("networking.istio.io", "destinationrules"): {"get", "list"},
        ("networking.istio.io", "gateways"): {"get", "list"},
        ("spire.spiffe.io", "clusterspiffeids"): {"get", "list"},
        ("openreports.io", "reports"): {"get", "list", "create", "patch", "delete"},
        ("openreports.io", "clusterreports"): {"get", "list", "create", "patch", "delete"},
    }
    granted = {}
    for b in by_kind.get("ClusterRoleBinding", []):
        role = roles.get((b["roleRef"]["kind"], b["roleRef"]["name"]))
        for rule in (role or {}).get("rules", []):
            check(not rule.get("resourceNames"), "ClusterRole: no resourceNames")
            for g in rule.get("apiGroups", []):
                for r in rule.get("resources", []):
                    granted.setdefault((g, r), set()).update(rule.get("verbs", []))
    check(granted == want, f"ClusterRole: exactly what the controller uses ({granted})")
    lease = {}
    for b in by_kind.get("RoleBinding", []):
        role = roles.get((b["roleRef"]["kind"], b["roleRef"]["name"]))
        check(role is not None and role["kind"] == "Role", "RoleBinding: binds the namespaced Role")
        for rule in (role or {}).get("rules", []):
            for r in rule.get("resources", []):
                for v in rule.get("verbs", []):
                    lease.setdefault((tuple(rule.get("apiGroups", [])), r, v), set()).update(
                        rule.get("resourceNames", ["*"])
                    )
    check(
        all(g == ("coordination.k8s.io",) and r == "leases" for g, r, _ in lease)
        and lease.get((("coordination.k8s.io",), "leases", "patch")) == {"mesh-admission-controller"},
        f"Role: only the Lease mesh-admission-controller ({sorted(lease)})",
    )


# --- main ---------------------------------------------------------------------------------------
def main():
    help_proc = None
    if os.path.exists(BIN):
        help_proc = subprocess.run([BIN, "webhook-config", "--help"], capture_output=True, text=True, timeout=60)
    cli_help = help_proc.stdout if help_proc and help_proc.returncode == 0 else None
    if cli_help is None:
        why = f"{BIN} does not exist" if help_proc is None else f"`{BIN} webhook-config --help` failed"
        fail(f"cannot compare with `mesh-admission webhook-config`: {why}")
    cli_skipped = []
    for line in sys.argv[1:]:
        try:
            check_scenario(line, cli_help, cli_skipped)
        except Exception as e:  # a missing object or field: report it, go on with the next scenario
            fail(f"scenario {line.split('|')[0]}: {type(e).__name__}: {e}")
    print()
    print(
        f"summary: {stats['rendered']} objects rendered in {len(sys.argv) - 1} scenarios; "
        f"{stats['k8s-schema']} validated with kubernetes-validate --strict ({', '.join(K8S_VERSIONS)}), "
        f"{stats['crd-schema']} with the chart's CR schemas; webhook configurations equal to "
        f"`webhook-config` in {stats['compared-cli']} scenarios"
        + (f" (not comparable: {', '.join(cli_skipped)})" if cli_skipped else "")
        + ("" if cli_help is not None else " (webhook-config unavailable)")
    )
    if failures:
        print(f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def check_scenario(line, cli_help, cli_skipped):
    """Validates one rendered scenario and compares its webhook configurations."""
    name, ns, fp, mode, excluded, path = line.split("|")
    configured = DEFAULT_EXCLUDED if excluded == "default" else excluded.split(",")
    expected_excluded = configured + ([] if ns in configured else [ns])
    print(f"== scenario {name}: namespace {ns}, failurePolicy {fp}, certificates {mode}")
    with open(path) as f:
        objs = [d for d in yaml.safe_load_all(f) if d]
    stats["rendered"] += len(objs)
    print(f"  rendered {len(objs)} objects: {', '.join(kn(o) for o in objs)}")
    for o in objs:
        validate_object(o)
    cms = [o for o in objs if o["kind"] == "ConfigMap"]
    cfg_text = cms[0]["data"]["config.yaml"] if cms else ""
    cfg = yaml.safe_load(cfg_text) or {}
    check(
        cfg.get("excludedNamespaces") == expected_excluded,
        f"ConfigMap: excludedNamespaces {expected_excluded} (configured, then the release namespace)",
    )
    chart_invariants(objs, ns, mode, SERVICE)
    if cli_help is None:
        return
    config_file = None
    if "--config" in cli_help:
        config_file = os.path.join(os.path.dirname(path), f"{name}-config.yaml")
        with open(config_file, "w") as f:
            f.write(cfg_text)
    elif configured != DEFAULT_EXCLUDED:
        print("  NOTE: CLI comparison not possible: webhook-config has no --config for custom excludedNamespaces")
        cli_skipped.append(name)
        return
    res = cli_webhook_config(ns, fp, config_file, cli_help)
    if res is None:
        return
    cli_objs, cmd = res
    print(f"  $ {cmd}")
    if compare("webhook-config", objs, cli_objs):
        stats["compared-cli"] += 1
    if mode == "secret":
        cli_bundles = {
            pem_of((w.get("clientConfig") or {}).get("caBundle", "")) for o in cli_objs for w in o.get("webhooks") or []
        }
        check(cli_bundles == {pem_of(CA_B64)}, "webhook-config caBundle holds the same CA as the chart's")


if __name__ == "__main__":
    sys.exit(main())
