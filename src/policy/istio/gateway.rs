//! Gateway (`networking.istio.io`, DESIGN.md section 10).
//!
//! | field | rule | level |
//! | --- | --- | --- |
//! | `servers[].tls` | `mode` `SIMPLE` or `MUTUAL` needs a certificate: `credentialName`, `credentialNames`, `tlsCertificates` or `serverCertificate` | error |
//!
//! Without one the gateway has nothing to present, and the listener never serves TLS.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::policy::finding::Finding;
use crate::policy::object::{Text, object, objects};

/// The fields the rules read.
#[derive(Debug, Default, Deserialize)]
pub struct Gateway<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Spec<'a> {
    #[serde(borrow, default, deserialize_with = "objects")]
    pub servers: Option<Vec<Server<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Server<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub tls: Option<ServerTls<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls<'a> {
    #[serde(borrow, default)]
    pub mode: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub credential_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub credential_names: Option<Vec<Text<'a>>>,
    /// Only whether there are any.
    #[serde(default)]
    pub tls_certificates: Option<Vec<IgnoredAny>>,
    #[serde(borrow, default)]
    pub server_certificate: Option<Cow<'a, str>>,
}

/// Applies the Gateway row.
pub fn validate(gateway: &Gateway<'_>) -> Vec<Finding> {
    let Some(spec) = &gateway.spec else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for (i, server) in spec.servers.iter().flatten().enumerate() {
        let Some(tls) = &server.tls else {
            continue;
        };
        let Some(mode @ ("SIMPLE" | "MUTUAL")) = tls.mode.as_deref() else {
            continue;
        };
        let text = |v: &Option<Cow<'_, str>>| v.as_deref().is_some_and(|v| !v.is_empty());
        let has_certificate = text(&tls.credential_name)
            || text(&tls.server_certificate)
            || tls.credential_names.as_ref().is_some_and(|l| !l.is_empty())
            || tls.tls_certificates.as_ref().is_some_and(|l| !l.is_empty());
        if !has_certificate {
            findings.push(
                Finding::error(
                    format!("spec.servers[{i}].tls.mode"),
                    "needs a certificate to present: set credentialName (a Secret), \
                     credentialNames, tlsCertificates or serverCertificate",
                )
                .with_value(mode),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::policy::object::decode;

    fn findings(object: &Value) -> Vec<String> {
        let text = object.to_string();
        let view: Gateway = decode(&text).expect("decodes");
        let found = validate(&view);
        assert!(found.iter().all(Finding::is_error), "{found:?}");
        found.iter().map(Finding::to_string).collect()
    }

    fn gateway(tls: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "api-gateway", "namespace": "docs"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["api.rossmck.dev"]},
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["api.rossmck.dev"], "tls": tls},
        ]}})
    }

    #[test]
    fn row_1_simple_or_mutual_tls_needs_a_certificate() {
        for tls in [
            // The seed's (istio-authz-routing.md).
            json!({"mode": "SIMPLE", "credentialName": "api-tls-cert"}),
            json!({"mode": "MUTUAL", "credentialNames": ["rsa", "ecdsa"]}),
            json!({"mode": "SIMPLE", "tlsCertificates": [{"serverCertificate": "/c", "privateKey": "/k"}]}),
            json!({"mode": "SIMPLE", "serverCertificate": "/etc/certs/c.pem", "privateKey": "/etc/certs/k.pem"}),
            json!({"mode": "PASSTHROUGH"}),
            json!({"mode": "ISTIO_MUTUAL"}),
            json!({"httpsRedirect": true}),
            json!(null),
        ] {
            assert!(findings(&gateway(tls.clone())).is_empty(), "{tls}");
        }
        for (tls, mode) in [
            (json!({"mode": "SIMPLE"}), "SIMPLE"),
            (
                json!({"mode": "MUTUAL", "credentialName": "", "credentialNames": [], "tlsCertificates": []}),
                "MUTUAL",
            ),
            (
                json!({"mode": "SIMPLE", "privateKey": "/etc/certs/k.pem"}),
                "SIMPLE",
            ),
        ] {
            assert_eq!(
                findings(&gateway(tls.clone())),
                [format!(
                    "spec.servers[1].tls.mode: needs a certificate to present: set credentialName (a Secret), credentialNames, tlsCertificates or serverCertificate (value {mode:?})"
                )],
                "{tls}"
            );
        }
        assert!(findings(&json!({"kind": "Gateway"})).is_empty());
        assert!(findings(&json!({"spec": {"servers": null}})).is_empty());
    }
}
