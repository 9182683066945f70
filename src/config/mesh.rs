//! The `mesh:` section of the configuration (DESIGN.md sections 6 and 9): what `render` and the
//! controller generate, and the gateway names `/validate` accepts in `servicemesh.bigbang.dev/gateways`.
//!
//! Like the rest of the configuration, the file is read key by key over the embedded default
//! (`src/default-config.yaml`, the only place defaults live), and every value is checked at start-up
//! with the key's path in the message.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, invalid, required};
use crate::policy::syntax::{LabelKind, MAX_NAME_CHARS, check_label};

/// An ingress gateway a HelmRelease can be exposed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The Istio `Gateway` object's name, and what `servicemesh.bigbang.dev/gateways` lists.
    pub name: String,
    /// The namespace of the Gateway object and of the gateway's pods.
    pub namespace: String,
    /// Labels of the gateway's pods (the NetworkPolicy lets these in).
    pub selector: BTreeMap<String, String>,
    /// The gateway pods' ServiceAccount (the AuthorizationPolicy's principal).
    pub service_account: String,
    /// Selected for HelmReleases that name no gateway.
    pub default: bool,
}

/// Where istiod runs, for the `allow-egress-istiod` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Istiod {
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<u16>,
}

/// The `mesh` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// Appended to `servicemesh.bigbang.dev/host` to make the VirtualService's host.
    pub domain: String,
    pub gateways: Vec<Gateway>,
    /// The SPIFFE trust domain of the mesh's principals.
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    pub federated_trust_domains: Vec<String>,
    /// istiod's root namespace: its PeerAuthentications and AuthorizationPolicies apply mesh-wide.
    pub root_namespace: String,
    /// Whether to generate AuthorizationPolicies (an ALLOW policy denies every other caller of the
    /// workload, so it is a choice, not a default).
    pub authorization_policies: bool,
    pub istiod_egress: bool,
    pub istiod: Istiod,
}

impl MeshConfig {
    /// The gateway of this name.
    pub fn gateway(&self, name: &str) -> Option<&Gateway> {
        self.gateways.iter().find(|g| g.name == name)
    }

    /// The gateways' names, in configuration order.
    pub fn gateway_names(&self) -> Vec<&str> {
        self.gateways.iter().map(|g| g.name.as_str()).collect()
    }
}

/// The file's `mesh:` mapping: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct MeshFile {
    domain: Option<String>,
    gateways: Option<Vec<GatewayFile>>,
    trust_domain: Option<String>,
    trust_domain_aliases: Option<Vec<String>>,
    federated_trust_domains: Option<Vec<String>>,
    root_namespace: Option<String>,
    authorization_policies: Option<bool>,
    istiod_egress: Option<bool>,
    istiod: Option<IstiodFile>,
}

/// A gateway entry. A list replaces the default list whole, so each entry names everything except
/// `default`, which is a flag: absent means not selected by default.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GatewayFile {
    name: String,
    namespace: String,
    selector: BTreeMap<String, String>,
    service_account: String,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IstiodFile {
    namespace: Option<String>,
    selector: Option<BTreeMap<String, String>>,
    ports: Option<Vec<u16>>,
}

impl MeshFile {
    /// Every key this file names, the rest from `base` (`istiod` key by key too).
    pub(super) fn over(self, base: MeshFile) -> MeshFile {
        let istiod = match (self.istiod, base.istiod) {
            (Some(own), Some(base)) => Some(IstiodFile {
                namespace: own.namespace.or(base.namespace),
                selector: own.selector.or(base.selector),
                ports: own.ports.or(base.ports),
            }),
            (own, base) => own.or(base),
        };
        MeshFile {
            domain: self.domain.or(base.domain),
            gateways: self.gateways.or(base.gateways),
            trust_domain: self.trust_domain.or(base.trust_domain),
            trust_domain_aliases: self.trust_domain_aliases.or(base.trust_domain_aliases),
            federated_trust_domains: self
                .federated_trust_domains
                .or(base.federated_trust_domains),
            root_namespace: self.root_namespace.or(base.root_namespace),
            authorization_policies: self.authorization_policies.or(base.authorization_policies),
            istiod_egress: self.istiod_egress.or(base.istiod_egress),
            istiod,
        }
    }

    /// The checked configuration.
    pub(super) fn check(self) -> Result<MeshConfig, ConfigError> {
        let domain = required(self.domain, "mesh.domain")?;
        dns_name(&domain, "mesh.domain")?;
        let gateways = required(self.gateways, "mesh.gateways")?
            .into_iter()
            .enumerate()
            .map(|(i, g)| g.check(&format!("mesh.gateways[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, gateway) in gateways.iter().enumerate() {
            if gateways[..i].iter().any(|g| g.name == gateway.name) {
                return Err(invalid(
                    &format!("mesh.gateways[{i}].name"),
                    &format!("{:?} is listed twice", gateway.name),
                ));
            }
        }
        let trust_domain = required(self.trust_domain, "mesh.trustDomain")?;
        trust_domain_name(&trust_domain, "mesh.trustDomain")?;
        let aliases = required(self.trust_domain_aliases, "mesh.trustDomainAliases")?;
        let federated = required(self.federated_trust_domains, "mesh.federatedTrustDomains")?;
        for (list, key) in [
            (&aliases, "mesh.trustDomainAliases"),
            (&federated, "mesh.federatedTrustDomains"),
        ] {
            for (i, name) in list.iter().enumerate() {
                trust_domain_name(name, &format!("{key}[{i}]"))?;
            }
        }
        let istiod = required(self.istiod, "mesh.istiod")?;
        let istiod = Istiod {
            namespace: label(
                required(istiod.namespace, "mesh.istiod.namespace")?,
                "mesh.istiod.namespace",
            )?,
            selector: selector(
                required(istiod.selector, "mesh.istiod.selector")?,
                "mesh.istiod.selector",
            )?,
            ports: required(istiod.ports, "mesh.istiod.ports")?,
        };
        if istiod.ports.is_empty() || istiod.ports.contains(&0) {
            return Err(invalid(
                "mesh.istiod.ports",
                "must be a non-empty list of ports 1-65535",
            ));
        }
        Ok(MeshConfig {
            domain,
            gateways,
            trust_domain,
            trust_domain_aliases: aliases,
            federated_trust_domains: federated,
            root_namespace: label(
                required(self.root_namespace, "mesh.rootNamespace")?,
                "mesh.rootNamespace",
            )?,
            authorization_policies: required(
                self.authorization_policies,
                "mesh.authorizationPolicies",
            )?,
            istiod_egress: required(self.istiod_egress, "mesh.istiodEgress")?,
            istiod,
        })
    }
}

impl GatewayFile {
    fn check(self, at: &str) -> Result<Gateway, ConfigError> {
        // The name is a list entry of an annotation and a suffix of generated object names.
        Ok(Gateway {
            name: label(self.name, &format!("{at}.name"))?,
            namespace: label(self.namespace, &format!("{at}.namespace"))?,
            selector: selector(self.selector, &format!("{at}.selector"))?,
            service_account: {
                let key = format!("{at}.serviceAccount");
                dns_name(&self.service_account, &key)?;
                self.service_account
            },
            default: self.default,
        })
    }
}

/// A DNS label (RFC 1123): namespaces, gateway names.
fn label(value: String, key: &str) -> Result<String, ConfigError> {
    check_label(&value, LabelKind::Rfc1123)
        .map_err(|e| invalid(key, &format!("must be a DNS label (RFC 1123): {e}")))?;
    Ok(value)
}

/// A DNS name: RFC 1123 labels joined by dots.
fn dns_name(value: &str, key: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            key,
            &format!("must be a DNS name of 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    for part in value.split('.') {
        check_label(part, LabelKind::Rfc1123)
            .map_err(|e| invalid(key, &format!("must be a DNS name: label {part:?} {e}")))?;
    }
    Ok(())
}

/// A trust domain: the DNS-like first part of a SPIFFE ID. `cluster.local` is one too.
fn trust_domain_name(value: &str, key: &str) -> Result<(), ConfigError> {
    if value.contains("://") || value.contains('/') {
        return Err(invalid(
            key,
            "must be a trust domain without scheme or path (e.g. \"example.org\")",
        ));
    }
    dns_name(value, key)
}

/// A label selector: not empty (an empty one selects every pod), keys and values non-empty.
fn selector(
    value: BTreeMap<String, String>,
    key: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    if value.is_empty() || value.keys().any(String::is_empty) {
        return Err(invalid(
            key,
            "must hold at least one `label: value` entry (an empty selector selects every pod)",
        ));
    }
    Ok(value)
}
