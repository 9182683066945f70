//! Mesh resources from HelmRelease annotations (DESIGN.md section 9): one pure function from the
//! objects in (HelmReleases of any `helm.toolkit.fluxcd.io` version, Services, Namespaces,
//! Deployments, StatefulSets, DaemonSets, ReplicaSets, Pods, and the generated kinds already there)
//! and the `mesh` configuration to the objects wanted and the problems found. `render` prints it;
//! the controller applies it. No I/O here.
//!
//! The result depends on the set of inputs only, never on their order: inputs are indexed by
//! kind, namespace and name first, and outputs and problems come out sorted. Objects carrying
//! `app.kubernetes.io/managed-by: mesh-admission` are our own output and are not read, so rendering
//! the inputs together with `render`'s output gives the same output.

mod objects;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use objects::{Backend, Route};
pub use objects::{
    MANAGED_BY, MANAGED_BY_VALUE, MAX_NAME_CHARS, Manifest, MeshKind, MeshObject, OWNER_ANNOTATION,
    OWNER_LABEL, ObjectRef, object_name,
};

use super::finding::{Finding, Severity};
use super::helmrelease::{self, EXPOSE, GATEWAYS, HOST, MTLS_MODE, PORT, PREFIX};
use super::kinds::{self, Validator};
use super::namespace::ISTIO_REVISION_LABEL;
use super::object::{self, DecodeError, StringMap};
use super::pod::INJECT_KEY;
use super::podtemplate;
use super::syntax::{LabelKind, check_label, parse_port};
use crate::config::{Config, Gateway, MeshConfig};

/// The namespace of a namespaced object that names none, as kubectl assumes without a context.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The namespace-wide mode when no HelmRelease of the namespace sets one.
pub const DEFAULT_MTLS_MODE: &str = "STRICT";

/// What `render` produced: the objects (sorted by kind, namespace and name) and the problems
/// (sorted by object, errors first, then by message).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    pub objects: Vec<MeshObject>,
    pub problems: Vec<Problem>,
}

impl Rendered {
    /// Whether some input was refused (`render` exits 1).
    pub fn has_errors(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.issue.severity() == Severity::Error)
    }
}

/// One problem, about one input object (or the Namespace that owns a shared object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub subject: ObjectRef,
    pub issue: Issue,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.issue)
    }
}

/// What is wrong. Errors stop the objects concerned from being generated (and make `render` exit
/// 1); warnings leave the exit code alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Issue {
    /// A mesh annotation that section 5 refuses, in `/validate`'s words.
    #[error("{0}")]
    Invalid(Finding),
    /// A field the generator reads has the wrong type.
    #[error("cannot be read: {0}")]
    Unreadable(String),
    /// The same object twice with different content: which one is meant cannot be told.
    #[error("is in the input more than once with different content; it is not used")]
    DuplicateInput,
    /// A route with nowhere to go.
    #[error(
        "no gateway selected: no gateway of mesh.gateways is `default: true`; name one with {GATEWAYS}"
    )]
    NoGateway,
    /// A PeerAuthentication selects pods by `matchLabels` only.
    #[error("{0}; its PeerAuthentication is not generated")]
    NoPodSelector(&'static str),
    /// Two owners would write the same object.
    #[error("{object} would also be written for {others}; it is not generated")]
    SameObject { object: String, others: String },
    /// Two VirtualServices would claim one host on one gateway.
    #[error(
        "VirtualService host {host} on gateway {gateway} is also claimed by {others}; its VirtualService is not generated"
    )]
    SharedHost {
        host: String,
        gateway: String,
        others: String,
    },
    /// HelmReleases disagree on a namespace's mode.
    #[error(
        "mtlsMode {mode} for namespace {namespace} disagrees with {others}; PeerAuthentication {namespace}/default is not generated"
    )]
    MtlsModeConflict {
        mode: String,
        namespace: String,
        others: String,
    },
    /// Someone else's object where ours would go.
    #[error(
        "{object} exists without the label {MANAGED_BY}: {MANAGED_BY_VALUE}; it is never overwritten"
    )]
    Unmanaged { object: String },
    /// Istio applies one namespace-wide PeerAuthentication, and someone else's is there.
    #[error(
        "PeerAuthentication {namespace}/{winner} is namespace-wide and not managed by mesh-admission; Istio applies only one, so {namespace}/default is not generated and {winner} stays in force"
    )]
    ForeignPeerAuthentication { namespace: String, winner: String },
    /// The route's Service cannot be matched yet.
    #[error(
        "Service {service} {why}: VirtualService {virtual_service} is generated, its NetworkPolicy and AuthorizationPolicy are not"
    )]
    ServiceIncomplete {
        service: String,
        why: String,
        virtual_service: String,
    },
}

impl Issue {
    pub fn severity(&self) -> Severity {
        match self {
            Issue::ForeignPeerAuthentication { .. } | Issue::ServiceIncomplete { .. } => {
                Severity::Warning
            }
            _ => Severity::Error,
        }
    }

    /// The reason of the controller's Warning Event.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Issue::Invalid(_)
            | Issue::Unreadable(_)
            | Issue::DuplicateInput
            | Issue::NoGateway
            | Issue::NoPodSelector(_) => "MeshInvalid",
            Issue::SameObject { .. }
            | Issue::SharedHost { .. }
            | Issue::MtlsModeConflict { .. }
            | Issue::Unmanaged { .. }
            | Issue::ForeignPeerAuthentication { .. } => "MeshConflict",
            Issue::ServiceIncomplete { .. } => "MeshIncomplete",
        }
    }
}

/// Turns the inputs into the desired mesh objects and the problems found (DESIGN.md section 9).
pub fn render<'v>(inputs: impl IntoIterator<Item = &'v Value>, cfg: &Config) -> Rendered {
    let mut out = Out::default();
    let index = Index::of(inputs, &mut out);
    let mesh = &cfg.mesh;

    for (subject, value) in &index.namespaces {
        namespace_rules(subject, value, cfg, &mut out);
    }
    let mut routes = Vec::new();
    let mut peer_modes: BTreeMap<String, Vec<(ObjectRef, Option<String>)>> = BTreeMap::new();
    for (subject, value) in &index.helm_releases {
        let Some(release) = helm_release(subject, value, mesh, &mut out) else {
            continue;
        };
        peer_modes
            .entry(release.target.clone())
            .or_default()
            .push((subject.clone(), release.mtls_mode.clone()));
        if let Some(route) = release.route {
            route_rules(
                subject,
                &release.target,
                &route,
                &release.gateways,
                &index,
                mesh,
                &mut out,
            );
            routes.push((subject.clone(), release.target, route, release.gateways));
        }
    }
    for (target, modes) in &peer_modes {
        namespace_peer_authentication(target, modes, &index, &mut out);
    }
    for (subject, value) in &index.workloads {
        workload_rules(subject, value, cfg, &mut out);
    }

    let mut objects = out.objects;
    shared_hosts(&mut objects, &routes, mesh, &mut out.problems);
    same_objects(&mut objects, &mut out.problems);
    unmanaged(&mut objects, &index, &mut out.problems);
    objects.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    let mut problems = out.problems;
    // Per object, errors before warnings.
    problems.sort_by_cached_key(|p| (p.subject.clone(), p.issue.severity(), p.issue.to_string()));
    problems.dedup();
    Rendered { objects, problems }
}

/// What the rules have produced so far.
#[derive(Default)]
struct Out {
    objects: Vec<MeshObject>,
    problems: Vec<Problem>,
}

impl Out {
    fn problem(&mut self, subject: &ObjectRef, issue: Issue) {
        self.problems.push(Problem {
            subject: subject.clone(),
            issue,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// What a generated kind's existing object says about itself.
struct Existing {
    managed: bool,
    /// A PeerAuthentication without a selector: Istio's namespace-wide one.
    namespace_wide: bool,
    created: Option<String>,
}

/// The inputs `render` reads, by kind, each keyed (and so ordered) by its reference. Everything
/// else in the input is ignored.
#[derive(Default)]
struct Index<'v> {
    helm_releases: BTreeMap<ObjectRef, &'v Value>,
    services: BTreeMap<(String, String), &'v Value>,
    namespaces: BTreeMap<ObjectRef, &'v Value>,
    workloads: BTreeMap<ObjectRef, &'v Value>,
    existing: BTreeMap<(MeshKind, String, String), Existing>,
}

/// The kinds of input the rules read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum InputKind {
    HelmRelease,
    Service,
    Namespace,
    Workload,
    Mesh(MeshKind),
}

impl InputKind {
    fn of(group: &str, kind: &str) -> Option<InputKind> {
        let is = |g: &str, k: &str| (group, kind) == (g, k);
        if kinds::find(group, kind).is_some_and(|k| k.validate == Some(Validator::HelmRelease)) {
            Some(InputKind::HelmRelease)
        } else if is(Service::GROUP, Service::KIND) {
            Some(InputKind::Service)
        } else if is(Namespace::GROUP, Namespace::KIND) {
            Some(InputKind::Namespace)
        } else if is(Deployment::GROUP, Deployment::KIND)
            || is(StatefulSet::GROUP, StatefulSet::KIND)
            || is(DaemonSet::GROUP, DaemonSet::KIND)
            || is(ReplicaSet::GROUP, ReplicaSet::KIND)
            || is(Pod::GROUP, Pod::KIND)
        {
            Some(InputKind::Workload)
        } else {
            MeshKind::of(group, kind).map(InputKind::Mesh)
        }
    }
}

/// `metadata` as the generator reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    labels: Option<StringMap>,
    #[serde(default)]
    annotations: Option<StringMap>,
    #[serde(default)]
    owner_references: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    creation_timestamp: Option<String>,
}

impl Meta {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// An object of which the generator reads `metadata` and `spec` (as `S`).
#[derive(Debug, Deserialize)]
struct Object<S> {
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default = "Option::default")]
    spec: Option<S>,
}

/// Reads `value` as `T`, naming the field that does not fit.
fn read<'v, T: Deserialize<'v>>(value: &'v Value) -> Result<T, String> {
    // Tracking the path costs on every field; only a failed read needs it, so read again then.
    if let Ok(decoded) = T::deserialize(value) {
        return Ok(decoded);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        DecodeError {
            path: if path == "." { "(object)".into() } else { path },
            message: e.into_inner().to_string(),
        }
        .to_string()
    })
}

/// The group of an `apiVersion`: `""` for the core group's `v1`.
fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

impl<'v> Index<'v> {
    fn of(inputs: impl IntoIterator<Item = &'v Value>, out: &mut Out) -> Self {
        let mut seen: BTreeMap<ObjectRef, (InputKind, &'v Value)> = BTreeMap::new();
        let mut duplicates = BTreeSet::new();
        for value in inputs {
            let (Some(api_version), Some(kind)) =
                (value["apiVersion"].as_str(), value["kind"].as_str())
            else {
                continue;
            };
            let group = group_of(api_version);
            let Some(input) = InputKind::of(group, kind) else {
                continue;
            };
            let metadata = &value["metadata"];
            let name = metadata["name"].as_str().unwrap_or("");
            let namespace = match input {
                InputKind::Namespace => "",
                _ => metadata["namespace"]
                    .as_str()
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(DEFAULT_NAMESPACE),
            };
            let subject = ObjectRef::new(group, kind, namespace, name);
            if name.is_empty() {
                out.problem(
                    &subject,
                    Issue::Unreadable("metadata.name: missing or empty".into()),
                );
                continue;
            }
            match seen.get(&subject) {
                Some((_, earlier)) if *earlier != value => {
                    duplicates.insert(subject);
                }
                Some(_) => {}
                None => {
                    seen.insert(subject, (input, value));
                }
            }
        }
        let mut index = Index::default();
        for (subject, (input, value)) in seen {
            if duplicates.contains(&subject) {
                out.problem(&subject, Issue::DuplicateInput);
                continue;
            }
            match input {
                InputKind::HelmRelease => {
                    index.helm_releases.insert(subject, value);
                }
                InputKind::Service => {
                    index
                        .services
                        .insert((subject.namespace, subject.name), value);
                }
                InputKind::Namespace => {
                    index.namespaces.insert(subject, value);
                }
                InputKind::Workload => {
                    index.workloads.insert(subject, value);
                }
                InputKind::Mesh(kind) => index.add_existing(kind, subject, value, out),
            }
        }
        index
    }

    fn add_existing(&mut self, kind: MeshKind, subject: ObjectRef, value: &Value, out: &mut Out) {
        #[derive(Deserialize)]
        struct Selector {
            #[serde(default, rename = "matchLabels")]
            match_labels: Option<StringMap>,
        }
        #[derive(Deserialize)]
        struct Spec {
            #[serde(default)]
            selector: Option<Selector>,
        }
        // Only a PeerAuthentication's selector matters; other kinds are read for their labels.
        let object: Object<Spec> = match read(value) {
            Ok(object) => object,
            Err(e) if kind == MeshKind::PeerAuthentication => {
                out.problem(&subject, Issue::Unreadable(e));
                return;
            }
            Err(_) => match read::<Object<IgnoredAny>>(value) {
                Ok(o) => Object {
                    metadata: o.metadata,
                    spec: None,
                },
                Err(e) => {
                    out.problem(&subject, Issue::Unreadable(e));
                    return;
                }
            },
        };
        let meta = object.metadata.unwrap_or_default();
        let namespace_wide = kind == MeshKind::PeerAuthentication
            && object
                .spec
                .and_then(|s| s.selector)
                .and_then(|s| s.match_labels)
                .is_none_or(|labels| labels.is_empty());
        self.existing.insert(
            (kind, subject.namespace, subject.name),
            Existing {
                managed: meta.label(MANAGED_BY) == Some(MANAGED_BY_VALUE),
                namespace_wide,
                created: meta.creation_timestamp,
            },
        );
    }

    /// Someone else's namespace-wide PeerAuthentication in `namespace`: the oldest (Istio applies
    /// the oldest), then the first by name.
    fn foreign_namespace_peer_authentication(&self, namespace: &str) -> Option<&str> {
        self.existing
            .iter()
            .filter(|((kind, ns, _), e)| {
                *kind == MeshKind::PeerAuthentication
                    && ns == namespace
                    && e.namespace_wide
                    && !e.managed
            })
            .min_by(|((_, _, a_name), a), ((_, _, b_name), b)| {
                // Objects in git carry no timestamp; they sort after the ones that do.
                let age = |e: &Existing| (e.created.is_none(), e.created.clone());
                (age(a), a_name).cmp(&(age(b), b_name))
            })
            .map(|((_, _, name), _)| name.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces: the NetworkPolicy that lets sidecars reach istiod.

fn namespace_rules(subject: &ObjectRef, value: &Value, cfg: &Config, out: &mut Out) {
    let meta = match read::<Object<IgnoredAny>>(value) {
        Ok(object) => object.metadata.unwrap_or_default(),
        Err(e) => return out.problem(subject, Issue::Unreadable(e)),
    };
    if cfg.mesh.istiod_egress && is_meshed(&meta, &subject.name, cfg) {
        out.objects
            .push(objects::istiod_egress_policy(&subject.name, &cfg.mesh));
    }
}

/// Whether a Namespace is meshed once admitted: not excluded, and labelled with `namespaceLabel`
/// or `istio.io/rev`. Section 4 gives the label to every namespace that has neither its key nor
/// `istio.io/rev`, so a namespace in git without labels is meshed as the cluster will store it.
fn is_meshed(meta: &Meta, name: &str, cfg: &Config) -> bool {
    let label = &cfg.namespace_label;
    !cfg.is_excluded_namespace(name)
        && (meta.label(ISTIO_REVISION_LABEL).is_some()
            || meta
                .label(&label.key)
                .is_none_or(|value| value == label.value))
}

// ---------------------------------------------------------------------------------------------
// HelmReleases: the VirtualService, its NetworkPolicies and AuthorizationPolicies.

/// A HelmRelease whose mesh annotations passed section 5.
struct Release<'m> {
    /// `spec.targetNamespace`, else the HelmRelease's own namespace.
    target: String,
    mtls_mode: Option<String>,
    route: Option<Route>,
    gateways: Vec<&'m Gateway>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HelmReleaseSpec {
    #[serde(default)]
    target_namespace: Option<String>,
}

fn helm_release<'m>(
    subject: &ObjectRef,
    value: &Value,
    mesh: &'m MeshConfig,
    out: &mut Out,
) -> Option<Release<'m>> {
    let object: Object<HelmReleaseSpec> = match read(value) {
        Ok(object) => object,
        Err(e) => {
            out.problem(subject, Issue::Unreadable(e));
            return None;
        }
    };
    let meta = object.metadata.unwrap_or_default();
    let annotations = meta.annotations.as_ref()?;
    if !annotations.keys().any(|k| k.starts_with(PREFIX)) {
        return None;
    }
    // Section 5, exactly as `/validate` applies it: only what it admits generates anything.
    let view = object::HelmRelease {
        metadata: Some(object::ObjectMeta {
            annotations: Some(annotations.clone()),
            ..Default::default()
        }),
    };
    let mut refused = false;
    for finding in helmrelease::validate(&view, mesh) {
        refused |= finding.is_error();
        out.problem(subject, Issue::Invalid(finding));
    }
    let target = object
        .spec
        .and_then(|s| s.target_namespace)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| subject.namespace.clone());
    if let Err(e) = check_label(&target, LabelKind::Rfc1123) {
        let finding = Finding::error(
            "spec.targetNamespace",
            format!("must be a namespace name (RFC 1123 label): {e}"),
        )
        .with_value(target.as_str());
        out.problem(subject, Issue::Invalid(finding));
        refused = true;
    }
    if refused {
        return None;
    }
    let route = match (
        meta.annotation(EXPOSE),
        meta.annotation(HOST),
        meta.annotation(PORT).map(parse_port),
    ) {
        (Some(expose), Some(host), Some(Ok(port))) => Some(Route {
            expose: expose.to_owned(),
            host: host.to_owned(),
            port,
        }),
        _ => None,
    };
    let gateways: Vec<&Gateway> = match meta.annotation(GATEWAYS) {
        Some(list) => helmrelease::gateway_list(list)
            .filter_map(|name| mesh.gateway(name))
            .collect(),
        None => mesh.gateways.iter().filter(|g| g.default).collect(),
    };
    if route.is_some() && gateways.is_empty() {
        out.problem(subject, Issue::NoGateway);
    }
    Some(Release {
        target,
        mtls_mode: meta.annotation(MTLS_MODE).map(str::to_owned),
        route: route.filter(|_| !gateways.is_empty()),
        gateways,
    })
}

fn route_rules(
    owner: &ObjectRef,
    target: &str,
    route: &Route,
    gateways: &[&Gateway],
    index: &Index<'_>,
    mesh: &MeshConfig,
    out: &mut Out,
) {
    let virtual_service = objects::virtual_service(owner, target, route, gateways, mesh);
    let service = format!("{target}/{}", route.expose);
    let incomplete = |why: String| Issue::ServiceIncomplete {
        service: service.clone(),
        why,
        virtual_service: format!("{target}/{}", virtual_service.name),
    };
    match backend(index, target, route) {
        Ok(backend) => {
            for gateway in gateways {
                out.objects.push(objects::gateway_ingress_policy(
                    owner, target, &backend, gateway,
                ));
                if mesh.authorization_policies {
                    out.objects.push(objects::gateway_authorization_policy(
                        owner, target, &backend, gateway, mesh,
                    ));
                }
            }
        }
        Err(why) => out.problem(owner, incomplete(why)),
    }
    out.objects.push(virtual_service);
}

#[derive(Deserialize)]
struct ServiceSpec {
    #[serde(default)]
    selector: Option<StringMap>,
    #[serde(default)]
    ports: Option<Vec<ServicePort>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePort {
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    target_port: Option<Value>,
    #[serde(default)]
    protocol: Option<String>,
}

/// The Service `T/<expose>`'s pods and the target port of its port `<port>`, or why not.
fn backend(index: &Index<'_>, target: &str, route: &Route) -> Result<Backend, String> {
    let Some(value) = index
        .services
        .get(&(target.to_owned(), route.expose.clone()))
    else {
        return Err("is unknown".into());
    };
    let service: Object<ServiceSpec> = read(value).map_err(|e| format!("cannot be read ({e})"))?;
    let spec = service.spec.ok_or("has no spec")?;
    let selector = spec
        .selector
        .filter(|s| !s.is_empty())
        .ok_or("has no selector")?;
    // An HTTP route runs over TCP; a UDP or SCTP port of the same number is another port.
    let port = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| {
            p.port == Some(i64::from(route.port))
                && p.protocol.as_deref().is_none_or(|proto| proto == "TCP")
        })
        .ok_or_else(|| format!("has no TCP port {}", route.port))?;
    let target_port = match port.target_port {
        None | Some(Value::Null) => IntOrString::Int(i32::from(route.port)),
        Some(Value::Number(n)) => match n.as_i64().and_then(|n| u16::try_from(n).ok()) {
            Some(number) if number > 0 => IntOrString::Int(i32::from(number)),
            _ => return Err(format!("port {}: targetPort {n} is not a port", route.port)),
        },
        Some(Value::String(name)) if is_port_name(&name) => IntOrString::String(name),
        Some(other) => {
            return Err(format!(
                "port {}: targetPort {other} is neither a port number nor a port name",
                route.port
            ));
        }
    };
    Ok(Backend {
        selector,
        target_port,
        protocol: "TCP".into(),
    })
}

/// A container port's name (IANA_SVC_NAME): 1-15 lower-case letters, digits and `-`, with a letter.
fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The namespace's PeerAuthentication `default`, from every HelmRelease that targets it.
fn namespace_peer_authentication(
    target: &str,
    releases: &[(ObjectRef, Option<String>)],
    index: &Index<'_>,
    out: &mut Out,
) {
    let owner = ObjectRef::namespace(target);
    if let Some(winner) = index.foreign_namespace_peer_authentication(target) {
        let issue = Issue::ForeignPeerAuthentication {
            namespace: target.to_owned(),
            winner: winner.to_owned(),
        };
        return out.problem(&owner, issue);
    }
    let modes: BTreeSet<&str> = releases.iter().filter_map(|(_, m)| m.as_deref()).collect();
    match modes.len() {
        0 => out.objects.push(objects::namespace_peer_authentication(
            target,
            DEFAULT_MTLS_MODE,
        )),
        1 => out.objects.push(objects::namespace_peer_authentication(
            target,
            modes.first().copied().unwrap_or(DEFAULT_MTLS_MODE),
        )),
        _ => {
            for (release, mode) in releases {
                let Some(mode) = mode else { continue };
                let others = releases
                    .iter()
                    .filter(|(r, m)| r != release && m.as_ref().is_some_and(|m| m != mode))
                    .map(|(r, m)| format!("{r} ({})", m.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ");
                let issue = Issue::MtlsModeConflict {
                    mode: mode.clone(),
                    namespace: target.to_owned(),
                    others,
                };
                out.problem(release, issue);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads: the per-workload PeerAuthentication of `permissivePorts`.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadSpec {
    #[serde(default)]
    selector: Option<WorkloadSelector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadSelector {
    #[serde(default)]
    match_labels: Option<StringMap>,
    #[serde(default)]
    match_expressions: Option<Vec<IgnoredAny>>,
}

fn workload_rules(subject: &ObjectRef, value: &Value, cfg: &Config, out: &mut Out) {
    let is_pod = subject.kind == Pod::KIND;
    let at = if is_pod { "" } else { "spec.template" };
    let template = if is_pod {
        value
    } else {
        &value["spec"]["template"]
    };
    let has_mesh_annotation = template["metadata"]["annotations"]
        .as_object()
        .is_some_and(|a| a.keys().any(|k| k.starts_with(PREFIX)));
    if !has_mesh_annotation {
        return;
    }
    let object: Object<WorkloadSpec> = match read(value) {
        Ok(object) => object,
        Err(e) => return out.problem(subject, Issue::Unreadable(e)),
    };
    let meta = object.metadata.unwrap_or_default();
    // A Pod or ReplicaSet that a controller owns is its owner's business: the Deployment (or
    // StatefulSet, Job…) is what gets the PeerAuthentication, once.
    if meta
        .owner_references
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return;
    }
    // Section 5's mesh rules on the pod template, as `/validate` reads it.
    let text = template.to_string();
    let findings = match object::decode::<object::Pod>(&text)
        .and_then(|pod| podtemplate::mesh_annotation_findings(&pod, at))
    {
        Ok(findings) => findings,
        Err(e) => return out.problem(subject, Issue::Unreadable(e.under(at).to_string())),
    };
    let mut refused = false;
    for finding in findings.into_iter().filter(Finding::is_error) {
        refused = true;
        out.problem(subject, Issue::Invalid(finding));
    }
    let Some(ports) = template["metadata"]["annotations"][helmrelease::PERMISSIVE_PORTS].as_str()
    else {
        return;
    };
    if refused {
        return;
    }
    let selector = if is_pod {
        // The labels the webhook adds at admission are left out, so that the Pod in git and the
        // Pod in the cluster select alike (a bare Pod's labels are its only selector).
        meta.labels
            .unwrap_or_default()
            .into_iter()
            .filter(|(key, _)| key != INJECT_KEY && *key != cfg.spire_identity_label)
            .collect()
    } else {
        let selector = object.spec.and_then(|s| s.selector);
        if selector
            .as_ref()
            .is_some_and(|s| s.match_expressions.as_ref().is_some_and(|e| !e.is_empty()))
        {
            return out.problem(
                subject,
                Issue::NoPodSelector(
                    "spec.selector has matchExpressions, which a PeerAuthentication cannot express",
                ),
            );
        }
        selector.and_then(|s| s.match_labels).unwrap_or_default()
    };
    if selector.is_empty() {
        let why = if is_pod {
            "the Pod has no labels of its own to select it by"
        } else {
            "spec.selector has no matchLabels"
        };
        return out.problem(subject, Issue::NoPodSelector(why));
    }
    out.objects
        .push(objects::permissive_ports_peer_authentication(
            subject,
            &selector,
            &podtemplate::permissive_port_list(ports),
        ));
}

// ---------------------------------------------------------------------------------------------
// Conflicts: each removes the objects concerned and names every owner involved.

/// Two VirtualServices with one host on a gateway they share.
fn shared_hosts(
    objects: &mut Vec<MeshObject>,
    routes: &[(ObjectRef, String, Route, Vec<&Gateway>)],
    mesh: &MeshConfig,
    problems: &mut Vec<Problem>,
) {
    let mut claims: BTreeMap<(String, &str), Vec<&ObjectRef>> = BTreeMap::new();
    for (owner, _, route, gateways) in routes {
        for gateway in gateways {
            claims
                .entry((objects::host_name(route, mesh), gateway.name.as_str()))
                .or_default()
                .push(owner);
        }
    }
    let mut losers = BTreeSet::new();
    for ((host, gateway), owners) in claims.iter().filter(|(_, o)| o.len() > 1) {
        for owner in owners {
            let others = list(owners.iter().filter(|o| o != &owner));
            problems.push(Problem {
                subject: (*owner).clone(),
                issue: Issue::SharedHost {
                    host: host.clone(),
                    gateway: (*gateway).to_owned(),
                    others,
                },
            });
            losers.insert(*owner);
        }
    }
    objects.retain(|o| !(o.kind == MeshKind::VirtualService && losers.contains(&o.owner)));
}

/// Two owners that would write one object: neither does.
fn same_objects(objects: &mut Vec<MeshObject>, problems: &mut Vec<Problem>) {
    let mut owners: BTreeMap<(MeshKind, &str, &str), BTreeSet<&ObjectRef>> = BTreeMap::new();
    for object in objects.iter() {
        owners
            .entry(object.key())
            .or_default()
            .insert(&object.owner);
    }
    let mut clashes = BTreeSet::new();
    for ((kind, namespace, name), owners) in owners.iter().filter(|(_, o)| o.len() > 1) {
        for owner in owners {
            problems.push(Problem {
                subject: (*owner).clone(),
                issue: Issue::SameObject {
                    object: format!("{kind} {namespace}/{name}"),
                    others: list(owners.iter().filter(|o| o != &owner)),
                },
            });
        }
        clashes.insert((*kind, namespace.to_string(), name.to_string()));
    }
    objects.retain(|o| !clashes.contains(&(o.kind, o.namespace.clone(), o.name.clone())));
}

/// Someone else's object of the same kind and name: never overwritten.
fn unmanaged(objects: &mut Vec<MeshObject>, index: &Index<'_>, problems: &mut Vec<Problem>) {
    objects.retain(|o| {
        let key = (o.kind, o.namespace.clone(), o.name.clone());
        match index.existing.get(&key) {
            Some(existing) if !existing.managed => {
                problems.push(Problem {
                    subject: o.owner.clone(),
                    issue: Issue::Unmanaged {
                        object: format!("{} {}/{}", o.kind, o.namespace, o.name),
                    },
                });
                false
            }
            _ => true,
        }
    });
}

fn list<'a>(refs: impl Iterator<Item = &'a &'a ObjectRef>) -> String {
    refs.map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
