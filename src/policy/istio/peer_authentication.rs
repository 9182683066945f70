//! PeerAuthentication (`security.istio.io`, DESIGN.md section 10).
//!
//! | field | rule | level |
//! | --- | --- | --- |
//! | `portLevelMtls` | only with a `selector` (`matchLabels`): Istio ignores it in a namespace- or mesh-wide policy | error |
//! | `mtls.mode`, `portLevelMtls[PORT].mode` | exactly `UNSET`, `DISABLE`, `PERMISSIVE` or `STRICT` (did-you-mean for case) | error |
//!
//! The Istio CRD's own schema and CEL rules refuse both at the apiserver too; these run for `review`
//! offline, and name the intended mode.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::enum_problem;
use crate::policy::finding::Finding;
use crate::policy::object::{StringMap, object};

/// The modes Istio knows, in its own order.
pub const MODES: [&str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

/// The fields the rules read.
#[derive(Debug, Default, Deserialize)]
pub struct PeerAuthentication<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    #[serde(default, deserialize_with = "object")]
    pub selector: Option<Selector>,
    #[serde(borrow, default, deserialize_with = "object")]
    pub mtls: Option<Mtls<'a>>,
    /// By port number (the keys are strings in JSON); a `null` entry sets nothing.
    #[serde(borrow, default)]
    pub port_level_mtls: Option<BTreeMap<String, Option<Mtls<'a>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: Option<StringMap>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Mtls<'a> {
    #[serde(borrow, default)]
    pub mode: Option<Cow<'a, str>>,
}

/// Applies the PeerAuthentication rows.
pub fn validate(policy: &PeerAuthentication<'_>) -> Vec<Finding> {
    let Some(spec) = &policy.spec else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    if let Some(mode) = spec.mtls.as_ref().and_then(|m| m.mode.as_deref()) {
        findings.extend(mode_finding("spec.mtls.mode", mode));
    }
    let ports = spec.port_level_mtls.as_ref().filter(|p| !p.is_empty());
    let Some(ports) = ports else {
        return findings;
    };
    // As the CRD's CEL rule reads it: a selector with no labels selects the whole namespace.
    let selects = spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_some_and(|labels| !labels.is_empty());
    if !selects {
        findings.push(Finding::error(
            "spec.portLevelMtls",
            "needs spec.selector.matchLabels: Istio ignores port-level mTLS in a namespace-wide or \
             mesh-wide PeerAuthentication",
        ));
    }
    for (port, settings) in ports {
        if let Some(mode) = settings.as_ref().and_then(|m| m.mode.as_deref()) {
            findings.extend(mode_finding(
                &format!("spec.portLevelMtls[{port}].mode"),
                mode,
            ));
        }
    }
    findings
}

fn mode_finding(field: &str, mode: &str) -> Option<Finding> {
    enum_problem(mode, &MODES).map(|problem| Finding::error(field, problem).with_value(mode))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::policy::object::decode;

    fn findings(object: &Value) -> Vec<String> {
        let text = object.to_string();
        let view: PeerAuthentication = decode(&text).expect("decodes");
        let found = validate(&view);
        assert!(found.iter().all(Finding::is_error), "{found:?}");
        found.iter().map(Finding::to_string).collect()
    }

    fn policy(spec: Value) -> Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "default", "namespace": "docs"}, "spec": spec})
    }

    #[test]
    fn row_1_port_level_mtls_needs_a_selector() {
        let ports = json!({"8080": {"mode": "PERMISSIVE"}});
        let error = "spec.portLevelMtls: needs spec.selector.matchLabels: Istio ignores port-level \
                     mTLS in a namespace-wide or mesh-wide PeerAuthentication";
        for spec in [
            json!({"portLevelMtls": ports}),
            json!({"selector": {}, "portLevelMtls": ports}),
            json!({"selector": {"matchLabels": {}}, "portLevelMtls": ports}),
            json!({"selector": null, "mtls": {"mode": "STRICT"}, "portLevelMtls": ports}),
        ] {
            assert_eq!(findings(&policy(spec.clone())), [error], "{spec}");
        }
        for spec in [
            json!({"selector": {"matchLabels": {"app": "web"}}, "portLevelMtls": ports}),
            // What `render` generates for permissivePorts (DESIGN.md section 9).
            json!({"selector": {"matchLabels": {"app": "web"}}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}, "9090": {"mode": "PERMISSIVE"}}}),
            json!({"portLevelMtls": {}}),
            json!({"portLevelMtls": null}),
        ] {
            assert_eq!(
                findings(&policy(spec.clone())),
                Vec::<String>::new(),
                "{spec}"
            );
        }
    }

    #[test]
    fn row_2_modes_are_exact() {
        // The seeds' own (kubestock-istio-mtls.md, istio-authz-routing.md, istio-spire-sidecar-injection.md)
        // and the rest of Istio's modes.
        for mode in MODES {
            assert_eq!(
                findings(&policy(json!({"mtls": {"mode": mode}}))),
                Vec::<String>::new()
            );
        }
        assert!(findings(&policy(json!({"mtls": {}}))).is_empty());
        assert!(findings(&policy(json!({}))).is_empty());
        assert!(findings(&json!({"kind": "PeerAuthentication"})).is_empty());
        assert_eq!(
            findings(&policy(json!({"mtls": {"mode": "strict"}}))),
            [
                r#"spec.mtls.mode: must be UNSET, DISABLE, PERMISSIVE or STRICT; did you mean "STRICT"? (value "strict")"#
            ]
        );
        assert_eq!(
            findings(&policy(json!({"mtls": {"mode": "ISTIO_MUTUAL"}}))),
            [
                r#"spec.mtls.mode: must be UNSET, DISABLE, PERMISSIVE or STRICT (value "ISTIO_MUTUAL")"#
            ]
        );
        assert_eq!(
            findings(&policy(json!({
                "selector": {"matchLabels": {"app": "web"}},
                "portLevelMtls": {"8080": {"mode": "Permissive"}, "9090": {"mode": "DISABLE"}, "9091": null, "9092": {}},
            }))),
            [
                r#"spec.portLevelMtls[8080].mode: must be UNSET, DISABLE, PERMISSIVE or STRICT; did you mean "PERMISSIVE"? (value "Permissive")"#
            ]
        );
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        let err = decode::<PeerAuthentication>(r#"{"spec":{"mtls":"STRICT"}}"#).unwrap_err();
        assert_eq!(err.path, "spec.mtls");
    }
}
