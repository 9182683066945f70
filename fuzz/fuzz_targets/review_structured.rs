//! Objects built from `arbitrary` data: the fields the rules read (labels, annotations, hostNetwork,
//! volumes, containers, init containers, ports, env, volume mounts), keys and values drawn mostly from the
//! ones the rules look for and otherwise free text, sometimes of the wrong JSON type or `null`. Wrapped
//! as any kind of `fuzz_support::KINDS` (a workload's template where the kinds table puts it) in a
//! valid AdmissionReview,
//! reviewed at both endpoints (`check_review`) and by `mesh-admission review`'s per-object path
//! (`check_cli_review`). Also: `dryRun` never changes the answer.
#![no_main]

use arbitrary::Arbitrary;
use fuzz_support::{
    CONFIG, KINDS, NAMESPACES, OPERATIONS, check_cli_review, check_review, envelope,
};
use libfuzzer_sys::fuzz_target;
use mesh_admission::admission::{self, Endpoint};
use mesh_admission::policy::kinds;
use serde_json::{Map, Value, json};

#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    operation: u8,
    namespace: Namespace,
    request_name: bool,
    dry_run: bool,
    object: Object,
}

#[derive(Debug, Arbitrary)]
enum Namespace {
    Known(u8),
    Free(String),
}

#[derive(Debug, Arbitrary)]
struct Object {
    metadata: Field<Meta>,
    spec: Field<Spec>,
}

/// A field as an object may carry it: absent, `null`, of the wrong type, or a value.
#[derive(Debug, Arbitrary)]
enum Field<T> {
    Absent,
    Null,
    Junk(Junk),
    Present(T),
}

#[derive(Debug, Arbitrary)]
enum Junk {
    Number(i64),
    Bool(bool),
    Text(String),
    EmptyList,
    EmptyMap,
}

impl Junk {
    fn to_json(&self) -> Value {
        match self {
            Junk::Number(n) => json!(n),
            Junk::Bool(b) => json!(b),
            Junk::Text(s) => json!(s),
            Junk::EmptyList => json!([]),
            Junk::EmptyMap => json!({}),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Meta {
    name: Option<Text>,
    namespace: Option<Text>,
    labels: Field<Vec<(Key, Text)>>,
    annotations: Field<Vec<(Key, Text)>>,
}

const KEYS: [&str; 21] = [
    "sidecar.istio.io/inject",
    "spire-managed-identity",
    "spiffe.io/spire-managed-identity",
    "inject.istio.io/templates",
    "spiffe.io/workload-api-mount",
    "istio-injection",
    "istio.io/rev",
    "servicemesh.bigbang.dev/expose",
    "servicemesh.bigbang.dev/host",
    "servicemesh.bigbang.dev/port",
    "servicemesh.bigbang.dev/mtlsMode",
    "servicemesh.bigbang.dev/permissivePorts",
    "servicemesh.bigbang.dev/permissiveports",
    "servicemesh.bigbang.dev/virtualService",
    "contrast.edgeless.systems/servicemesh-ingress",
    "contrast.edgeless.systems/servicemesh-egress",
    "sidecar.istio.io/status",
    "app",
    "a~b/c",
    "",
    "SIDECAR.ISTIO.IO/INJECT",
];

const TEXTS: [&str; 40] = [
    "true",
    "false",
    "TRUE",
    "False",
    "maybe",
    "",
    "enabled",
    "disabled",
    "gateway",
    "sidecar",
    "sidecar,spire",
    " gateway , spire-gw ,gateway",
    "grpc-agent",
    ",,",
    "spire",
    "spire-gw",
    "/run/spire/sockets",
    "run/relative",
    "/",
    "8080",
    "80,,80",
    " 80 , 8080",
    "0",
    "65536",
    "080",
    "podinfo",
    "podinfo.apps",
    "*.apps",
    "https://grafana.example:443/x",
    "STRICT",
    "permissive",
    "PERMISSIVE",
    "web#8080#false##metrics#7890#true",
    "billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080",
    "db#10.0.0.1:5432#db:5432",
    "a#127.0.0.1:1#[::1]:443##b#127.0.0.1:1#x:1",
    "web#80#true###api#81#true",
    "####",
    "kube-system",
    "line\nbreak",
];

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Free(String),
}

impl Key {
    fn get(&self) -> String {
        match self {
            Key::Known(i) => KEYS[usize::from(*i) % KEYS.len()].to_owned(),
            Key::Free(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Text {
    Known(u8),
    Free(String),
    /// A known value with free text glued on, e.g. `sidecar,spire` + `,x`.
    Joined(u8, String),
}

impl Text {
    fn get(&self) -> String {
        match self {
            Text::Known(i) => TEXTS[usize::from(*i) % TEXTS.len()].to_owned(),
            Text::Free(s) => s.clone(),
            Text::Joined(i, s) => format!("{}{s}", TEXTS[usize::from(*i) % TEXTS.len()]),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Spec {
    host_network: Field<bool>,
    volumes: Field<Vec<Volume>>,
    containers: Field<Vec<Container>>,
    init_containers: Field<Vec<Container>>,
}

#[derive(Debug, Arbitrary)]
struct Volume {
    name: VolumeName,
    source: Source,
    extra: bool,
}

#[derive(Debug, Arbitrary)]
enum VolumeName {
    WorkloadSocket,
    Other,
    Missing,
    Free(String),
}

#[derive(Debug, Arbitrary)]
enum Source {
    Csi {
        spiffe_driver: bool,
        read_only: Field<bool>,
        extra: bool,
    },
    EmptyDir,
    None,
    Junk(Junk),
}

#[derive(Debug, Arbitrary)]
struct Container {
    name: ContainerName,
    restart_policy: Option<Text>,
    ports: Field<Vec<Field<i64>>>,
    env: Field<Vec<Env>>,
    volume_mounts: Field<Vec<Option<MountName>>>,
}

#[derive(Debug, Arbitrary)]
enum ContainerName {
    App,
    IstioProxy,
    Missing,
    Free(String),
}

#[derive(Debug, Arbitrary)]
enum MountName {
    WorkloadSocket,
    Free(String),
}

#[derive(Debug, Arbitrary)]
struct Env {
    name: EnvName,
    value: Option<Text>,
    value_from: bool,
}

#[derive(Debug, Arbitrary)]
enum EnvName {
    Ingress(bool),
    Egress(bool),
    Free(String),
}

fn field<T>(map: &mut Map<String, Value>, key: &str, f: &Field<T>, to: impl Fn(&T) -> Value) {
    match f {
        Field::Absent => {}
        Field::Null => {
            map.insert(key.into(), Value::Null);
        }
        Field::Junk(j) => {
            map.insert(key.into(), j.to_json());
        }
        Field::Present(v) => {
            map.insert(key.into(), to(v));
        }
    }
}

fn string_map(entries: &[(Key, Text)]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, v)| (k.get(), Value::String(v.get())))
            .collect(),
    )
}

impl Meta {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), n.get().into());
        }
        if let Some(n) = &self.namespace {
            m.insert("namespace".into(), n.get().into());
        }
        field(&mut m, "labels", &self.labels, |e| string_map(e));
        field(&mut m, "annotations", &self.annotations, |e| string_map(e));
        Value::Object(m)
    }
}

impl Volume {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        match &self.name {
            VolumeName::WorkloadSocket => {
                m.insert("name".into(), "workload-socket".into());
            }
            VolumeName::Other => {
                m.insert("name".into(), "istio-envoy".into());
            }
            VolumeName::Missing => {}
            VolumeName::Free(s) => {
                m.insert("name".into(), s.clone().into());
            }
        }
        match &self.source {
            Source::Csi {
                spiffe_driver,
                read_only,
                extra,
            } => {
                let mut csi = Map::new();
                let driver = if *spiffe_driver {
                    "csi.spiffe.io"
                } else {
                    "other.csi"
                };
                csi.insert("driver".into(), driver.into());
                field(&mut csi, "readOnly", read_only, |b| json!(b));
                if *extra {
                    csi.insert("volumeAttributes".into(), json!({"a": "b"}));
                }
                m.insert("csi".into(), Value::Object(csi));
            }
            Source::EmptyDir => {
                m.insert("emptyDir".into(), json!({}));
            }
            Source::None => {}
            Source::Junk(j) => {
                m.insert("csi".into(), j.to_json());
            }
        }
        if self.extra {
            m.insert("hostPath".into(), json!({"path": "/run"}));
        }
        Value::Object(m)
    }
}

impl Container {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        match &self.name {
            ContainerName::App => {
                m.insert("name".into(), "app".into());
            }
            ContainerName::IstioProxy => {
                m.insert("name".into(), "istio-proxy".into());
            }
            ContainerName::Missing => {}
            ContainerName::Free(s) => {
                m.insert("name".into(), s.clone().into());
            }
        }
        if let Some(p) = &self.restart_policy {
            m.insert("restartPolicy".into(), p.get().into());
        }
        field(&mut m, "ports", &self.ports, |ports| {
            Value::Array(
                ports
                    .iter()
                    .map(|p| {
                        let mut pm = Map::new();
                        field(&mut pm, "containerPort", p, |n| json!(n));
                        Value::Object(pm)
                    })
                    .collect(),
            )
        });
        field(&mut m, "env", &self.env, |env| {
            Value::Array(
                env.iter()
                    .map(|e| {
                        let name = match &e.name {
                            EnvName::Ingress(old) => if *old {
                                "EDG_INGRESS_PROXY_CONFIG"
                            } else {
                                "CONTRAST_INGRESS_PROXY_CONFIG"
                            }
                            .to_owned(),
                            EnvName::Egress(old) => if *old {
                                "EDG_EGRESS_PROXY_CONFIG"
                            } else {
                                "CONTRAST_EGRESS_PROXY_CONFIG"
                            }
                            .to_owned(),
                            EnvName::Free(s) => s.clone(),
                        };
                        let mut em = Map::new();
                        em.insert("name".into(), name.into());
                        if let Some(v) = &e.value {
                            em.insert("value".into(), v.get().into());
                        }
                        if e.value_from {
                            em.insert(
                                "valueFrom".into(),
                                json!({"configMapKeyRef": {"name": "c", "key": "k"}}),
                            );
                        }
                        Value::Object(em)
                    })
                    .collect(),
            )
        });
        field(&mut m, "volumeMounts", &self.volume_mounts, |mounts| {
            Value::Array(
                mounts
                    .iter()
                    .map(|name| match name {
                        None => json!({"mountPath": "/x"}),
                        Some(MountName::WorkloadSocket) => {
                            json!({"name": "workload-socket", "mountPath": "/run/x"})
                        }
                        Some(MountName::Free(s)) => json!({"name": s, "mountPath": "/y"}),
                    })
                    .collect(),
            )
        });
        Value::Object(m)
    }
}

impl Spec {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        field(&mut m, "hostNetwork", &self.host_network, |b| json!(b));
        field(&mut m, "volumes", &self.volumes, |v| {
            Value::Array(v.iter().map(Volume::to_json).collect())
        });
        field(&mut m, "containers", &self.containers, |c| {
            Value::Array(c.iter().map(Container::to_json).collect())
        });
        field(&mut m, "initContainers", &self.init_containers, |c| {
            Value::Array(c.iter().map(Container::to_json).collect())
        });
        Value::Object(m)
    }
}

/// The object of the given kind: the pod-ish parts at the place that kind keeps its pod template.
fn object_json(o: &Object, group: &str, version: &str, kind: &str) -> Value {
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut template = Map::new();
    field(&mut template, "metadata", &o.metadata, Meta::to_json);
    field(&mut template, "spec", &o.spec, Spec::to_json);
    let template = Value::Object(template);
    // A workload nests the template where the kinds table says; a Pod is the template itself.
    let path = kinds::find(group, kind)
        .filter(|k| k.is_workload())
        .and_then(|k| k.template)
        .unwrap_or(&[]);
    let mut top = path.iter().rev().fold(template, |inner, key| json!({ *key: inner }));
    if !path.is_empty() {
        top["metadata"] = json!({"name": "w"});
    }
    if let Value::Object(map) = &mut top {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.into());
    }
    top
}

fuzz_target!(|input: Input| {
    let (group, version, kind) = KINDS[usize::from(input.kind) % KINDS.len()];
    let operation = OPERATIONS[usize::from(input.operation) % OPERATIONS.len()];
    let namespace = match &input.namespace {
        Namespace::Known(i) => NAMESPACES[usize::from(*i) % NAMESPACES.len()].to_owned(),
        Namespace::Free(s) => s.clone(),
    };
    let name = if input.request_name { "fuzz-name" } else { "" };
    let object = object_json(&input.object, group, version, kind);
    let object_text = object.to_string();
    let body = envelope(
        group,
        version,
        kind,
        &namespace,
        name,
        operation,
        input.dry_run,
        &object_text,
    );
    let flipped = envelope(
        group,
        version,
        kind,
        &namespace,
        name,
        operation,
        !input.dry_run,
        &object_text,
    );
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let outcome = check_review(endpoint, body.as_bytes(), &CONFIG)
            .unwrap_or_else(|| panic!("a well-formed envelope was rejected: {body}"));
        let other = admission::review(endpoint, flipped.as_bytes(), &CONFIG).expect("flipped");
        assert_eq!(
            outcome.decision, other.decision,
            "dryRun changed the decision: {body}"
        );
    }
    check_cli_review(&object, &namespace, &CONFIG);
});
