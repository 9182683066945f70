//! Layer 3, AuthorizationPolicy (DESIGN.md section 12), at a destination with a sidecar: the
//! policies of its namespace and of the root namespace that select it (or select nothing), decided
//! as Istio does: CUSTOM goes to the external authorizer, a matching DENY refuses, and when an ALLOW
//! policy applies some ALLOW rule must match. What only requests show (methods, paths, headers…)
//! makes a rule partial.

use std::sync::Arc;

use super::nodes::Node;
use super::verdict::{Layer, LayerDecision, Match, Outcome, Security};
use crate::config::MeshConfig;
use crate::model::Model;
use crate::model::istio::{AuthorizationPolicySpec, Condition, Operation, Rule, Source};
use crate::policy::istio::authorization_policy::{namespace_matches, principal_matches};

/// One AuthorizationPolicy.
#[derive(Debug)]
pub struct Policy<'m> {
    pub name: Arc<str>,
    pub namespace: &'m str,
    pub spec: &'m AuthorizationPolicySpec,
}

impl Policy<'_> {
    fn action(&self) -> &str {
        self.spec.action.as_deref().unwrap_or("ALLOW")
    }

    /// Whether it is attached by `targetRef`/`targetRefs` (to a waypoint or gateway): not evaluated.
    pub fn is_targeted(&self) -> bool {
        self.spec.target_ref.is_some()
            || self
                .spec
                .target_refs
                .as_ref()
                .is_some_and(|t| !t.is_empty())
    }
}

/// A policy that the graph lists without evaluating it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NotEvaluated {
    #[serde(serialize_with = "super::verdict::name")]
    pub object: Arc<str>,
    pub reason: String,
}

/// The AuthorizationPolicies, and the ones applying to each node.
#[derive(Debug)]
pub struct Policies<'m> {
    policies: Vec<Policy<'m>>,
    applying: Vec<Vec<usize>>,
    mesh: &'m MeshConfig,
}

impl<'m> Policies<'m> {
    pub fn new(model: &'m Model, nodes: &[Node], mesh: &'m MeshConfig) -> Self {
        let policies: Vec<Policy<'m>> = model
            .authorization_policies
            .iter()
            .map(|(key, policy)| Policy {
                name: Arc::from(format!(
                    "AuthorizationPolicy/{}/{}",
                    key.namespace, key.name
                )),
                namespace: &key.namespace,
                spec: &policy.spec,
            })
            .collect();
        let root = mesh.root_namespace.as_str();
        let applying = nodes
            .iter()
            .map(|node| {
                if !node.sidecar {
                    return Vec::new();
                }
                policies
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.is_targeted())
                    .filter(|(_, p)| p.namespace == node.namespace || p.namespace == root)
                    .filter(|(_, p)| {
                        p.spec
                            .selector
                            .as_ref()
                            .and_then(|s| s.match_labels.as_ref())
                            .is_none_or(|labels| node.labels.contains_all(labels))
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Policies {
            policies,
            applying,
            mesh,
        }
    }

    /// The policies attached by `targetRefs`, listed as not evaluated.
    pub fn not_evaluated(&self) -> Vec<NotEvaluated> {
        self.policies
            .iter()
            .filter(|p| p.is_targeted())
            .map(|p| NotEvaluated {
                object: p.name.clone(),
                reason: "targetRefs: applies to waypoints and gateways, which the graph does not evaluate".into(),
            })
            .collect()
    }

    /// The authorization layer for a connection.
    pub fn decide(
        &self,
        nodes: &[Node],
        src: usize,
        dst: usize,
        port: u16,
        security: Security,
        explain: bool,
    ) -> LayerDecision {
        let mesh = self.mesh;
        let (from, to) = (&nodes[src], &nodes[dst]);
        let mut decision = LayerDecision::new(Layer::Authorization, Outcome::Allowed);
        if !to.sidecar {
            decision.outcome = Outcome::Skipped;
            if explain {
                decision.why = format!(
                    "{} has no sidecar: nothing enforces AuthorizationPolicies",
                    to.name
                )
                .into();
            }
            return decision;
        }
        let peer = Peer {
            from,
            port,
            security,
            mesh,
        };
        let mut custom = Vec::new();
        let mut denying = Vec::new();
        let mut deny_conditions = Vec::new();
        let mut allow_policies = Vec::new();
        let mut allowing = Vec::new();
        let mut allow_conditions = Vec::new();
        for &i in &self.applying[dst] {
            let policy = &self.policies[i];
            let rules = policy.spec.rules.as_deref().unwrap_or_default();
            let found = || Match::any(rules.iter().map(|r| peer.rule(r)));
            match policy.action() {
                "CUSTOM" => {
                    let provider = policy
                        .spec
                        .provider
                        .as_ref()
                        .and_then(|p| p.name.as_deref())
                        .unwrap_or("(none)");
                    let when = match found() {
                        Match::No => continue,
                        Match::Yes => String::new(),
                        partial => format!(" when {}", partial.phrase()),
                    };
                    custom.push(format!(
                        "decided by the external authorizer {provider}{when} ({})",
                        policy.name
                    ));
                    decision.by.push(policy.name.clone());
                }
                "DENY" => match found() {
                    Match::Yes => denying.push(policy.name.clone()),
                    Match::Partial(c) => {
                        deny_conditions.push(format!(
                            "denied when {} ({})",
                            Match::Partial(c).phrase(),
                            policy.name
                        ));
                        decision.by.push(policy.name.clone());
                    }
                    Match::No => {}
                },
                "ALLOW" => {
                    allow_policies.push(policy.name.clone());
                    match found() {
                        Match::Yes => allowing.push(policy.name.clone()),
                        Match::Partial(c) => {
                            allow_conditions.push((policy.name.clone(), Match::Partial(c).phrase()))
                        }
                        Match::No => {}
                    }
                }
                // AUDIT only logs.
                _ => {}
            }
        }
        if !denying.is_empty() {
            decision.outcome = Outcome::Denied;
            decision.by = denying;
            if explain {
                decision.why = "a DENY rule matches".into();
            }
            return decision;
        }
        let mut conditions = custom;
        conditions.extend(deny_conditions);
        if allow_policies.is_empty() {
            if explain {
                decision.why = "no ALLOW policy applies".into();
            }
        } else if !allowing.is_empty() {
            decision.by.extend(allowing);
            if explain {
                decision.why = "an ALLOW rule matches".into();
            }
        } else if !allow_conditions.is_empty() {
            for (name, phrase) in allow_conditions {
                conditions.push(format!("allowed when {phrase} ({name})"));
                decision.by.push(name);
            }
            if explain {
                decision.why = "an ALLOW rule matches some requests".into();
            }
        } else {
            decision.outcome = Outcome::Denied;
            decision.by = allow_policies;
            if explain {
                decision.why = "ALLOW policies apply and no ALLOW rule matches".into();
            }
            return decision;
        }
        if !conditions.is_empty() {
            decision.outcome = Outcome::Partial;
            decision.conditions = conditions;
        }
        decision
    }
}

/// The source end of a connection as the rules see it.
struct Peer<'a> {
    from: &'a Node,
    port: u16,
    security: Security,
    mesh: &'a MeshConfig,
}

/// The source fields decided from the connection's identity.
#[derive(Debug, Clone, Copy)]
enum Field {
    Principal,
    Namespace,
    ServiceAccount,
}

/// A list field: absent and empty both mean "no constraint".
fn listed(list: &Option<Vec<String>>) -> Option<&[String]> {
    list.as_deref().filter(|l| !l.is_empty())
}

fn unknowable(field: &str, values: &[String]) -> Match {
    Match::Partial(vec![format!("{field} [{}]", values.join(", "))])
}

impl Peer<'_> {
    /// A rule matches when its `from`, `to` and `when` all do.
    fn rule(&self, rule: &Rule) -> Match {
        let from = match rule.from.as_deref() {
            None | Some([]) => Match::Yes,
            Some(list) => Match::any(
                list.iter()
                    .map(|f| f.source.as_ref().map_or(Match::Yes, |s| self.source(s))),
            ),
        };
        if from == Match::No {
            return Match::No;
        }
        let to = match rule.to.as_deref() {
            None | Some([]) => Match::Yes,
            Some(list) => Match::any(list.iter().map(|t| {
                t.operation
                    .as_ref()
                    .map_or(Match::Yes, |o| self.operation(o))
            })),
        };
        let when = Match::all(rule.when.iter().flatten().map(|c| self.condition(c)));
        Match::all([from, to, when])
    }

    /// The identity, when the connection carries one.
    fn identity(&self) -> Option<&str> {
        (self.security == Security::Mtls)
            .then_some(self.from.identity.as_deref())
            .flatten()
    }

    /// `principals` and `namespaces` need an identity; their `not` forms match a connection without
    /// one (no identity is in no list), as Istio's `notPrincipals: ["*"]` relies on. `matches`
    /// compares one listed value with the source.
    fn names(&self, values: &[String], negated: bool, matches: impl Fn(&str) -> bool) -> Match {
        match self.identity() {
            None => Match::of(negated),
            Some(_) => Match::of(values.iter().any(|v| matches(v)) != negated),
        }
    }

    fn principal(&self, values: &[String], negated: bool) -> Match {
        let identity = self.identity().unwrap_or_default();
        self.names(values, negated, |v| {
            principal_matches(v, identity, self.mesh)
        })
    }

    fn namespace(&self, values: &[String], negated: bool) -> Match {
        let namespace = self.from.namespace.as_str();
        self.names(values, negated, |v| namespace_matches(v, namespace))
    }

    fn service_account(&self, values: &[String], negated: bool) -> Match {
        let namespace = self.from.namespace.as_str();
        let account = self.from.service_account.as_deref().unwrap_or_default();
        // `namespace/name`.
        self.names(values, negated, |v| {
            v.split_once('/') == Some((namespace, account))
        })
    }

    fn source(&self, source: &Source) -> Match {
        let mut parts = Vec::new();
        let decided = [
            (&source.principals, Field::Principal, false),
            (&source.not_principals, Field::Principal, true),
            (&source.namespaces, Field::Namespace, false),
            (&source.not_namespaces, Field::Namespace, true),
            (&source.service_accounts, Field::ServiceAccount, false),
            (&source.not_service_accounts, Field::ServiceAccount, true),
        ];
        for (list, field, negated) in decided {
            if let Some(values) = listed(list) {
                parts.push(match field {
                    Field::Principal => self.principal(values, negated),
                    Field::Namespace => self.namespace(values, negated),
                    Field::ServiceAccount => self.service_account(values, negated),
                });
            }
        }
        for (field, list) in [
            ("requestPrincipals", &source.request_principals),
            ("notRequestPrincipals", &source.not_request_principals),
            ("ipBlocks", &source.ip_blocks),
            ("notIpBlocks", &source.not_ip_blocks),
            ("remoteIpBlocks", &source.remote_ip_blocks),
            ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
        ] {
            if let Some(values) = listed(list) {
                parts.push(unknowable(field, values));
            }
        }
        Match::all(parts)
    }

    fn operation(&self, operation: &Operation) -> Match {
        let port = self.port.to_string();
        let mut parts = Vec::new();
        if let Some(ports) = listed(&operation.ports) {
            parts.push(Match::of(ports.contains(&port)));
        }
        if let Some(ports) = listed(&operation.not_ports) {
            parts.push(Match::of(!ports.contains(&port)));
        }
        for (field, list) in [
            ("hosts", &operation.hosts),
            ("notHosts", &operation.not_hosts),
            ("methods", &operation.methods),
            ("notMethods", &operation.not_methods),
            ("paths", &operation.paths),
            ("notPaths", &operation.not_paths),
        ] {
            if let Some(values) = listed(list) {
                parts.push(unknowable(field, values));
            }
        }
        Match::all(parts)
    }

    fn condition(&self, condition: &Condition) -> Match {
        let values = listed(&condition.values);
        let not_values = listed(&condition.not_values);
        let decide = |check: &dyn Fn(&[String], bool) -> Match| {
            Match::all(
                values
                    .map(|v| check(v, false))
                    .into_iter()
                    .chain(not_values.map(|v| check(v, true))),
            )
        };
        match condition.key.as_str() {
            "source.principal" => decide(&|v, n| self.principal(v, n)),
            "source.namespace" => decide(&|v, n| self.namespace(v, n)),
            "destination.port" => {
                let port = self.port.to_string();
                decide(&|v, n| Match::of(v.contains(&port) != n))
            }
            key => {
                let mut text = format!("when {key}");
                if let Some(v) = values {
                    text.push_str(&format!(" in [{}]", v.join(", ")));
                }
                if let Some(v) = not_values {
                    text.push_str(&format!(" not in [{}]", v.join(", ")));
                }
                Match::Partial(vec![text])
            }
        }
    }
}
