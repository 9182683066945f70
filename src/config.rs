//! Runtime configuration (DESIGN.md section 6): an embedded default, optionally overridden by a YAML file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The configuration used when no `--config` file is given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

/// Default request body limit: an UPDATE carries both object and oldObject.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

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
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is part of the binary and covered by a unit test.
        Self::from_yaml(DEFAULT_CONFIG_YAML).unwrap_or_else(|_| Self::builtin())
    }
}

impl Config {
    fn builtin() -> Self {
        Config {
            excluded_namespaces: [
                "kube-system",
                "kube-public",
                "kube-node-lease",
                "istio-system",
                "spire-system",
                "spire-server",
                "mesh-system",
            ]
            .map(String::from)
            .to_vec(),
            csi_driver: "csi.spiffe.io".into(),
            workload_socket_volume: "workload-socket".into(),
            default_templates: vec!["sidecar".into()],
            spire_template: "spire".into(),
            spire_gateway_template: "spire-gw".into(),
            gateway_template: "gateway".into(),
            spire_identity_label: "spire-managed-identity".into(),
            namespace_label: NamespaceLabel {
                key: "istio-injection".into(),
                value: "enabled".into(),
            },
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Reads a YAML file; keys it does not name keep their default.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses YAML text over the built-in defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
                path: display_path(&e.path().to_string()),
                message: e.inner().to_string(),
            })?
        };
        let mut cfg = Self::builtin();
        if let Some(v) = file.excluded_namespaces {
            cfg.excluded_namespaces = v;
        }
        set_name(&mut cfg.csi_driver, file.csi_driver, "csiDriver")?;
        set_name(
            &mut cfg.workload_socket_volume,
            file.workload_socket_volume,
            "workloadSocketVolume",
        )?;
        set_name(
            &mut cfg.spire_template,
            file.spire_template,
            "spireTemplate",
        )?;
        set_name(
            &mut cfg.spire_gateway_template,
            file.spire_gateway_template,
            "spireGatewayTemplate",
        )?;
        set_name(
            &mut cfg.gateway_template,
            file.gateway_template,
            "gatewayTemplate",
        )?;
        set_name(
            &mut cfg.spire_identity_label,
            file.spire_identity_label,
            "spireIdentityLabel",
        )?;
        if let Some(list) = file.default_templates {
            if list.is_empty() || list.iter().any(|t| t.trim().is_empty() || t.contains(',')) {
                return Err(invalid(
                    "defaultTemplates",
                    "must be a non-empty list of template names without commas",
                ));
            }
            cfg.default_templates = list;
        }
        if let Some(map) = file.namespace_label {
            let mut entries = map.into_iter();
            match (entries.next(), entries.next()) {
                (Some((key, value)), None) if !key.is_empty() => {
                    cfg.namespace_label = NamespaceLabel { key, value }
                }
                _ => {
                    return Err(invalid(
                        "namespaceLabel",
                        "must hold exactly one `key: value` entry",
                    ));
                }
            }
        }
        if let Some(n) = file.max_body_bytes {
            if n == 0 {
                return Err(invalid("maxBodyBytes", "must be greater than 0"));
            }
            cfg.max_body_bytes = n;
        }
        Ok(cfg)
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

fn set_name(slot: &mut String, value: Option<String>, key: &str) -> Result<(), ConfigError> {
    match value {
        None => Ok(()),
        Some(v) if v.trim().is_empty() || v.contains(',') => {
            Err(invalid(key, "must be a non-empty name without commas"))
        }
        Some(v) => {
            *slot = v;
            Ok(())
        }
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
        assert_eq!(cfg, Config::builtin());
        assert_eq!(Config::default(), Config::builtin());
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
}
