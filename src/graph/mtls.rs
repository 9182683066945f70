//! Layer 2, mTLS (DESIGN.md section 12): what the destination's sidecar accepts on the port (its
//! PeerAuthentication mode), against what the source sends (Istio's auto mTLS, or a
//! DestinationRule's `tls.mode`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::nodes::Node;
use super::verdict::{Layer, LayerDecision, Outcome, Security};
use crate::config::Config;
use crate::model::Model;
use crate::model::core::PortRef;
use crate::model::istio::{ClientTls, DestinationRuleSpec, PeerAuthenticationSpec};

/// A PeerAuthentication mode that decides (`UNSET` means "look further").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Permissive,
    Disable,
}

impl Mode {
    fn parse(mode: Option<&str>) -> Option<Mode> {
        match mode? {
            "STRICT" => Some(Mode::Strict),
            "PERMISSIVE" => Some(Mode::Permissive),
            "DISABLE" => Some(Mode::Disable),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "STRICT",
            Mode::Permissive => "PERMISSIVE",
            Mode::Disable => "DISABLE",
        }
    }
}

/// One PeerAuthentication, or DestinationRule.
#[derive(Debug)]
struct Named<'m, S> {
    name: Arc<str>,
    namespace: &'m str,
    created: Option<&'m Time>,
    object_name: &'m str,
    spec: &'m S,
}

impl<S> Named<'_, S> {
    /// Istio's order of precedence among equals: the oldest, then by name and namespace.
    fn age(&self) -> (Option<&Time>, &str, &str) {
        (self.created, self.object_name, self.namespace)
    }
}

/// The PeerAuthentications that apply to one node.
#[derive(Debug, Default)]
struct Applying {
    workload: Option<usize>,
    namespace: Option<usize>,
    root: Option<usize>,
}

/// A Service in front of a node: its name and its ports as `(service port, container port)`.
#[derive(Debug)]
struct Front<'m> {
    service: &'m str,
    ports: Vec<(u32, u16)>,
}

/// The mTLS facts of the model, by node.
#[derive(Debug)]
pub struct Peers<'m> {
    peer_authentications: Vec<Named<'m, PeerAuthenticationSpec>>,
    applying: Vec<Applying>,
    destination_rules: BTreeMap<&'m str, Vec<Named<'m, DestinationRuleSpec>>>,
    fronts: Vec<Vec<Front<'m>>>,
    root: &'m str,
}

fn oldest<'m, S>(all: &[Named<'m, S>], candidates: impl Iterator<Item = usize>) -> Option<usize> {
    candidates.min_by(|a, b| all[*a].age().cmp(&all[*b].age()))
}

impl<'m> Peers<'m> {
    pub fn new(model: &'m Model, nodes: &[Node], cfg: &'m Config) -> Self {
        let root = cfg.mesh.root_namespace.as_str();
        let peer_authentications: Vec<_> = model
            .peer_authentications
            .iter()
            .map(|(key, pa)| Named {
                name: Arc::from(format!("PeerAuthentication/{}/{}", key.namespace, key.name)),
                namespace: key.namespace.as_str(),
                created: pa.metadata.identity.creation_timestamp.as_ref(),
                object_name: key.name.as_str(),
                spec: &pa.spec,
            })
            .collect();
        let wide = |i: &usize| peer_authentications[*i].spec.is_namespace_wide();
        let applying = nodes
            .iter()
            .map(|node| {
                if node.is_outside() {
                    return Applying::default();
                }
                let indices = 0..peer_authentications.len();
                let selects = |i: &usize| {
                    let pa = &peer_authentications[*i];
                    (pa.namespace == node.namespace || pa.namespace == root)
                        && !pa.spec.is_namespace_wide()
                        && pa
                            .spec
                            .selector
                            .as_ref()
                            .and_then(|s| s.match_labels.as_ref())
                            .is_some_and(|m| node.labels.contains_all(m))
                };
                Applying {
                    workload: oldest(&peer_authentications, indices.clone().filter(selects)),
                    namespace: oldest(
                        &peer_authentications,
                        indices
                            .clone()
                            .filter(|i| peer_authentications[*i].namespace == node.namespace)
                            .filter(wide),
                    ),
                    root: oldest(
                        &peer_authentications,
                        indices
                            .filter(|i| peer_authentications[*i].namespace == root)
                            .filter(wide),
                    ),
                }
            })
            .collect();
        let mut destination_rules: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for (key, rule) in model.destination_rules.iter() {
            destination_rules
                .entry(key.namespace.as_str())
                .or_default()
                .push(Named {
                    name: Arc::from(format!("DestinationRule/{}/{}", key.namespace, key.name)),
                    namespace: key.namespace.as_str(),
                    created: rule.metadata.identity.creation_timestamp.as_ref(),
                    object_name: key.name.as_str(),
                    spec: &rule.spec,
                });
        }
        for rules in destination_rules.values_mut() {
            rules.sort_by(|a, b| a.age().cmp(&b.age()));
        }
        let fronts = nodes
            .iter()
            .map(|node| {
                if node.is_outside() {
                    return Vec::new();
                }
                model
                    .services
                    .iter()
                    .filter(|(key, _)| key.namespace == node.namespace)
                    .filter_map(|(key, service)| {
                        let selector = service.spec.selector.as_ref().filter(|s| !s.is_empty())?;
                        node.labels.contains_all(selector).then_some(())?;
                        let ports = service
                            .spec
                            .ports
                            .iter()
                            .filter_map(|p| {
                                let number = u32::try_from(p.port?).ok()?;
                                let target = match &p.target_port {
                                    None => u16::try_from(number).ok()?,
                                    Some(PortRef::Number(n)) => u16::try_from(*n).ok()?,
                                    Some(PortRef::Name(name)) => {
                                        node.ports
                                            .iter()
                                            .find(|c| c.name.as_deref() == Some(name))?
                                            .port
                                    }
                                };
                                Some((number, target))
                            })
                            .collect();
                        Some(Front {
                            service: key.name.as_str(),
                            ports,
                        })
                    })
                    .collect()
            })
            .collect();
        Peers {
            peer_authentications,
            applying,
            destination_rules,
            fronts,
            root,
        }
    }

    /// The destination's mode for `port` and the PeerAuthentication deciding it (none: the default,
    /// PERMISSIVE).
    fn mode(&self, dst: usize, port: u16) -> (Mode, Option<Arc<str>>) {
        let applying = &self.applying[dst];
        let pa = |i: Option<usize>| i.map(|i| &self.peer_authentications[i]);
        let workload = pa(applying.workload);
        let found = [
            workload.and_then(|w| {
                let levels = w.spec.port_level_mtls.as_ref()?;
                let port_mode = levels.get(&port.to_string())?.mode.as_deref();
                Some((Mode::parse(port_mode)?, w))
            }),
            workload.and_then(|w| Some((Mode::parse(w.spec.mtls.as_ref()?.mode.as_deref())?, w))),
            Self::wide_mode(pa(applying.namespace)),
            Self::wide_mode(pa(applying.root)),
        ]
        .into_iter()
        .flatten()
        .next();
        match found {
            Some((mode, by)) => (mode, Some(by.name.clone())),
            None => (Mode::Permissive, None),
        }
    }

    fn wide_mode<'a>(
        pa: Option<&'a Named<'m, PeerAuthenticationSpec>>,
    ) -> Option<(Mode, &'a Named<'m, PeerAuthenticationSpec>)> {
        let pa = pa?;
        Some((Mode::parse(pa.spec.mtls.as_ref()?.mode.as_deref())?, pa))
    }

    /// What a meshed source in `src_namespace` sends to the meshed or unmeshed `dst` on `port`:
    /// a DestinationRule's `tls.mode` for one of its Services, else auto mTLS (mTLS to a sidecar,
    /// unless the namespace's, else the root namespace's, namespace-wide PeerAuthentication says
    /// DISABLE; plaintext to a pod without one).
    fn sent(
        &self,
        src_namespace: &str,
        dst: usize,
        node: &Node,
        port: u16,
    ) -> (Security, Option<Arc<str>>, Cow<'static, str>) {
        if let Some((tls, by)) = self.destination_rule(src_namespace, dst, node, port) {
            let security = match tls.mode.as_deref() {
                Some("ISTIO_MUTUAL") => Security::Mtls,
                // DISABLE; SIMPLE and MUTUAL originate TLS without an Istio identity.
                _ => Security::Plaintext,
            };
            let mode = tls.mode.clone().unwrap_or_default();
            return (
                security,
                Some(by),
                format!("tls.mode {mode} of the DestinationRule").into(),
            );
        }
        if !node.sidecar {
            return (
                Security::Plaintext,
                None,
                "auto mTLS: no sidecar at the destination".into(),
            );
        }
        let applying = &self.applying[dst];
        let wide = [applying.namespace, applying.root]
            .into_iter()
            .flatten()
            .map(|i| &self.peer_authentications[i])
            .find_map(|pa| Some((Mode::parse(pa.spec.mtls.as_ref()?.mode.as_deref())?, pa)));
        match wide {
            Some((Mode::Disable, pa)) => (
                Security::Plaintext,
                Some(pa.name.clone()),
                "auto mTLS: the namespace-wide mode is DISABLE".into(),
            ),
            _ => (Security::Mtls, None, "auto mTLS".into()),
        }
    }

    /// The `tls` a DestinationRule sets for one of `dst`'s Services on the Service port that leads
    /// to container port `port`: looked up in the source's namespace, the destination's, then the
    /// root namespace, as istiod does; the first Service by name with one decides.
    fn destination_rule(
        &self,
        src_namespace: &str,
        dst: usize,
        node: &Node,
        port: u16,
    ) -> Option<(&'m ClientTls, Arc<str>)> {
        for front in &self.fronts[dst] {
            let service_ports: Vec<u32> = front
                .ports
                .iter()
                .filter(|(_, target)| *target == port)
                .map(|(number, _)| *number)
                .collect();
            if service_ports.is_empty() {
                continue;
            }
            let fqdn = format!("{}.{}.svc.cluster.local", front.service, node.namespace);
            for namespace in [src_namespace, node.namespace.as_str(), self.root] {
                let rules = self.destination_rules.get(namespace).into_iter().flatten();
                for rule in rules {
                    let Some(host) = rule.spec.host.as_deref() else {
                        continue;
                    };
                    let local = rule.namespace == node.namespace;
                    if !host_matches(host, &fqdn, front.service, &node.namespace, local) {
                        continue;
                    }
                    let policy = rule.spec.traffic_policy.as_ref()?;
                    let port_tls = policy
                        .port_level_settings
                        .iter()
                        .flatten()
                        .find(|s| {
                            s.port
                                .as_ref()
                                .and_then(|p| p.number)
                                .is_some_and(|n| service_ports.contains(&n))
                        })
                        .and_then(|s| s.tls.as_ref());
                    if let Some(tls) = port_tls
                        .or(policy.tls.as_ref())
                        .filter(|t| t.mode.is_some())
                    {
                        return Some((tls, rule.name.clone()));
                    }
                    // The first DestinationRule for the host is the one istiod uses: auto mTLS.
                    return None;
                }
            }
        }
        None
    }

    /// The mTLS layer for a connection from `from` to `to` on `port`.
    pub fn decide(
        &self,
        nodes: &[Node],
        src: usize,
        dst: usize,
        port: u16,
        explain: bool,
    ) -> (LayerDecision, Security) {
        let (from, to) = (&nodes[src], &nodes[dst]);
        let (sent, sent_by, how) = if from.sidecar {
            self.sent(&from.namespace, dst, to, port)
        } else {
            (Security::Plaintext, None, "no sidecar at the source".into())
        };
        let mut decision = LayerDecision::new(Layer::Mtls, Outcome::Allowed);
        let (accepted, mode_by, mode_word) = if to.sidecar {
            let (mode, by) = self.mode(dst, port);
            let fits = match mode {
                Mode::Strict => sent == Security::Mtls,
                Mode::Permissive => true,
                Mode::Disable => sent == Security::Plaintext,
            };
            (fits, by, mode.as_str())
        } else {
            (
                sent == Security::Plaintext,
                None,
                "plaintext only (no sidecar)",
            )
        };
        let security = if accepted && sent == Security::Mtls {
            Security::Mtls
        } else {
            Security::Plaintext
        };
        decision.by.extend(mode_by);
        decision.by.extend(sent_by);
        if !accepted {
            decision.outcome = Outcome::Denied;
        }
        if explain {
            let sent_word = sent.as_str();
            decision.why = format!(
                "{} sends {sent_word} ({how}); {} accepts {mode_word} on port {port}{}",
                from.name,
                to.name,
                if accepted { "" } else { ": refused" }
            )
            .into();
        }
        (decision, security)
    }
}

/// Whether a DestinationRule `host` names the Service: its FQDN, or (in its own namespace) a short
/// name; a `*` prefix matches by suffix, as Istio's wildcard hosts do.
fn host_matches(host: &str, fqdn: &str, service: &str, namespace: &str, local: bool) -> bool {
    if let Some(suffix) = host.strip_prefix('*') {
        return fqdn.ends_with(suffix);
    }
    let short = [
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
    ];
    host == fqdn || (local && short.iter().any(|s| s == host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_service_by_fqdn_short_name_or_wildcard() {
        let fqdn = "db.apps.svc.cluster.local";
        assert!(host_matches(fqdn, fqdn, "db", "apps", false));
        assert!(host_matches("db", fqdn, "db", "apps", true));
        assert!(!host_matches("db", fqdn, "db", "apps", false));
        assert!(host_matches("*.local", fqdn, "db", "apps", false));
        assert!(host_matches(
            "*.apps.svc.cluster.local",
            fqdn,
            "db",
            "apps",
            false
        ));
        assert!(!host_matches(
            "web.apps.svc.cluster.local",
            fqdn,
            "db",
            "apps",
            true
        ));
    }
}
