//! The one table of kinds mesh-admission reads. Everything that depends on a kind derives from it:
//! which view the envelope decodes, which rules `/mutate` and `/validate` apply, where a workload keeps
//! its pod template (for validation and for `review`), the metrics' `kind` label, the webhook rules of
//! `webhook-config` (the chart is compared with that), the matchConditions' template paths and the
//! fuzz targets' kinds. Adding a kind is one entry here plus its rules.
//!
//! Kinds that k8s-openapi knows take their group, version, kind and resource from the Rust type, so
//! none of those strings is spelled out by hand.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, ReplicationController, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};
use kube::core::admission::Operation;

/// Which mutation rules a kind gets at `/mutate` (and so which view the envelope decodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// The injection label (DESIGN.md section 4, Namespaces), on CREATE and UPDATE.
    Namespace,
    /// The SPIRE identity (DESIGN.md section 4, Pods), on CREATE only: a pod's spec is immutable after.
    Pod,
}

impl Mutator {
    pub fn operations(self) -> &'static [Operation] {
        match self {
            Mutator::Namespace => &[Operation::Create, Operation::Update],
            Mutator::Pod => &[Operation::Create],
        }
    }
}

/// Which validation rules a kind gets at `/validate` (on CREATE and UPDATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// The Big Bang mesh annotations (DESIGN.md section 5, HelmReleases).
    HelmRelease,
    /// The pod rules, on the kind's pod template (DESIGN.md section 5, Pods and pod templates).
    PodTemplate,
    /// The Istio security objects (DESIGN.md section 10), one rule module each.
    AuthorizationPolicy,
    PeerAuthentication,
    DestinationRule,
    VirtualService,
    Gateway,
}

impl Validator {
    /// Whether the rules read the object's spec, so that the apiserver must send every object of the
    /// kind: no cheap `matchConditions` test can tell beforehand that the answer will not matter.
    pub fn reads_spec(self) -> bool {
        match self {
            Validator::HelmRelease | Validator::PodTemplate => false,
            Validator::AuthorizationPolicy
            | Validator::PeerAuthentication
            | Validator::DestinationRule
            | Validator::VirtualService
            | Validator::Gateway => true,
        }
    }
}

/// The operations `/validate` is registered for.
pub const VALIDATED_OPERATIONS: &[Operation] = &[Operation::Create, Operation::Update];

/// What the one model of the mesh (`crate::model`, DESIGN.md section 1) holds a kind's objects as.
/// Workloads are held as their pod template; where that sits is [`Kind::template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modeled {
    Namespace,
    HelmRelease,
    Service,
    Workload,
    NetworkPolicy,
    PeerAuthentication,
    AuthorizationPolicy,
    DestinationRule,
    VirtualService,
    ClusterSpiffeId,
}

/// What `render` (DESIGN.md section 9) does with a kind, and so what the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// An input of the rules.
    Reads,
    /// Generated, in this version of its group (existing objects of the kind are read too: someone
    /// else's object of the same name is never overwritten).
    Generates(&'static str),
}

/// One kind: how the apiserver names it and what mesh-admission does with it.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// `""` for the core group.
    pub group: &'static str,
    /// The versions the webhooks are registered for (`["*"]`: every served version, read alike), newest
    /// first. The rules read every listed version alike.
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    /// The plural resource name of the webhook rules.
    pub resource: &'static str,
    /// The webhook rule's scope: `Namespaced`, or `*` for cluster-scoped kinds.
    pub scope: &'static str,
    pub mutate: Option<Mutator>,
    pub validate: Option<Validator>,
    /// Where the pod spec sits: `Some([])` for a Pod itself, the path of a workload's template, `None`
    /// for kinds without one. `review` mutates a workload's template as the Pod it makes.
    pub template: Option<&'static [&'static str]>,
    /// What the model of the mesh holds it as; `None`: not part of the model.
    pub model: Option<Modeled>,
    /// What `render` does with it; the controller watches exactly these kinds.
    pub render: Option<Render>,
    /// A custom resource whose CRD may be installed after the controller starts (Istio's, SPIRE's):
    /// the controller works without it meanwhile. A built-in kind is always served.
    pub optional: bool,
}

/// Kinds are told apart by group and kind: the table lists each once.
impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.kind) == (other.group, other.kind)
    }
}

impl Eq for Kind {}

impl std::hash::Hash for Kind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.group, self.kind).hash(state);
    }
}

/// By kind name first: `render` prints its objects sorted by kind.
impl Ord for Kind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.kind, self.group).cmp(&(other.kind, other.group))
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind)
    }
}

/// What a k8s-openapi type says about its scope, as a webhook rule writes it.
trait RuleScope {
    const SCOPE: &'static str;
}

impl RuleScope for NamespaceResourceScope {
    const SCOPE: &'static str = "Namespaced";
}

impl RuleScope for ClusterResourceScope {
    // Matches cluster-scoped objects just like `Cluster`; it is what the webhooks have always said.
    const SCOPE: &'static str = "*";
}

/// The one version of a kind that k8s-openapi knows, as a list.
struct VersionOf<K>(std::marker::PhantomData<K>);

impl<K: Resource> VersionOf<K> {
    const LIST: &'static [&'static str] = &[K::VERSION];
}

impl Kind {
    /// A kind that k8s-openapi knows, with no rules yet.
    const fn of<K>() -> Kind
    where
        K: Resource,
        K::Scope: RuleScope,
    {
        Kind {
            group: K::GROUP,
            versions: VersionOf::<K>::LIST,
            kind: K::KIND,
            resource: K::URL_PATH_SEGMENT,
            scope: <K::Scope as RuleScope>::SCOPE,
            mutate: None,
            validate: None,
            template: None,
            model: None,
            render: None,
            optional: false,
        }
    }

    const fn mutated(self, mutator: Mutator) -> Kind {
        Kind {
            mutate: Some(mutator),
            ..self
        }
    }

    const fn validated(self, validator: Validator) -> Kind {
        Kind {
            validate: Some(validator),
            ..self
        }
    }

    const fn template_at(self, path: &'static [&'static str]) -> Kind {
        Kind {
            template: Some(path),
            ..self
        }
    }

    const fn modeled(self, model: Modeled) -> Kind {
        Kind {
            model: Some(model),
            ..self
        }
    }

    const fn rendered(self, render: Render) -> Kind {
        Kind {
            render: Some(render),
            ..self
        }
    }

    /// A namespaced custom resource k8s-openapi does not know, served once its CRD is installed.
    const fn custom(
        group: &'static str,
        versions: &'static [&'static str],
        kind: &'static str,
        resource: &'static str,
    ) -> Kind {
        Kind {
            group,
            versions,
            kind,
            resource,
            scope: "Namespaced",
            mutate: None,
            validate: None,
            template: None,
            model: None,
            render: None,
            optional: true,
        }
    }

    const fn cluster_scoped(self) -> Kind {
        Kind { scope: "*", ..self }
    }

    /// A workload whose pod template the pod rules validate and the model holds.
    const fn workload<K>(path: &'static [&'static str]) -> Kind
    where
        K: Resource,
        K::Scope: RuleScope,
    {
        Kind::of::<K>()
            .validated(Validator::PodTemplate)
            .template_at(path)
            .modeled(Modeled::Workload)
    }

    /// The mutation rules for this kind and operation, if any.
    pub fn mutator(&self, operation: &Operation) -> Option<Mutator> {
        self.mutate.filter(|m| m.operations().contains(operation))
    }

    /// Whether this is a workload, whose template `review` mutates as the Pods it makes.
    pub fn is_workload(&self) -> bool {
        self.template.is_some_and(|path| !path.is_empty())
    }

    /// Whether its objects are cluster-scoped (no namespace).
    pub fn is_cluster_scoped(&self) -> bool {
        self.scope == "*"
    }

    /// The version `render` writes, for a generated kind.
    pub fn generated_version(&self) -> Option<&'static str> {
        match self.render {
            Some(Render::Generates(version)) => Some(version),
            _ => None,
        }
    }

    /// The version the controller watches it in, unless the API must be asked (a HelmRelease's,
    /// whichever the cluster serves): the one `render` writes for a generated kind, else the
    /// table's.
    pub fn watched_version(&self) -> Option<&'static str> {
        let version = self.generated_version().or(self.versions.first().copied());
        version.filter(|v| *v != "*")
    }

    /// The `apiVersion` of `version` of this kind: `v1` for the core group, `GROUP/VERSION` else.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

const TEMPLATE: &[&str] = &["spec", "template"];
/// Istio's API groups and the versions their CRDs serve (every one, so that `matchPolicy: Equivalent`
/// never has to convert).
const ISTIO_SECURITY: &str = "security.istio.io";
const ISTIO_SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
const ISTIO_NETWORKING: &str = "networking.istio.io";
const ISTIO_NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
/// The Istio kinds `render` generates, in their GA version (Istio 1.22 and later).
const ISTIO_GENERATED: Render = Render::Generates("v1");

pub static NAMESPACE: Kind = Kind::of::<Namespace>()
    .mutated(Mutator::Namespace)
    .modeled(Modeled::Namespace)
    .rendered(Render::Reads);
/// Flux's HelmRelease, in whichever version the cluster serves (the controller asks it).
pub static HELM_RELEASE: Kind = Kind {
    optional: false,
    ..Kind::custom(
        "helm.toolkit.fluxcd.io",
        &["*"],
        "HelmRelease",
        "helmreleases",
    )
    .validated(Validator::HelmRelease)
    .modeled(Modeled::HelmRelease)
    .rendered(Render::Reads)
};
pub static POD: Kind = Kind::of::<Pod>()
    .mutated(Mutator::Pod)
    .validated(Validator::PodTemplate)
    .template_at(&[])
    .modeled(Modeled::Workload)
    .rendered(Render::Reads);
pub static DEPLOYMENT: Kind = Kind::workload::<Deployment>(TEMPLATE).rendered(Render::Reads);
pub static STATEFUL_SET: Kind = Kind::workload::<StatefulSet>(TEMPLATE).rendered(Render::Reads);
pub static DAEMON_SET: Kind = Kind::workload::<DaemonSet>(TEMPLATE).rendered(Render::Reads);
pub static REPLICA_SET: Kind = Kind::workload::<ReplicaSet>(TEMPLATE).rendered(Render::Reads);
pub static JOB: Kind = Kind::workload::<Job>(TEMPLATE);
pub static CRON_JOB: Kind = Kind::workload::<CronJob>(&["spec", "jobTemplate", "spec", "template"]);
/// Not validated (DESIGN.md section 5 leaves it out), but `review` shows the Pods it makes.
pub static REPLICATION_CONTROLLER: Kind = Kind::of::<ReplicationController>().template_at(TEMPLATE);
pub static SERVICE: Kind = Kind::of::<Service>()
    .modeled(Modeled::Service)
    .rendered(Render::Reads);
pub static NETWORK_POLICY: Kind = Kind::of::<NetworkPolicy>()
    .modeled(Modeled::NetworkPolicy)
    .rendered(Render::Generates(NetworkPolicy::VERSION));
pub static AUTHORIZATION_POLICY: Kind = Kind::custom(
    ISTIO_SECURITY,
    ISTIO_SECURITY_VERSIONS,
    "AuthorizationPolicy",
    "authorizationpolicies",
)
.validated(Validator::AuthorizationPolicy)
.modeled(Modeled::AuthorizationPolicy)
.rendered(ISTIO_GENERATED);
pub static PEER_AUTHENTICATION: Kind = Kind::custom(
    ISTIO_SECURITY,
    ISTIO_SECURITY_VERSIONS,
    "PeerAuthentication",
    "peerauthentications",
)
.validated(Validator::PeerAuthentication)
.modeled(Modeled::PeerAuthentication)
.rendered(ISTIO_GENERATED);
pub static DESTINATION_RULE: Kind = Kind::custom(
    ISTIO_NETWORKING,
    ISTIO_NETWORKING_VERSIONS,
    "DestinationRule",
    "destinationrules",
)
.validated(Validator::DestinationRule)
.modeled(Modeled::DestinationRule);
pub static VIRTUAL_SERVICE: Kind = Kind::custom(
    ISTIO_NETWORKING,
    ISTIO_NETWORKING_VERSIONS,
    "VirtualService",
    "virtualservices",
)
.validated(Validator::VirtualService)
.modeled(Modeled::VirtualService)
.rendered(ISTIO_GENERATED);
pub static GATEWAY: Kind = Kind::custom(
    ISTIO_NETWORKING,
    ISTIO_NETWORKING_VERSIONS,
    "Gateway",
    "gateways",
)
.validated(Validator::Gateway);
/// SPIRE's registration of workloads (DESIGN.md section 13).
pub static CLUSTER_SPIFFE_ID: Kind = Kind::custom(
    "spire.spiffe.io",
    &["v1alpha1"],
    "ClusterSPIFFEID",
    "clusterspiffeids",
)
.cluster_scoped()
.modeled(Modeled::ClusterSpiffeId);

/// Every kind mesh-admission reads.
pub static KINDS: &[&Kind] = &[
    &NAMESPACE,
    &HELM_RELEASE,
    &POD,
    &DEPLOYMENT,
    &STATEFUL_SET,
    &DAEMON_SET,
    &REPLICA_SET,
    &JOB,
    &CRON_JOB,
    &REPLICATION_CONTROLLER,
    &SERVICE,
    &NETWORK_POLICY,
    &AUTHORIZATION_POLICY,
    &PEER_AUTHENTICATION,
    &DESTINATION_RULE,
    &VIRTUAL_SERVICE,
    &GATEWAY,
    &CLUSTER_SPIFFE_ID,
];

/// An operation as the apiserver spells it.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The kind with this group and name (`core` is accepted for the core group, as some clients write it).
pub fn find(group: &str, kind: &str) -> Option<&'static Kind> {
    let group = if group == "core" { "" } else { group };
    KINDS
        .iter()
        .copied()
        .find(|k| k.group == group && k.kind == kind)
}

/// The kinds `/validate` reads.
pub fn validated() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().copied().filter(|k| k.validate.is_some())
}

/// The kinds with this mutator.
pub fn mutated_by(mutator: Mutator) -> impl Iterator<Item = &'static Kind> {
    KINDS
        .iter()
        .copied()
        .filter(move |k| k.mutate == Some(mutator))
}

/// The kinds the model of the mesh holds.
pub fn modeled() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().copied().filter(|k| k.model.is_some())
}

/// The kinds `render` reads or generates: what the controller watches.
pub fn rendered() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().copied().filter(|k| k.render.is_some())
}

/// The kinds `render` generates, in output order.
pub fn generated() -> impl Iterator<Item = &'static Kind> {
    let mut kinds: Vec<&'static Kind> = KINDS
        .iter()
        .copied()
        .filter(|k| k.generated_version().is_some())
        .collect();
    kinds.sort();
    kinds.into_iter()
}

/// The API groups of the kinds whose every object `/validate` must see ([`Validator::reads_spec`]), in
/// table order.
pub fn spec_validated_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for kind in validated().filter(|k| k.validate.is_some_and(Validator::reads_spec)) {
        if !groups.contains(&kind.group) {
            groups.push(kind.group);
        }
    }
    groups
}

/// The distinct template paths of the validated kinds, the object's own (`[]`) first.
pub fn template_paths() -> Vec<&'static [&'static str]> {
    let mut paths: Vec<&'static [&'static str]> = Vec::new();
    for path in validated().filter_map(|k| k.template) {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths.sort_by_key(|p| p.len());
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_group_and_name_with_core_spelled_either_way() {
        for (group, kind) in [("", "Pod"), ("core", "Pod"), ("apps", "Deployment")] {
            assert_eq!(find(group, kind).map(|k| k.kind), Some(kind));
        }
        assert_eq!(find("apps", "Pod"), None);
        assert_eq!(find("", "ConfigMap"), None);
        let cron_job = find("batch", "CronJob").unwrap();
        assert_eq!(
            (cron_job.versions, cron_job.resource, cron_job.scope),
            (&["v1"][..], "cronjobs", "Namespaced")
        );
        assert_eq!(find("", "Namespace").unwrap().scope, "*");
    }

    #[test]
    fn istio_kinds_are_validated_in_every_served_version_and_other_gateways_are_not_ours() {
        let policy = find("security.istio.io", "AuthorizationPolicy").unwrap();
        assert_eq!(policy.versions, ["v1", "v1beta1"]);
        assert_eq!(policy.resource, "authorizationpolicies");
        assert_eq!(policy.validate, Some(Validator::AuthorizationPolicy));
        let gateway = find("networking.istio.io", "Gateway").unwrap();
        assert_eq!(gateway.versions, ["v1", "v1beta1", "v1alpha3"]);
        assert_eq!(find("gateway.networking.k8s.io", "Gateway"), None);
        assert_eq!(
            spec_validated_groups(),
            ["security.istio.io", "networking.istio.io"]
        );
        assert!(!Validator::HelmRelease.reads_spec());
    }

    #[test]
    fn pods_are_mutated_on_create_only_and_namespaces_on_every_write() {
        let pod = find("", "Pod").unwrap();
        assert_eq!(pod.mutator(&Operation::Create), Some(Mutator::Pod));
        assert_eq!(pod.mutator(&Operation::Update), None);
        let namespace = find("", "Namespace").unwrap();
        assert_eq!(
            namespace.mutator(&Operation::Update),
            Some(Mutator::Namespace)
        );
        assert_eq!(namespace.mutator(&Operation::Delete), None);
    }

    #[test]
    fn render_reads_and_generates_what_section_9_says_and_the_controller_watches_just_that() {
        let names = |kinds: Vec<&Kind>| kinds.iter().map(|k| k.kind).collect::<Vec<_>>();
        assert_eq!(
            names(generated().collect()),
            [
                "AuthorizationPolicy",
                "NetworkPolicy",
                "PeerAuthentication",
                "VirtualService"
            ]
        );
        let read: Vec<&Kind> = rendered()
            .filter(|k| k.render == Some(Render::Reads))
            .collect();
        assert_eq!(
            names(read),
            [
                "Namespace",
                "HelmRelease",
                "Pod",
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "ReplicaSet",
                "Service"
            ]
        );
        // Versions watched: the one written for a generated kind, the served one for a
        // HelmRelease (asked of the API), the table's else.
        assert_eq!(VIRTUAL_SERVICE.watched_version(), Some("v1"));
        assert_eq!(NETWORK_POLICY.api_version("v1"), "networking.k8s.io/v1");
        assert_eq!(HELM_RELEASE.watched_version(), None);
        assert_eq!(DEPLOYMENT.watched_version(), Some("v1"));
        // Only Istio's and SPIRE's kinds may be missing while the controller runs.
        let optional: Vec<&str> = KINDS
            .iter()
            .filter(|k| k.optional)
            .map(|k| k.group)
            .collect();
        assert!(
            optional
                .iter()
                .all(|g| g.ends_with("istio.io") || *g == "spire.spiffe.io")
        );
        assert!(CLUSTER_SPIFFE_ID.is_cluster_scoped() && NAMESPACE.is_cluster_scoped());
        assert!(!SERVICE.is_cluster_scoped());
    }

    #[test]
    fn kinds_sort_by_name_and_are_told_apart_by_group_and_kind() {
        assert!(AUTHORIZATION_POLICY < NETWORK_POLICY && PEER_AUTHENTICATION < VIRTUAL_SERVICE);
        assert_eq!(*find("networking.istio.io", "Gateway").unwrap(), GATEWAY);
        assert_ne!(GATEWAY, VIRTUAL_SERVICE);
        assert_eq!(VIRTUAL_SERVICE.to_string(), "VirtualService");
    }

    #[test]
    fn each_kind_is_listed_once_and_template_paths_are_distinct() {
        for (i, a) in KINDS.iter().enumerate() {
            assert!(
                KINDS[i + 1..]
                    .iter()
                    .all(|b| (a.group, a.kind) != (b.group, b.kind)),
                "{} twice",
                a.kind
            );
        }
        assert_eq!(
            template_paths(),
            vec![
                &[][..],
                &["spec", "template"][..],
                &["spec", "jobTemplate", "spec", "template"][..]
            ]
        );
        assert!(find("", "ReplicationController").unwrap().is_workload());
        assert!(!find("", "Pod").unwrap().is_workload());
    }
}
