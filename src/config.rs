//! Runtime configuration (DESIGN.md section 6): an embedded default, optionally overridden by a YAML file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

mod mesh;

pub use mesh::{Gateway, Istiod, MeshConfig};

/// The configuration used when no `--config` file is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or names an unknown key; `path` is the key's path.
    #[error("invalid configuration at {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The label a Namespace gets so that istiod injects its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceLabel {
    pub key: String,
    pub value: String,
}

/// Everything the policy rules can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub excluded_namespaces: Vec<String>,
    pub csi_driver: String,
    pub workload_socket_volume: String,
    pub default_templates: Vec<String>,
    pub spire_template: String,
    pub spire_gateway_template: String,
    pub gateway_template: String,
    pub spire_identity_label: String,
    pub namespace_label: NamespaceLabel,
    pub max_body_bytes: usize,
    /// What the mesh annotations generate (DESIGN.md section 9).
    pub mesh: MeshConfig,
}

/// The file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    excluded_namespaces: Option<Vec<String>>,
    csi_driver: Option<String>,
    workload_socket_volume: Option<String>,
    default_templates: Option<Vec<String>>,
    spire_template: Option<String>,
    spire_gateway_template: Option<String>,
    gateway_template: Option<String>,
    spire_identity_label: Option<String>,
    namespace_label: Option<BTreeMap<String, String>>,
    max_body_bytes: Option<usize>,
    mesh: Option<mesh::MeshFile>,
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is part of the binary, and a unit test proves it is valid.
        Self::from_yaml(DEFAULT_CONFIG_YAML).expect("the embedded default configuration is valid")
    }
}

impl ConfigFile {
    fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
            path: display_path(&e.path().to_string()),
            message: e.inner().to_string(),
        })
    }

    /// Every key this file names, the rest from `base`.
    fn over(self, base: ConfigFile) -> ConfigFile {
        ConfigFile {
            excluded_namespaces: self.excluded_namespaces.or(base.excluded_namespaces),
            csi_driver: self.csi_driver.or(base.csi_driver),
            workload_socket_volume: self.workload_socket_volume.or(base.workload_socket_volume),
            default_templates: self.default_templates.or(base.default_templates),
            spire_template: self.spire_template.or(base.spire_template),
            spire_gateway_template: self.spire_gateway_template.or(base.spire_gateway_template),
            gateway_template: self.gateway_template.or(base.gateway_template),
            spire_identity_label: self.spire_identity_label.or(base.spire_identity_label),
            namespace_label: self.namespace_label.or(base.namespace_label),
            max_body_bytes: self.max_body_bytes.or(base.max_body_bytes),
            // `mesh` is merged key by key as well: a file that sets only `mesh.domain` keeps the
            // default gateways.
            mesh: match (self.mesh, base.mesh) {
                (Some(own), Some(base)) => Some(own.over(base)),
                (own, base) => own.or(base),
            },
        }
    }
}

impl Config {
    /// The configuration file every command takes with `--config`, or the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::from_file)
    }

    /// Reads a YAML file; keys it does not name keep their default.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses YAML text over the embedded default configuration, the only place defaults live.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let file = ConfigFile::parse(text)?.over(ConfigFile::parse(DEFAULT_CONFIG_YAML)?);
        let namespace_label = {
            let mut entries = required(file.namespace_label, "namespaceLabel")?.into_iter();
            match (entries.next(), entries.next()) {
                (Some((key, value)), None) if !key.is_empty() => NamespaceLabel { key, value },
                _ => {
                    return Err(invalid(
                        "namespaceLabel",
                        "must hold exactly one `key: value` entry",
                    ));
                }
            }
        };
        let default_templates = required(file.default_templates, "defaultTemplates")?;
        if default_templates.is_empty()
            || default_templates
                .iter()
                .any(|t| t.trim().is_empty() || t.contains(','))
        {
            return Err(invalid(
                "defaultTemplates",
                "must be a non-empty list of template names without commas",
            ));
        }
        let max_body_bytes = required(file.max_body_bytes, "maxBodyBytes")?;
        if max_body_bytes == 0 {
            return Err(invalid("maxBodyBytes", "must be greater than 0"));
        }
        Ok(Config {
            excluded_namespaces: required(file.excluded_namespaces, "excludedNamespaces")?,
            csi_driver: name(file.csi_driver, "csiDriver")?,
            workload_socket_volume: name(file.workload_socket_volume, "workloadSocketVolume")?,
            default_templates,
            spire_template: name(file.spire_template, "spireTemplate")?,
            spire_gateway_template: name(file.spire_gateway_template, "spireGatewayTemplate")?,
            gateway_template: name(file.gateway_template, "gatewayTemplate")?,
            spire_identity_label: name(file.spire_identity_label, "spireIdentityLabel")?,
            namespace_label,
            max_body_bytes,
            mesh: required(file.mesh, "mesh")?.check()?,
        })
    }

    pub fn is_excluded_namespace(&self, namespace: &str) -> bool {
        self.excluded_namespaces.iter().any(|n| n == namespace)
    }
}

fn invalid(path: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// A key the embedded default names, so only a broken build can miss it.
fn required<T>(value: Option<T>, key: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| invalid(key, "missing from the embedded default configuration"))
}

fn name(value: Option<String>, key: &str) -> Result<String, ConfigError> {
    match required(value, key)? {
        v if v.trim().is_empty() || v.contains(',') => {
            Err(invalid(key, "must be a non-empty name without commas"))
        }
        v => Ok(v),
    }
}

fn display_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        "(top level)".into()
    } else {
        path.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_matches_the_contract() {
        let cfg = Config::from_yaml(DEFAULT_CONFIG_YAML).expect("embedded config parses");
        assert_eq!(cfg, Config::default());
        assert_eq!(Config::from_yaml("").unwrap(), cfg);
        // DESIGN.md section 6's defaults, spelled out once here to catch an edit of the file.
        assert_eq!(
            cfg.excluded_namespaces,
            [
                "kube-system",
                "kube-public",
                "kube-node-lease",
                "istio-system",
                "spire-system",
                "spire-server",
                "mesh-system"
            ]
        );
        assert_eq!(
            (
                cfg.csi_driver.as_str(),
                cfg.workload_socket_volume.as_str(),
                cfg.default_templates.as_slice(),
                cfg.spire_template.as_str(),
                cfg.spire_gateway_template.as_str(),
                cfg.gateway_template.as_str(),
                cfg.spire_identity_label.as_str(),
            ),
            (
                "csi.spiffe.io",
                "workload-socket",
                &["sidecar".to_string()][..],
                "spire",
                "spire-gw",
                "gateway",
                "spire-managed-identity"
            )
        );
        assert_eq!(
            (
                cfg.namespace_label.key.as_str(),
                cfg.namespace_label.value.as_str()
            ),
            ("istio-injection", "enabled")
        );
        // An UPDATE carries both object and oldObject.
        assert_eq!(cfg.max_body_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let cfg = Config::from_yaml("spireIdentityLabel: spiffe.io/spire-managed-identity\nnamespaceLabel:\n  istio.io/rev: canary\n").unwrap();
        assert_eq!(cfg.spire_identity_label, "spiffe.io/spire-managed-identity");
        assert_eq!(
            cfg.namespace_label,
            NamespaceLabel {
                key: "istio.io/rev".into(),
                value: "canary".into()
            }
        );
        assert_eq!(cfg.csi_driver, "csi.spiffe.io");
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let err = Config::from_yaml("csiDriver: x\nspireTemplates: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("spireTemplates"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (yaml, key) in [
            ("maxBodyBytes: -1", "maxBodyBytes"),
            ("maxBodyBytes: 0", "maxBodyBytes"),
            ("excludedNamespaces: foo", "excludedNamespaces"),
            ("defaultTemplates: []", "defaultTemplates"),
            ("spireTemplate: ''", "spireTemplate"),
            ("namespaceLabel: {a: b, c: d}", "namespaceLabel"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn mesh_defaults_match_section_9() {
        let mesh = Config::default().mesh;
        assert_eq!(mesh.domain, "bigbang.dev");
        assert_eq!(
            mesh.gateways,
            [Gateway {
                name: "public".into(),
                namespace: "istio-system".into(),
                selector: [
                    ("app".to_string(), "public-ingressgateway".to_string()),
                    ("istio".to_string(), "ingressgateway".to_string())
                ]
                .into(),
                service_account: "public-ingressgateway-service-account".into(),
                default: true,
            }]
        );
        assert_eq!(mesh.trust_domain, "cluster.local");
        assert!(mesh.trust_domain_aliases.is_empty() && mesh.federated_trust_domains.is_empty());
        assert_eq!(mesh.root_namespace, "istio-system");
        assert!(!mesh.authorization_policies);
        assert!(mesh.istiod_egress);
        assert_eq!(
            mesh.istiod,
            Istiod {
                namespace: "istio-system".into(),
                selector: [("app".to_string(), "istiod".to_string())].into(),
                ports: vec![15012],
            }
        );
    }

    #[test]
    fn mesh_keys_are_read_one_by_one_over_the_default() {
        let cfg = Config::from_yaml(
            "mesh:\n  domain: example.org\n  istiod: {ports: [15012, 15017]}\n  trustDomain: prod.example.org\n",
        )
        .unwrap();
        assert_eq!(cfg.mesh.domain, "example.org");
        assert_eq!(cfg.mesh.trust_domain, "prod.example.org");
        assert_eq!(cfg.mesh.istiod.ports, [15012, 15017]);
        assert_eq!(cfg.mesh.istiod.namespace, "istio-system");
        assert_eq!(cfg.mesh.gateway_names(), ["public"]);
        // A gateway list replaces the default one; `default` is false unless set.
        let cfg = Config::from_yaml(
            "mesh:\n  gateways:\n  - {name: internal, namespace: gw, selector: {app: gw}, serviceAccount: gw}\n",
        )
        .unwrap();
        assert_eq!(cfg.mesh.gateway_names(), ["internal"]);
        assert!(!cfg.mesh.gateways[0].default);
    }

    #[test]
    fn invalid_mesh_values_name_the_key() {
        let gateway = |fields: &str| format!("mesh:\n  gateways:\n  - {{{fields}}}\n");
        let ok = "name: a, namespace: gw, selector: {app: gw}, serviceAccount: sa";
        for (yaml, key) in [
            ("mesh: {domian: x}".to_string(), "mesh"),
            ("mesh: {domain: 'https://x.org'}".into(), "mesh.domain"),
            ("mesh: {domain: ''}".into(), "mesh.domain"),
            (
                "mesh: {trustDomain: 'spiffe://x.org'}".into(),
                "mesh.trustDomain",
            ),
            (
                "mesh: {trustDomainAliases: [ok.org, 'a/b']}".into(),
                "mesh.trustDomainAliases[1]",
            ),
            (
                "mesh: {federatedTrustDomains: ['']}".into(),
                "mesh.federatedTrustDomains[0]",
            ),
            (
                "mesh: {authorizationPolicies: maybe}".into(),
                "mesh.authorizationPolicies",
            ),
            ("mesh: {istiod: {ports: []}}".into(), "mesh.istiod.ports"),
            ("mesh: {istiod: {ports: [0]}}".into(), "mesh.istiod.ports"),
            (
                "mesh: {istiod: {ports: [70000]}}".into(),
                "mesh.istiod.ports",
            ),
            (
                "mesh: {istiod: {selector: {}}}".into(),
                "mesh.istiod.selector",
            ),
            (
                "mesh: {istiod: {namespace: Istio}}".into(),
                "mesh.istiod.namespace",
            ),
            ("mesh: {istiod: {port: [1]}}".into(), "mesh.istiod"),
            (
                gateway("name: a, namespace: gw, selector: {app: gw}"),
                "mesh.gateways[0]",
            ),
            (gateway(&format!("{ok}, defualt: true")), "mesh.gateways[0]"),
            (
                gateway(&ok.replace("name: a", "name: 'a,b'")),
                "mesh.gateways[0].name",
            ),
            (
                gateway(&ok.replace("selector: {app: gw}", "selector: {}")),
                "mesh.gateways[0].selector",
            ),
            (
                gateway(&ok.replace("serviceAccount: sa", "serviceAccount: ''")),
                "mesh.gateways[0].serviceAccount",
            ),
            (
                format!("mesh:\n  gateways:\n  - {{{ok}}}\n  - {{{ok}}}\n"),
                "mesh.gateways[1].name",
            ),
        ] {
            let err = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(err.contains(&format!("at {key}")), "{yaml}: {err}");
        }
    }
}
