//! ClusterSPIFFEIDs at `/validate` (DESIGN.md section 13): the selectors' syntax for every one, and
//! the SPIFFE ID's form for those meant for the mesh. SPIRE also serves workloads outside the mesh,
//! with IDs of any form (`spiffe://cluster1.demo/greeter-server`); those are never refused here, and
//! `audit` judges them by the meshed workloads they actually select.
//!
//! Istio accepts a peer's identity only as `spiffe://<trust domain>/ns/<namespace>/sa/<service
//! account>`; the template may give each part as the template value SPIRE fills in or literally.

use super::finding::Finding;
use crate::config::Config;
use crate::model::selector::Requirement;
use crate::model::spire::ClusterSpiffeIdSpec;
use crate::model::{ClusterSpiffeId, LabelSelector};

/// The pod label Istio's SPIRE documentation selects on (ours is `spireIdentityLabel`).
pub const ISTIO_SPIRE_LABEL: &str = "spiffe.io/spire-managed-identity";
/// The form Istio accepts, as the error messages name it.
pub const MESH_ID_FORM: &str = "spiffe://<trust domain>/ns/<namespace>/sa/<service account>";

const TRUST_DOMAIN_VALUE: &str = ".TrustDomain";
const NAMESPACE_VALUE: &str = ".PodMeta.Namespace";
const SERVICE_ACCOUNT_VALUE: &str = ".PodSpec.ServiceAccountName";

/// One part of a SPIFFE ID template: filled in by SPIRE for each pod, or written literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// `{{ .TrustDomain }}`, `{{ .PodMeta.Namespace }}` or `{{ .PodSpec.ServiceAccountName }}`.
    Filled,
    Literal(String),
}

impl Part {
    /// Whether this part gives `value` for a pod (a filled part always does).
    pub fn gives(&self, value: &str) -> bool {
        match self {
            Part::Filled => true,
            Part::Literal(literal) => literal == value,
        }
    }
}

/// A template of the mesh's form, in its three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshId {
    pub trust_domain: Part,
    pub namespace: Part,
    pub service_account: Part,
}

/// Reads `template` as the mesh's form, or says why it is not.
pub fn parse_mesh_id(template: &str) -> Result<MeshId, String> {
    let not_form = || format!("gives no ID of the form Istio accepts, {MESH_ID_FORM}");
    let rest = template
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("must start with \"spiffe://\": {}", not_form()))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [trust_domain, "ns", namespace, "sa", service_account] = parts[..] else {
        return Err(not_form());
    };
    let part = |text: &str, value: &str, what: &str| -> Result<Part, String> {
        if let Some(inner) = text.strip_prefix("{{").and_then(|t| t.strip_suffix("}}")) {
            return match inner.trim() {
                name if name == value => Ok(Part::Filled),
                other => Err(format!(
                    "gives {other:?} as the {what}, Istio needs \"{{{{ {value} }}}}\" or a literal one"
                )),
            };
        }
        if text.is_empty() || text.contains("{{") || text.contains("}}") {
            return Err(format!("has no {what}: {}", not_form()));
        }
        Ok(Part::Literal(text.to_owned()))
    };
    Ok(MeshId {
        trust_domain: part(trust_domain, TRUST_DOMAIN_VALUE, "trust domain")?,
        namespace: part(namespace, NAMESPACE_VALUE, "namespace")?,
        service_account: part(service_account, SERVICE_ACCOUNT_VALUE, "service account")?,
    })
}

/// Why `template` gives no mesh ID in `trust_domain` (the configuration's `mesh.trustDomain`),
/// whatever pod it is for; `None` when it may.
pub fn mesh_id_problem(template: Option<&str>, trust_domain: &str) -> Option<String> {
    let Some(template) = template else {
        return Some(format!("is missing: Istio needs {MESH_ID_FORM}"));
    };
    match parse_mesh_id(template) {
        Err(problem) => Some(problem),
        Ok(id) if !id.trust_domain.gives(trust_domain) => Some(format!(
            "names another trust domain than the mesh's {trust_domain:?} (mesh.trustDomain): \
             Istio refuses its certificates"
        )),
        Ok(_) => None,
    }
}

/// Whether a ClusterSPIFFEID is meant for the mesh: its pod selector requires the SPIRE identity
/// label (ours or Istio's) to be `"true"`, or its class is the mesh's SPIRE class.
pub fn meant_for_mesh(spec: &ClusterSpiffeIdSpec, cfg: &Config) -> bool {
    let class = cfg.mesh.spire_class_name.as_deref();
    if class.is_some() && spec.class_name.as_deref() == class {
        return true;
    }
    let Some(selector) = &spec.pod_selector else {
        return false;
    };
    let labels = [cfg.spire_identity_label.as_str(), ISTIO_SPIRE_LABEL];
    let by_label = selector
        .match_labels
        .iter()
        .flat_map(|m| m.iter())
        .any(|(k, v)| labels.contains(&k) && v == "true");
    let by_expression = selector.match_expressions.iter().flatten().any(|e| {
        labels.contains(&e.key.as_str())
            && e.operator == "In"
            && e.values.as_deref() == Some(&["true".to_owned()][..])
    });
    by_label || by_expression
}

/// The `/validate` rules for one ClusterSPIFFEID.
pub fn validate(id: &ClusterSpiffeId, cfg: &Config) -> Vec<Finding> {
    let spec = &id.spec;
    let mut findings = Vec::new();
    for (field, selector) in [
        ("spec.podSelector", &spec.pod_selector),
        ("spec.namespaceSelector", &spec.namespace_selector),
    ] {
        if let Some(selector) = selector {
            selector_rules(field, selector, &mut findings);
        }
    }
    if meant_for_mesh(spec, cfg) {
        let template = spec.spiffe_id_template.as_deref();
        if let Some(problem) = mesh_id_problem(template, &cfg.mesh.trust_domain) {
            let finding = Finding::error("spec.spiffeIDTemplate", problem);
            findings.push(match template {
                Some(t) => finding.with_value(t),
                None => finding,
            });
        }
    }
    findings
}

/// A label selector as the apiserver would refuse it for a Deployment: label keys and values, and
/// each expression's operator and values.
fn selector_rules(at: &str, selector: &LabelSelector, out: &mut Vec<Finding>) {
    for (key, value) in selector.match_labels.iter().flat_map(|m| m.iter()) {
        let field = format!("{at}.matchLabels[{key}]");
        if let Err(problem) = check_label_key(key) {
            out.push(Finding::error(&field, format!("key {problem}")).with_value(key));
        }
        if let Err(problem) = check_label_value(value) {
            out.push(Finding::error(&field, problem).with_value(value));
        }
    }
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        expression_rules(&format!("{at}.matchExpressions[{i}]"), expression, out);
    }
}

fn expression_rules(at: &str, e: &Requirement, out: &mut Vec<Finding>) {
    if let Err(problem) = check_label_key(&e.key) {
        out.push(Finding::error(format!("{at}.key"), problem).with_value(&e.key));
    }
    let values = e.values.as_deref().unwrap_or_default();
    match e.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => out.push(Finding::error(
            format!("{at}.values"),
            format!("must not be empty for operator {}", e.operator),
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => out.push(Finding::error(
            format!("{at}.values"),
            format!("must be empty for operator {}", e.operator),
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        other => {
            let finding = Finding::error(
                format!("{at}.operator"),
                "must be In, NotIn, Exists or DoesNotExist",
            );
            out.push(finding.with_value(other));
        }
    }
    for (j, value) in values.iter().enumerate() {
        if let Err(problem) = check_label_value(value) {
            out.push(Finding::error(format!("{at}.values[{j}]"), problem).with_value(value));
        }
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let labels_ok = prefix
            .split('.')
            .all(|l| super::syntax::check_label(l, super::syntax::LabelKind::Rfc1123).is_ok());
        if prefix.is_empty() || prefix.len() > super::syntax::MAX_NAME_CHARS || !labels_ok {
            return Err("must have a DNS subdomain before its \"/\"".into());
        }
    }
    if name.is_empty() {
        return Err("must have a name".into());
    }
    check_label_value(name)
}

/// A label value (and a key's name part): at most 63 characters, alphanumerics with `-`, `_`, `.`
/// inside.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.len() > 63 || !ok_chars || !ends(value.chars().next()) || !ends(value.chars().last()) {
        return Err(
            "must be at most 63 characters, alphanumerics with '-', '_' or '.' inside".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "spire_tests.rs"]
mod tests;
