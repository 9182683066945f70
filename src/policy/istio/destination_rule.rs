//! DestinationRule (`networking.istio.io`, DESIGN.md section 10): the client TLS settings of a
//! `tls` block, at the top (`trafficPolicy.tls`), per port (`trafficPolicy.portLevelSettings[].tls`)
//! and per subset (`subsets[].trafficPolicy…`).
//!
//! | rule | level |
//! | --- | --- |
//! | `mode: ISTIO_MUTUAL` with `caCertificates`, `clientCertificate`, `privateKey` or `credentialName`: Istio ignores them | warning |
//! | `mode: DISABLE` for an in-mesh host (a short name, or one ending in `.svc`, `.svc.cluster.local`, `.cluster.local`): workloads in STRICT namespaces refuse its plaintext | warning |
//! | `insecureSkipVerify: true` with `mode: SIMPLE` or `MUTUAL`: the server is not verified | warning |
//!
//! All three are warnings: each can be meant (a PERMISSIVE namespace, a test server), but each is a
//! common copy-paste slip whose effect shows only as failing or unverified traffic.

use std::borrow::Cow;

use serde::Deserialize;

use crate::policy::finding::Finding;
use crate::policy::object::{object, objects};

/// Hosts of the mesh's own Services: Istio expands a short name to `<name>.<namespace>.svc.<domain>`.
pub const IN_MESH_SUFFIXES: [&str; 3] = [".svc", ".svc.cluster.local", ".cluster.local"];

/// The fields the rules read.
#[derive(Debug, Default, Deserialize)]
pub struct DestinationRule<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    #[serde(borrow, default)]
    pub host: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "object")]
    pub traffic_policy: Option<TrafficPolicy<'a>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub subsets: Option<Vec<Subset<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub tls: Option<ClientTls<'a>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub port_level_settings: Option<Vec<PortTrafficPolicy<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PortTrafficPolicy<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub tls: Option<ClientTls<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub traffic_policy: Option<TrafficPolicy<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls<'a> {
    #[serde(borrow, default)]
    pub mode: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ca_certificates: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub client_certificate: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub private_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub credential_name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

/// Applies the DestinationRule rows to every `tls` block.
pub fn validate(rule: &DestinationRule<'_>) -> Vec<Finding> {
    let Some(spec) = &rule.spec else {
        return Vec::new();
    };
    let in_mesh = spec.host.as_deref().is_some_and(is_in_mesh);
    let mut findings = Vec::new();
    let mut policy = |at: String, policy: &Option<TrafficPolicy<'_>>| {
        let Some(policy) = policy else {
            return;
        };
        if let Some(tls) = &policy.tls {
            check_tls(&format!("{at}.tls"), tls, in_mesh, &mut findings);
        }
        for (i, port) in policy.port_level_settings.iter().flatten().enumerate() {
            if let Some(tls) = &port.tls {
                check_tls(
                    &format!("{at}.portLevelSettings[{i}].tls"),
                    tls,
                    in_mesh,
                    &mut findings,
                );
            }
        }
    };
    policy("spec.trafficPolicy".to_owned(), &spec.traffic_policy);
    for (i, subset) in spec.subsets.iter().flatten().enumerate() {
        policy(
            format!("spec.subsets[{i}].trafficPolicy"),
            &subset.traffic_policy,
        );
    }
    findings
}

/// A short name (Istio resolves it in the rule's namespace) or a cluster-local DNS name.
pub fn is_in_mesh(host: &str) -> bool {
    !host.is_empty() && (!host.contains('.') || IN_MESH_SUFFIXES.iter().any(|s| host.ends_with(s)))
}

fn check_tls(at: &str, tls: &ClientTls<'_>, in_mesh: bool, out: &mut Vec<Finding>) {
    let set = |value: &Option<Cow<'_, str>>| value.as_deref().is_some_and(|v| !v.is_empty());
    match tls.mode.as_deref() {
        Some("ISTIO_MUTUAL") => {
            for (name, value) in [
                ("caCertificates", &tls.ca_certificates),
                ("clientCertificate", &tls.client_certificate),
                ("privateKey", &tls.private_key),
                ("credentialName", &tls.credential_name),
            ] {
                if set(value) {
                    out.push(Finding::warning(
                        format!("{at}.{name}"),
                        "ignored: ISTIO_MUTUAL uses the mesh certificates",
                    ));
                }
            }
        }
        Some("DISABLE") if in_mesh => out.push(Finding::warning(
            format!("{at}.mode"),
            "plaintext to an in-mesh host: STRICT mTLS workloads refuse it",
        )),
        Some(mode @ ("SIMPLE" | "MUTUAL")) if tls.insecure_skip_verify == Some(true) => {
            out.push(Finding::warning(
                format!("{at}.insecureSkipVerify"),
                format!("server certificate not verified (mode {mode})"),
            ));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::policy::object::decode;

    fn findings(object: &Value) -> Vec<String> {
        let text = object.to_string();
        let view: DestinationRule = decode(&text).expect("decodes");
        let found = validate(&view);
        assert!(found.iter().all(|f| !f.is_error()), "{found:?}");
        for f in &found {
            assert!(
                f.to_string().chars().count() <= crate::policy::MAX_WARNING_CHARS,
                "{f}"
            );
        }
        found.iter().map(Finding::to_string).collect()
    }

    fn rule(host: &str, tls: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "ms-identity-destination"},
               "spec": {"host": host, "trafficPolicy": {"tls": tls}}})
    }

    #[test]
    fn row_1_istio_mutual_ignores_certificates() {
        // The seed's own (kubestock-istio-mtls.md).
        assert!(findings(&rule("ms-identity", json!({"mode": "ISTIO_MUTUAL"}))).is_empty());
        assert!(
            findings(&rule(
                "ms-identity",
                json!({"mode": "ISTIO_MUTUAL", "sni": "x", "subjectAltNames": ["y"]})
            ))
            .is_empty()
        );
        assert_eq!(
            findings(&rule(
                "ms-identity",
                json!({"mode": "ISTIO_MUTUAL", "clientCertificate": "/etc/certs/cert.pem",
                       "privateKey": "/etc/certs/key.pem", "caCertificates": "", "credentialName": "c"})
            )),
            [
                "spec.trafficPolicy.tls.clientCertificate: ignored: ISTIO_MUTUAL uses the mesh certificates",
                "spec.trafficPolicy.tls.privateKey: ignored: ISTIO_MUTUAL uses the mesh certificates",
                "spec.trafficPolicy.tls.credentialName: ignored: ISTIO_MUTUAL uses the mesh certificates",
            ]
        );
        // The same certificates with MUTUAL are what they are for.
        assert!(
            findings(&rule(
                "api.example.com",
                json!({"mode": "MUTUAL", "credentialName": "c"})
            ))
            .is_empty()
        );
    }

    #[test]
    fn row_2_disable_for_an_in_mesh_host() {
        let warning = "spec.trafficPolicy.tls.mode: plaintext to an in-mesh host: STRICT mTLS workloads refuse it";
        for host in [
            "ms-identity",
            "reviews.prod.svc",
            "reviews.prod.svc.cluster.local",
            "*.prod.svc.cluster.local",
            "db.cluster.local",
        ] {
            assert_eq!(
                findings(&rule(host, json!({"mode": "DISABLE"}))),
                [warning],
                "{host}"
            );
        }
        for host in ["api.example.com", "reviews.prod", "*.googleapis.com", ""] {
            assert!(
                findings(&rule(host, json!({"mode": "DISABLE"}))).is_empty(),
                "{host}"
            );
        }
    }

    #[test]
    fn row_3_insecure_skip_verify_with_simple_or_mutual() {
        for mode in ["SIMPLE", "MUTUAL"] {
            assert_eq!(
                findings(&rule(
                    "api.example.com",
                    json!({"mode": mode, "insecureSkipVerify": true})
                )),
                [format!(
                    "spec.trafficPolicy.tls.insecureSkipVerify: server certificate not verified (mode {mode})"
                )]
            );
        }
        assert!(
            findings(&rule(
                "api.example.com",
                json!({"mode": "SIMPLE", "insecureSkipVerify": false})
            ))
            .is_empty()
        );
        assert!(findings(&rule("api.example.com", json!({"mode": "SIMPLE"}))).is_empty());
    }

    #[test]
    fn every_tls_block_is_read_with_its_path() {
        let object = json!({"spec": {
            "host": "reviews",
            "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": 80}, "tls": {"mode": "ISTIO_MUTUAL"}},
                {"port": {"number": 9080}, "tls": {"mode": "DISABLE"}},
            ]},
            "subsets": [
                {"name": "v1"},
                {"name": "v2", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL", "privateKey": "k"},
                    "portLevelSettings": [{"tls": {"mode": "SIMPLE", "insecureSkipVerify": true}}]}},
            ],
        }});
        assert_eq!(
            findings(&object),
            [
                "spec.trafficPolicy.portLevelSettings[1].tls.mode: plaintext to an in-mesh host: STRICT mTLS workloads refuse it",
                "spec.subsets[1].trafficPolicy.tls.privateKey: ignored: ISTIO_MUTUAL uses the mesh certificates",
                "spec.subsets[1].trafficPolicy.portLevelSettings[0].tls.insecureSkipVerify: server certificate not verified (mode SIMPLE)",
            ]
        );
        assert!(findings(&json!({"kind": "DestinationRule"})).is_empty());
        assert!(
            findings(&json!({"spec": {"host": "x", "trafficPolicy": null, "subsets": null}}))
                .is_empty()
        );
    }
}
