//! The Istio findings only the whole set shows (DESIGN.md section 13): principals and namespaces no
//! workload has, selectors that select nothing, port-level mTLS on undeclared ports, a second
//! namespace-wide PeerAuthentication, routes to Services that do not exist.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::finding::{AuditFinding, Level, Subject};
use super::stored::PORT_NOT_DECLARED;
use crate::config::Config;
use crate::model::core::Workload;
use crate::model::istio::{Route, Source, WorkloadSelector};
use crate::model::{Key, LabelSelector, Metadata, Model};
use crate::policy::finding::Finding;
use crate::policy::istio::authorization_policy::{LOCAL_TRUST_DOMAIN, SPIFFE_SCHEME};
use crate::policy::kinds;

pub const PRINCIPAL_UNKNOWN: &str = "principal-unknown";
pub const SELECTOR_MATCHES_NOTHING: &str = "selector-matches-nothing";
pub const SECOND_PEER_AUTHENTICATION: &str = "second-namespace-peer-authentication";
pub const ROUTE_DESTINATION_MISSING: &str = "route-destination-missing";

/// Every Istio finding of the set.
pub fn findings(model: &Model, cfg: &Config) -> Vec<AuditFinding> {
    let mut out = Vec::new();
    principals(model, cfg, &mut out);
    selectors(model, cfg, &mut out);
    second_peer_authentications(model, &mut out);
    routes(model, &mut out);
    out
}

fn subject(key: &Key, metadata: &Metadata) -> Subject {
    Subject::of(key, metadata.identity.uid.as_deref())
}

fn finding(rule: &str, level: Level, subject: &Subject, f: Finding) -> AuditFinding {
    AuditFinding::new(rule, level, subject.clone(), f.to_string())
}

// ---------------------------------------------------------------------------------------------
// principal-unknown

/// Who runs in the mesh: every workload's namespace and service account, and the configured
/// gateways' (whose pods are often installed apart from the applications).
struct Identities {
    accounts: BTreeSet<(String, String)>,
    namespaces: BTreeSet<String>,
}

impl Identities {
    fn of(model: &Model, cfg: &Config) -> Self {
        let mut accounts = BTreeSet::new();
        for (_, workload) in model.workloads.iter() {
            let account = workload.template.service_account();
            accounts.insert((workload.namespace().to_owned(), account.to_owned()));
        }
        for gateway in &cfg.mesh.gateways {
            accounts.insert((gateway.namespace.clone(), gateway.service_account.clone()));
        }
        let namespaces = accounts.iter().map(|(ns, _)| ns.clone()).collect();
        Identities {
            accounts,
            namespaces,
        }
    }
}

fn principals(model: &Model, cfg: &Config, out: &mut Vec<AuditFinding>) {
    let identities = Identities::of(model, cfg);
    let mesh = &cfg.mesh;
    let local = |domain: &str| {
        domain == mesh.trust_domain
            || domain == LOCAL_TRUST_DOMAIN
            || mesh.trust_domain_aliases.iter().any(|a| a == domain)
    };
    for (key, policy) in model.authorization_policies.iter() {
        let subject = subject(key, &policy.metadata);
        for (i, rule) in policy.spec.rules.iter().flatten().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(source) = &from.source else {
                    continue;
                };
                let at = format!("spec.rules[{i}].from[{j}].source");
                for (name, list) in principal_lists(source) {
                    for (k, value) in list.iter().enumerate() {
                        let field = format!("{at}.{name}[{k}]");
                        let Some((domain, namespace, account)) = exact_principal(value) else {
                            continue;
                        };
                        let known = identities
                            .accounts
                            .contains(&(namespace.to_owned(), account.to_owned()));
                        if local(domain) && !known {
                            let problem = format!(
                                "no workload runs as service account {account:?} in namespace \
                                 {namespace:?}: a typo or a leftover, it matches nobody"
                            );
                            let f = Finding::warning(field, problem).with_value(value);
                            out.push(finding(PRINCIPAL_UNKNOWN, Level::Warning, &subject, f));
                        }
                    }
                }
                for (name, list) in namespace_lists(source) {
                    for (k, value) in list.iter().enumerate() {
                        if value.contains('*') || identities.namespaces.contains(value) {
                            continue;
                        }
                        let problem = format!(
                            "no workload runs in namespace {value:?}: a typo or a leftover, it \
                             matches nobody"
                        );
                        let f = Finding::warning(format!("{at}.{name}[{k}]"), problem)
                            .with_value(value);
                        out.push(finding(PRINCIPAL_UNKNOWN, Level::Warning, &subject, f));
                    }
                }
            }
        }
    }
}

fn principal_lists(source: &Source) -> [(&'static str, &[String]); 2] {
    [
        (
            "principals",
            source.principals.as_deref().unwrap_or_default(),
        ),
        (
            "notPrincipals",
            source.not_principals.as_deref().unwrap_or_default(),
        ),
    ]
}

fn namespace_lists(source: &Source) -> [(&'static str, &[String]); 2] {
    [
        (
            "namespaces",
            source.namespaces.as_deref().unwrap_or_default(),
        ),
        (
            "notNamespaces",
            source.not_namespaces.as_deref().unwrap_or_default(),
        ),
    ]
}

/// `(trust domain, namespace, service account)` of a principal without `*` of Istio's form; the
/// malformed ones are section 10's errors.
fn exact_principal(value: &str) -> Option<(&str, &str, &str)> {
    if value.contains('*') || value.to_ascii_lowercase().starts_with(SPIFFE_SCHEME) {
        return None;
    }
    let parts: Vec<&str> = value.split('/').collect();
    match parts[..] {
        [domain, "ns", namespace, "sa", account]
            if !domain.is_empty() && !namespace.is_empty() && !account.is_empty() =>
        {
            Some((domain, namespace, account))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// selector-matches-nothing and port-not-declared

/// The workloads an Istio `selector` of an object in `namespace` selects: those of its namespace,
/// or of every namespace for an object in the root namespace.
fn selected<'m>(
    model: &'m Model,
    namespace: &'m str,
    selector: &WorkloadSelector,
    cfg: &Config,
) -> Vec<&'m Arc<Workload>> {
    let selector = LabelSelector::labels(&selector.match_labels.clone().unwrap_or_default());
    let selects = |w: &&Arc<Workload>| selector.matches(&w.template.metadata.labels);
    if namespace == cfg.mesh.root_namespace {
        return model
            .workloads
            .iter()
            .map(|(_, w)| w)
            .filter(selects)
            .collect();
    }
    let in_namespace = model.workloads.in_namespace(namespace).map(|(_, w)| w);
    in_namespace.filter(selects).collect()
}

fn selects_nothing(namespace: &str, cfg: &Config) -> Finding {
    let problem = if namespace == cfg.mesh.root_namespace {
        format!(
            "selects no workload of any namespace (it is in the root namespace {namespace:?}): \
             the policy applies to nothing"
        )
    } else {
        format!("selects no workload of namespace {namespace:?}: the policy applies to nothing")
    };
    Finding::warning("spec.selector.matchLabels", problem)
}

fn selectors(model: &Model, cfg: &Config, out: &mut Vec<AuditFinding>) {
    for (key, policy) in model.authorization_policies.iter() {
        let spec = &policy.spec;
        let targeted = spec.target_ref.is_some() || spec.target_refs.is_some();
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if !targeted && selected(model, &key.namespace, selector, cfg).is_empty() {
            let f = selects_nothing(&key.namespace, cfg);
            let subject = subject(key, &policy.metadata);
            out.push(finding(
                SELECTOR_MATCHES_NOTHING,
                Level::Warning,
                &subject,
                f,
            ));
        }
    }
    for (key, pa) in model.peer_authentications.iter() {
        let Some(selector) = pa.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let subject = subject(key, &pa.metadata);
        let workloads = selected(model, &key.namespace, selector, cfg);
        if workloads.is_empty() {
            let f = selects_nothing(&key.namespace, cfg);
            out.push(finding(
                SELECTOR_MATCHES_NOTHING,
                Level::Warning,
                &subject,
                f,
            ));
            continue;
        }
        let declared: BTreeSet<u16> = workloads
            .iter()
            .flat_map(|w| w.template.declared_ports())
            .collect();
        for port in pa.spec.port_level_mtls.iter().flat_map(|m| m.keys()) {
            let Ok(number) = port.parse::<u16>() else {
                continue;
            };
            if !declared.contains(&number) {
                let problem = format!(
                    "no selected workload declares port {number} as a container port: Istio \
                     applies port-level mTLS only to declared ports"
                );
                let f = Finding::warning(format!("spec.portLevelMtls[{port}]"), problem);
                out.push(finding(PORT_NOT_DECLARED, Level::Warning, &subject, f));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// second-namespace-peer-authentication

fn second_peer_authentications(model: &Model, out: &mut Vec<AuditFinding>) {
    let namespaces: BTreeSet<&str> = model
        .peer_authentications
        .iter()
        .map(|(key, _)| key.namespace.as_str())
        .collect();
    for namespace in namespaces {
        let mut wide: Vec<_> = model
            .peer_authentications
            .in_namespace(namespace)
            .filter(|(_, pa)| pa.spec.is_namespace_wide())
            .collect();
        // Istio applies the oldest; objects in git carry no timestamp and sort after, by name.
        wide.sort_by(|(a_key, a), (b_key, b)| {
            let age = |created: &Option<_>| (created.is_none(), created.clone());
            (age(&a.metadata.identity.creation_timestamp), &a_key.name)
                .cmp(&(age(&b.metadata.identity.creation_timestamp), &b_key.name))
        });
        let Some(((oldest, _), newer)) = wide.split_first() else {
            continue;
        };
        for (key, pa) in newer {
            let problem = format!(
                "a second PeerAuthentication without selector in namespace {namespace:?}: Istio \
                 uses the oldest, {}, and this one does nothing",
                Subject::of(oldest, None)
            );
            let f = Finding::error("spec.selector", problem);
            let subject = subject(key, &pa.metadata);
            out.push(finding(
                SECOND_PEER_AUTHENTICATION,
                Level::Error,
                &subject,
                f,
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// route-destination-missing

/// The `(namespace, name)` of the Service an in-mesh host names, for a VirtualService in
/// `namespace`: a short name (Istio resolves it there), `name.ns.svc` or `name.ns.svc.cluster.local`.
/// Other hosts (external names, wildcards) are not judged.
fn service_of<'h>(host: &'h str, namespace: &'h str) -> Option<(&'h str, &'h str)> {
    if host.contains('*') {
        return None;
    }
    if !host.contains('.') {
        return Some((namespace, host));
    }
    let rest = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (name, namespace) = rest.split_once('.')?;
    (!namespace.contains('.')).then_some((namespace, name))
}

fn routes(model: &Model, out: &mut Vec<AuditFinding>) {
    for (key, vs) in model.virtual_services.iter() {
        let subject = subject(key, &vs.metadata);
        let spec = &vs.spec;
        let lists: [(&str, &Option<Vec<Route>>); 3] =
            [("http", &spec.http), ("tcp", &spec.tcp), ("tls", &spec.tls)];
        for (list, routes) in lists {
            for (i, route) in routes.iter().flatten().enumerate() {
                for (j, target) in route.route.iter().flatten().enumerate() {
                    let Some(destination) = &target.destination else {
                        continue;
                    };
                    let at = format!("spec.{list}[{i}].route[{j}].destination");
                    let Some(host) = destination.host.as_deref() else {
                        continue;
                    };
                    let Some((namespace, name)) = service_of(host, &key.namespace) else {
                        continue;
                    };
                    let Some(service) = model.services.get(&kinds::SERVICE, namespace, name) else {
                        let problem = format!("no Service {name:?} in namespace {namespace:?}");
                        let f = Finding::warning(format!("{at}.host"), problem).with_value(host);
                        out.push(finding(
                            ROUTE_DESTINATION_MISSING,
                            Level::Warning,
                            &subject,
                            f,
                        ));
                        continue;
                    };
                    let Some(port) = destination.port.as_ref().and_then(|p| p.number) else {
                        continue;
                    };
                    let has = service
                        .spec
                        .ports
                        .iter()
                        .any(|p| p.port == Some(i64::from(port)));
                    if !has {
                        let problem = format!("Service {namespace}/{name} has no port {port}");
                        let f = Finding::warning(format!("{at}.port.number"), problem)
                            .with_value(port.to_string());
                        out.push(finding(
                            ROUTE_DESTINATION_MISSING,
                            Level::Warning,
                            &subject,
                            f,
                        ));
                    }
                }
            }
        }
    }
}
