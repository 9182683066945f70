//! Layer 1, NetworkPolicy (DESIGN.md section 12), with Kubernetes' semantics: a pod is isolated for
//! a direction when a policy of its namespace selects it for that direction; then some such policy
//! needs a rule whose peers match the other end and whose ports match the port.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::nodes::{NamespaceLabels, Node};
use super::verdict::{Layer, LayerDecision, Match, Outcome};
use crate::model::Model;
use crate::model::istio::{
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicyRule, NetworkPolicySpec,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

/// One NetworkPolicy.
#[derive(Debug)]
pub struct Policy<'m> {
    pub name: Arc<str>,
    pub namespace: &'m str,
    pub spec: &'m NetworkPolicySpec,
}

impl Policy<'_> {
    /// Kubernetes' defaulting of `policyTypes`: every policy affects ingress, and egress when it has
    /// egress rules.
    fn affects(&self, direction: Direction) -> bool {
        match &self.spec.policy_types {
            Some(types) => types.iter().any(|t| t == direction.word()),
            None => match direction {
                Direction::Ingress => true,
                Direction::Egress => self.spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            },
        }
    }

    fn rules(&self, direction: Direction) -> &[NetworkPolicyRule] {
        let rules = match direction {
            Direction::Ingress => &self.spec.ingress,
            Direction::Egress => &self.spec.egress,
        };
        rules.as_deref().unwrap_or_default()
    }
}

/// Every node's isolating policies, by direction.
#[derive(Debug)]
pub struct Policies<'m> {
    policies: Vec<Policy<'m>>,
    ingress: Vec<Vec<usize>>,
    egress: Vec<Vec<usize>>,
}

impl<'m> Policies<'m> {
    pub fn new(model: &'m Model, nodes: &[Node]) -> Self {
        let policies: Vec<Policy<'m>> = model
            .network_policies
            .iter()
            .map(|(key, policy)| Policy {
                name: Arc::from(format!("NetworkPolicy/{}/{}", key.namespace, key.name)),
                namespace: &key.namespace,
                spec: &policy.spec,
            })
            .collect();
        let select = |direction: Direction| -> Vec<Vec<usize>> {
            nodes
                .iter()
                .map(|node| {
                    if node.is_outside() {
                        return Vec::new();
                    }
                    policies
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.namespace == node.namespace && p.affects(direction))
                        .filter(|(_, p)| {
                            p.spec
                                .pod_selector
                                .as_ref()
                                .is_none_or(|s| s.matches(&node.labels))
                        })
                        .map(|(i, _)| i)
                        .collect()
                })
                .collect()
        };
        let ingress = select(Direction::Ingress);
        let egress = select(Direction::Egress);
        Policies {
            policies,
            ingress,
            egress,
        }
    }

    /// The NetworkPolicy layer for `from` (node `src`) to `to` (node `dst`) on `port`.
    pub fn decide(
        &self,
        nodes: &[Node],
        namespaces: &NamespaceLabels,
        src: usize,
        dst: usize,
        port: u16,
        explain: bool,
    ) -> LayerDecision {
        let (from, to) = (&nodes[src], &nodes[dst]);
        let ends = Ends {
            from,
            to,
            port,
            namespaces,
        };
        let ingress = self.direction(&self.ingress[dst], Direction::Ingress, &ends);
        let egress = self.direction(&self.egress[src], Direction::Egress, &ends);
        let mut decision = LayerDecision::new(Layer::Networkpolicy, Outcome::Allowed);
        let denied = [&ingress, &egress]
            .into_iter()
            .filter(|d| d.outcome == Outcome::Denied);
        for side in denied {
            decision.outcome = Outcome::Denied;
            decision.by.extend(side.by.iter().cloned());
        }
        if decision.outcome != Outcome::Denied {
            for side in [&ingress, &egress] {
                decision.by.extend(side.by.iter().cloned());
                if side.outcome == Outcome::Partial {
                    decision.outcome = Outcome::Partial;
                    decision.conditions.extend(side.conditions.iter().cloned());
                }
            }
        }
        if explain {
            decision.why = format!(
                "ingress of {}: {}; egress of {}: {}",
                to.name, ingress.why, from.name, egress.why
            )
            .into();
        }
        decision
    }

    fn direction(
        &self,
        isolating: &[usize],
        direction: Direction,
        ends: &Ends<'_>,
    ) -> LayerDecision {
        let mut decision = LayerDecision::new(Layer::Networkpolicy, Outcome::Allowed);
        if isolating.is_empty() {
            decision.why = "not isolated".into();
            return decision;
        }
        let mut partial = Vec::new();
        for &i in isolating {
            let policy = &self.policies[i];
            let found = Match::any(
                policy
                    .rules(direction)
                    .iter()
                    .map(|rule| ends.rule_matches(rule, policy.namespace, direction)),
            );
            match found {
                Match::Yes => decision.by.push(policy.name.clone()),
                Match::Partial(conditions) => partial.push((policy.name.clone(), conditions)),
                Match::No => {}
            }
        }
        if !decision.by.is_empty() {
            decision.why = "isolated; a rule allows it".into();
        } else if !partial.is_empty() {
            decision.outcome = Outcome::Partial;
            for (name, conditions) in partial {
                decision
                    .conditions
                    .push(format!("{} ({name})", conditions.join(" and ")));
                decision.by.push(name);
            }
            decision.why = "isolated; a rule allows it for some addresses".into();
        } else {
            decision.outcome = Outcome::Denied;
            decision.by = isolating
                .iter()
                .map(|&i| self.policies[i].name.clone())
                .collect();
            decision.why = "isolated; no rule allows it".into();
        }
        decision
    }
}

/// The two ends of a connection and its port, as one rule is matched against them.
struct Ends<'a> {
    from: &'a Node,
    to: &'a Node,
    port: u16,
    namespaces: &'a NamespaceLabels,
}

impl Ends<'_> {
    fn rule_matches(
        &self,
        rule: &NetworkPolicyRule,
        namespace: &str,
        direction: Direction,
    ) -> Match {
        let (peers, other) = match direction {
            Direction::Ingress => (&rule.from, self.from),
            Direction::Egress => (&rule.to, self.to),
        };
        let ports = rule.ports.as_deref().unwrap_or_default();
        let ports_match = ports.is_empty() || ports.iter().any(|p| self.port_matches(p));
        if !ports_match {
            return Match::No;
        }
        match peers.as_deref() {
            // No peers: everyone.
            None | Some([]) => Match::Yes,
            Some(peers) => Match::any(peers.iter().map(|p| self.peer_matches(p, namespace, other))),
        }
    }

    /// A port of a rule: TCP (the default protocol), a number or range, or a named container port
    /// of the destination.
    fn port_matches(&self, rule_port: &NetworkPolicyPort) -> bool {
        if rule_port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            return false;
        }
        match &rule_port.port {
            None => true,
            Some(IntOrString::Int(first)) => {
                let last = rule_port.end_port.unwrap_or(*first);
                (*first..=last).contains(&i32::from(self.port))
            }
            Some(IntOrString::String(name)) => self.to.has_named_port(name, self.port),
        }
    }

    /// A peer against the other end: pods (in the policy's namespace, or in the namespaces the
    /// `namespaceSelector` selects; both selectors in one peer must both match), or an `ipBlock`,
    /// which stands for `outside` only.
    fn peer_matches(&self, peer: &NetworkPolicyPeer, namespace: &str, other: &Node) -> Match {
        if other.is_outside() {
            return match &peer.ip_block {
                Some(block) => {
                    let except = block.except.as_deref().unwrap_or_default();
                    let everywhere = matches!(block.cidr.as_str(), "0.0.0.0/0" | "::/0");
                    if everywhere && except.is_empty() {
                        Match::Yes
                    } else if except.is_empty() {
                        Match::Partial(vec![format!("address in {}", block.cidr)])
                    } else {
                        Match::Partial(vec![format!(
                            "address in {} except {}",
                            block.cidr,
                            except.join(", ")
                        )])
                    }
                }
                None => Match::No,
            };
        }
        if peer.ip_block.is_some() {
            return Match::No;
        }
        let (pods, namespaces) = (&peer.pod_selector, &peer.namespace_selector);
        if pods.is_none() && namespaces.is_none() {
            return Match::No;
        }
        let namespace_matches = match namespaces {
            None => other.namespace == namespace,
            Some(selector) => self
                .namespaces
                .get(&other.namespace)
                .is_some_and(|labels| selector.matches(labels)),
        };
        let pod_matches = pods.as_ref().is_none_or(|s| s.matches(&other.labels));
        Match::of(namespace_matches && pod_matches)
    }
}
