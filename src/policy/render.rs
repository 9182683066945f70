//! Mesh resources from HelmRelease annotations (DESIGN.md section 9): one pure function from the
//! model of the mesh (HelmReleases of any `helm.toolkit.fluxcd.io` version, Services, Namespaces,
//! workloads, and the generated kinds already there) and the `mesh` configuration to the objects
//! wanted and the problems found. `render` prints it; the controller applies it. No I/O here.
//!
//! The result depends on the model only, never on the order its objects came in: outputs and
//! problems come out sorted. Objects carrying `app.kubernetes.io/managed-by: mesh-admission` are
//! our own output and are only looked at as such, so rendering the inputs together with `render`'s
//! output gives the same output.

mod objects;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use objects::{Backend, Route};
pub use objects::{MAX_NAME_CHARS, MeshObject, Spec, object_name};

use super::finding::{Finding, Severity};
use super::helmrelease::{self, EXPOSE, GATEWAYS, HOST, MTLS_MODE, PORT};
use super::kinds::{self, Kind};
use super::namespace::ISTIO_REVISION_LABEL;
use super::pod::INJECT_KEY;
use super::podtemplate;
use super::syntax::{LabelKind, check_label, parse_port};
use crate::config::{Config, Gateway, MeshConfig};
use crate::model::core::PortRef;
use crate::model::ownership::{self, MANAGED_BY, MANAGED_BY_VALUE};
use crate::model::{
    HelmRelease, Labels, Model, Namespace, ObjectRef, ReadIssue, Service, Workload,
};

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
    pub fn reason(&self) -> Reason {
        match self {
            Issue::Invalid(_)
            | Issue::Unreadable(_)
            | Issue::DuplicateInput
            | Issue::NoGateway
            | Issue::NoPodSelector(_) => Reason::Invalid,
            Issue::SameObject { .. }
            | Issue::SharedHost { .. }
            | Issue::MtlsModeConflict { .. }
            | Issue::Unmanaged { .. }
            | Issue::ForeignPeerAuthentication { .. } => Reason::Conflict,
            Issue::ServiceIncomplete { .. } => Reason::Incomplete,
        }
    }
}

/// The reasons of the controller's Events on an owner (DESIGN.md section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Normal: what was written for the owner.
    Applied,
    /// Warning: an error of another owner's making, or someone else's object in the way.
    Conflict,
    /// Warning: the owner's mesh annotations cannot be used.
    Invalid,
    /// Warning: the route's Service is not (yet) usable.
    Incomplete,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Applied => "MeshApplied",
            Reason::Conflict => "MeshConflict",
            Reason::Invalid => "MeshInvalid",
            Reason::Incomplete => "MeshIncomplete",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns the model into the desired mesh objects and the problems found (DESIGN.md section 9).
pub fn render(model: &Model, cfg: &Config) -> Rendered {
    let mut out = Out::default();
    read_problems(model, &mut out);
    let mesh = &cfg.mesh;

    for (_, namespace) in model.namespaces.iter() {
        namespace_rules(namespace, cfg, &mut out);
    }
    let mut routes = Vec::new();
    let mut peer_modes: BTreeMap<String, Vec<(ObjectRef, Option<String>)>> = BTreeMap::new();
    for (key, release) in model.helm_releases.iter() {
        let subject = ObjectRef::of(key.kind, &key.namespace, &key.name);
        let Some(release) = helm_release(&subject, release, mesh, &mut out) else {
            continue;
        };
        peer_modes
            .entry(release.target.clone())
            .or_default()
            .push((subject.clone(), release.mtls_mode.clone()));
        if let Some(route) = release.route {
            route_rules(
                &subject,
                &release.target,
                &route,
                &release.gateways,
                model,
                mesh,
                &mut out,
            );
            routes.push((subject, release.target, route, release.gateways));
        }
    }
    for (target, modes) in &peer_modes {
        namespace_peer_authentication(target, modes, model, &mut out);
    }
    for (_, workload) in model.workloads.iter() {
        workload_rules(workload, cfg, &mut out);
    }

    let mut objects = out.objects;
    shared_hosts(&mut objects, &routes, mesh, &mut out.problems);
    same_objects(&mut objects, &mut out.problems);
    unmanaged(&mut objects, model, &mut out.problems);
    objects.sort_by(|a, b| a.key().cmp(&b.key()));
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

/// The inputs of the kinds `render` reads that could not be taken into the model.
fn read_problems(model: &Model, out: &mut Out) {
    for problem in model.problems.iter().filter(|p| p.kind.render.is_some()) {
        let issue = match &problem.issue {
            ReadIssue::Unreadable(message) => Issue::Unreadable(message.clone()),
            ReadIssue::Duplicate => Issue::DuplicateInput,
        };
        out.problem(&problem.subject, issue);
    }
}

/// Someone else's namespace-wide PeerAuthentication in `namespace`: the oldest (Istio applies
/// the oldest), then the first by name.
fn foreign_namespace_peer_authentication<'m>(
    model: &'m Model,
    namespace: &'m str,
) -> Option<&'m str> {
    model
        .peer_authentications
        .in_namespace(namespace)
        .filter(|(_, pa)| pa.spec.is_namespace_wide() && !ownership::is_ours(&pa.metadata))
        .min_by(|(a_key, a), (b_key, b)| {
            // Objects in git carry no timestamp; they sort after the ones that do.
            let age = |created: &Option<_>| (created.is_none(), created.clone());
            (age(&a.metadata.identity.creation_timestamp), &a_key.name)
                .cmp(&(age(&b.metadata.identity.creation_timestamp), &b_key.name))
        })
        .map(|(key, _)| key.name.as_str())
}

// ---------------------------------------------------------------------------------------------
// Namespaces: the NetworkPolicy that lets sidecars reach istiod.

fn namespace_rules(namespace: &Namespace, cfg: &Config, out: &mut Out) {
    if cfg.mesh.istiod_egress && is_meshed(namespace, cfg) {
        out.objects
            .push(objects::istiod_egress_policy(namespace.name(), &cfg.mesh));
    }
}

/// Whether a Namespace is meshed once admitted: not excluded, and labelled with `namespaceLabel`
/// or `istio.io/rev`. Section 4 gives the label to every namespace that has neither its key nor
/// `istio.io/rev`, so a namespace in git without labels is meshed as the cluster will store it.
fn is_meshed(namespace: &Namespace, cfg: &Config) -> bool {
    let label = &cfg.namespace_label;
    !cfg.is_excluded_namespace(namespace.name())
        && (namespace.label(ISTIO_REVISION_LABEL).is_some()
            || namespace
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

fn helm_release<'m>(
    subject: &ObjectRef,
    release: &HelmRelease,
    mesh: &'m MeshConfig,
    out: &mut Out,
) -> Option<Release<'m>> {
    let annotations = &release.metadata.annotations;
    if !crate::model::core::has_mesh_annotation(annotations) {
        return None;
    }
    // Section 5, exactly as `/validate` applies it: only what it admits generates anything.
    let mut refused = false;
    for finding in helmrelease::validate_annotations(&annotations.iter().collect::<Vec<_>>(), mesh)
    {
        refused |= finding.is_error();
        out.problem(subject, Issue::Invalid(finding));
    }
    let target = release
        .spec
        .target_namespace
        .clone()
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
        release.annotation(EXPOSE),
        release.annotation(HOST),
        release.annotation(PORT).map(parse_port),
    ) {
        (Some(expose), Some(host), Some(Ok(port))) => Some(Route {
            expose: expose.to_owned(),
            host: host.to_owned(),
            port,
        }),
        _ => None,
    };
    let gateways: Vec<&Gateway> = match release.annotation(GATEWAYS) {
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
        mtls_mode: release.annotation(MTLS_MODE).map(str::to_owned),
        route: route.filter(|_| !gateways.is_empty()),
        gateways,
    })
}

fn route_rules(
    owner: &ObjectRef,
    target: &str,
    route: &Route,
    gateways: &[&Gateway],
    model: &Model,
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
    let known = model.services.get(&kinds::SERVICE, target, &route.expose);
    match known
        .ok_or_else(|| "is unknown".to_owned())
        .and_then(|s| backend(s, route))
    {
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

/// The Service's pods and the target port of its port `<port>`, or why not.
fn backend(service: &Service, route: &Route) -> Result<Backend, String> {
    let selector = service
        .spec
        .selector
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or("has no selector")?;
    // An HTTP route runs over TCP; a UDP or SCTP port of the same number is another port.
    let port = service
        .spec
        .ports
        .iter()
        .find(|p| {
            p.port == Some(i64::from(route.port))
                && p.protocol.as_deref().is_none_or(|proto| proto == "TCP")
        })
        .ok_or_else(|| format!("has no TCP port {}", route.port))?;
    let target_port = match &port.target_port {
        None => IntOrString::Int(i32::from(route.port)),
        Some(PortRef::Number(n)) => match u16::try_from(*n) {
            Ok(number) if number > 0 => IntOrString::Int(i32::from(number)),
            _ => return Err(format!("port {}: targetPort {n} is not a port", route.port)),
        },
        Some(PortRef::Name(name)) if is_port_name(name) => IntOrString::String(name.clone()),
        Some(PortRef::Name(name)) => {
            return Err(format!(
                "port {}: targetPort {name:?} is neither a port number nor a port name",
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
    model: &Model,
    out: &mut Out,
) {
    let owner = ObjectRef::namespace(target);
    if let Some(winner) = foreign_namespace_peer_authentication(model, target) {
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

fn workload_rules(workload: &Workload, cfg: &Config, out: &mut Out) {
    // Jobs and CronJobs serve nothing a PeerAuthentication would open up: section 9 leaves them
    // out, as it leaves a Pod or ReplicaSet that a controller owns to its owner (the Deployment,
    // StatefulSet… gets the PeerAuthentication, once).
    let kind = workload.kind;
    if kind.render.is_none() || !workload.has_mesh_annotation() || workload.is_owned() {
        return;
    }
    let annotations = &workload.template.metadata.annotations;
    let subject = ObjectRef::of(kind, workload.namespace(), workload.name());
    let is_pod = *kind == kinds::POD;
    let at = if is_pod { "" } else { "spec.template" };
    // Section 5's mesh rules on the pod template, as `/validate` reads it.
    let declared = workload.template.declared_ports();
    let mut refused = false;
    for finding in podtemplate::mesh_annotation_findings(annotations.iter(), &declared, at)
        .into_iter()
        .filter(Finding::is_error)
    {
        refused = true;
        out.problem(&subject, Issue::Invalid(finding));
    }
    let Some(ports) = workload.template.annotation(helmrelease::PERMISSIVE_PORTS) else {
        return;
    };
    if refused {
        return;
    }
    let selector: Labels = match &workload.selector {
        // The labels the webhook adds at admission are left out, so that the Pod in git and the
        // Pod in the cluster select alike (a bare Pod's labels are its only selector).
        None => (workload.template.metadata.labels)
            .filtered(|key, _| key != INJECT_KEY && key != cfg.spire_identity_label),
        Some(selector) => {
            if selector
                .match_expressions
                .as_ref()
                .is_some_and(|e| !e.is_empty())
            {
                return out.problem(
                    &subject,
                    Issue::NoPodSelector(
                        "spec.selector has matchExpressions, which a PeerAuthentication cannot express",
                    ),
                );
            }
            selector.match_labels.clone().unwrap_or_default()
        }
    };
    if selector.is_empty() {
        let why = if is_pod {
            "the Pod has no labels of its own to select it by"
        } else {
            "spec.selector has no matchLabels"
        };
        return out.problem(&subject, Issue::NoPodSelector(why));
    }
    out.objects
        .push(objects::permissive_ports_peer_authentication(
            &subject,
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
    objects.retain(|o| !(*o.kind == kinds::VIRTUAL_SERVICE && losers.contains(&o.owner)));
}

/// Two owners that would write one object: neither does.
fn same_objects(objects: &mut Vec<MeshObject>, problems: &mut Vec<Problem>) {
    let mut owners: BTreeMap<(&'static Kind, &str, &str), BTreeSet<&ObjectRef>> = BTreeMap::new();
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
fn unmanaged(objects: &mut Vec<MeshObject>, model: &Model, problems: &mut Vec<Problem>) {
    objects.retain(|o| {
        let existing = model
            .collection(o.kind)
            .and_then(|c| c.metadata(o.kind, &o.namespace, &o.name));
        match existing {
            Some(meta) if !ownership::is_ours(meta) => {
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

/// The most owners a problem's message names: past it the rest are counted, so that a host many
/// claim makes messages of bounded size (each owner's names the others: n² otherwise).
const NAMED: usize = 5;

fn list<'a>(refs: impl Iterator<Item = &'a &'a ObjectRef>) -> String {
    let refs: Vec<&ObjectRef> = refs.copied().collect();
    let named = refs.iter().take(NAMED).map(ToString::to_string);
    let mut text = named.collect::<Vec<_>>().join(", ");
    if refs.len() > NAMED {
        text.push_str(&format!(" and {} more", refs.len() - NAMED));
    }
    text
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
