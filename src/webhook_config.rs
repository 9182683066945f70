//! `mesh-admission webhook-config`: the MutatingWebhookConfiguration and ValidatingWebhookConfiguration
//! (DESIGN.md section 8), built from k8s-openapi types so the output is schema-valid by construction.
//! The Helm chart renders the same selectors and rules; `hack/check-chart.sh` compares the two.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::match_conditions;
use crate::policy::kinds::{self, Kind, Mutator, VALIDATED_OPERATIONS};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

/// The label every namespace carries with its own name (set by the apiserver).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const INJECT_LABEL: &str = "sidecar.istio.io/inject";

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub service: String,
    pub namespace: String,
    /// PEM bytes of the CA that signed the serving certificate.
    pub ca_bundle: Vec<u8>,
    /// `Fail` or `Ignore`.
    pub failure_policy: String,
    /// Namespaces never sent to the mutating webhooks (the configuration's `excludedNamespaces`).
    pub excluded_namespaces: Vec<String>,
    /// The label a namespace carries when its pods are injected.
    pub injection_label: (String, String),
    /// `https://HOST[:PORT]` as [`parse_base_url`] returns it: register the webhooks by
    /// `clientConfig.url` (this base plus `/mutate` or `/validate`) instead of by Service.
    pub url: Option<String>,
}

impl WebhookOptions {
    /// The webhooks of the Service `service` in `namespace` for `config` (its excluded namespaces and
    /// injection label), `Fail`, registered by Service, without a CA bundle yet.
    pub fn new(service: &str, namespace: &str, config: &crate::config::Config) -> Self {
        WebhookOptions {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            ca_bundle: Vec::new(),
            failure_policy: "Fail".into(),
            excluded_namespaces: config.excluded_namespaces.clone(),
            injection_label: (
                config.namespace_label.key.clone(),
                config.namespace_label.value.clone(),
            ),
            url: None,
        }
    }

    /// The excluded list, with the webhook's own namespace added so it can never lock out its own recovery.
    fn excluded(&self) -> Vec<String> {
        let mut list = self.excluded_namespaces.clone();
        if !list.contains(&self.namespace) {
            list.push(self.namespace.clone());
        }
        list
    }

    fn client_config(&self, path: &str) -> WebhookClientConfig {
        let (service, url) = match &self.url {
            Some(base) => (None, Some(format!("{base}{path}"))),
            None => (
                Some(ServiceReference {
                    name: self.service.clone(),
                    namespace: self.namespace.clone(),
                    path: Some(path.into()),
                    port: Some(443),
                }),
                None,
            ),
        };
        WebhookClientConfig {
            service,
            ca_bundle: Some(ByteString(self.ca_bundle.clone())),
            url,
        }
    }

    fn webhook_name(&self, purpose: &str) -> String {
        format!("{purpose}.{}.{}.svc", self.service, self.namespace)
    }
}

/// Checks a `--url` value and returns it as `https://HOST[:PORT]`, without a trailing `/`.
///
/// The value is the server's base address: the endpoint paths are added to it, so it carries no path
/// (a lone trailing `/` is dropped), query or fragment, and no user information (the apiserver refuses
/// it). HOST is a DNS name, an IPv4 address or an IPv6 address in brackets; PORT, when given, is
/// 1-65535 (443 otherwise, as for any https URL). The errors say what is wrong and what is expected.
pub fn parse_base_url(value: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected https://HOST[:PORT], e.g. https://127.0.0.1:8443";
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(format!("not a URL ({EXPECTED})"));
    };
    if !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "the scheme must be https, not {scheme:?}: the apiserver calls webhooks over TLS only"
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(at) = authority.find(['/', '?', '#']) {
        let what = match authority.as_bytes()[at] {
            b'/' => "a path",
            b'?' => "a query",
            _ => "a fragment",
        };
        return Err(format!(
            "{what} is not allowed ({:?}): the endpoint paths /mutate and /validate are added to \
             the base URL ({EXPECTED})",
            &authority[at..]
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "user information is not allowed (the apiserver refuses it; {EXPECTED})"
        ));
    }
    let (host, port) = split_host_port(authority)?;
    if host.is_empty() {
        return Err(format!("the host is missing ({EXPECTED})"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address ({EXPECTED})"))?;
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<Ipv4Addr>()
            .map_err(|_| format!("{host:?} is not an IPv4 address ({EXPECTED})"))?;
    } else if !is_dns_name(host) {
        return Err(format!(
            "{host:?} is not a host name (letters, digits, '-' and '.'), an IPv4 address or an \
             IPv6 address in brackets ({EXPECTED})"
        ));
    }
    Ok(match port {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

/// `HOST[:PORT]` split in two, with PORT checked to be 1-65535.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let colon = if authority.starts_with('[') {
        // `[v6]` or `[v6]:port`: the port's colon comes right after the bracket.
        match authority.find(']') {
            Some(end) if authority[end + 1..].is_empty() => None,
            Some(end) if authority[end + 1..].starts_with(':') => Some(end + 1),
            _ => {
                return Err(format!(
                    "{authority:?} is not [IPv6] or [IPv6]:PORT (e.g. https://[::1]:8443)"
                ));
            }
        }
    } else {
        authority.rfind(':')
    };
    let Some(colon) = colon else {
        return Ok((authority, None));
    };
    let (host, port) = (&authority[..colon], &authority[colon + 1..]);
    match port.parse::<u16>() {
        Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((host, Some(number)))
        }
        _ => Err(format!(
            "the port must be a number 1-65535 (value {port:?})"
        )),
    }
}

/// One or more DNS labels (letters, digits and `-`, not at a label's ends, at most 63 each) joined by
/// `.`, at most 253 in all.
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn selector(requirements: Vec<LabelSelectorRequirement>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    })
}

/// One rule per group, versions and scope of `kinds`, their resources together, for `operations`.
fn rules<'k>(
    kinds: impl IntoIterator<Item = &'k Kind>,
    operations: &[kube::core::admission::Operation],
) -> Vec<RuleWithOperations> {
    let mut rules: Vec<RuleWithOperations> = Vec::new();
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let operations: Vec<&str> = operations.iter().map(kinds::operation_name).collect();
    for kind in kinds {
        let same = |r: &&mut RuleWithOperations| {
            r.api_groups == strings(&[kind.group])
                && r.api_versions == strings(kind.versions)
                && r.scope.as_deref() == Some(kind.scope)
        };
        match rules.iter_mut().find(same) {
            Some(rule) => rule
                .resources
                .get_or_insert_with(Vec::new)
                .push(kind.resource.into()),
            None => rules.push(RuleWithOperations {
                operations: strings(&operations),
                api_groups: strings(&[kind.group]),
                api_versions: strings(kind.versions),
                resources: strings(&[kind.resource]),
                scope: Some(kind.scope.into()),
            }),
        }
    }
    rules
}

/// The rules of a mutating webhook: the kinds with this mutator, on its operations.
fn mutated(mutator: Mutator) -> Vec<RuleWithOperations> {
    rules(kinds::mutated_by(mutator), mutator.operations())
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

pub fn mutating(opts: &WebhookOptions) -> MutatingWebhookConfiguration {
    let excluded = opts.excluded();
    let excluded: Vec<&str> = excluded.iter().map(String::as_str).collect();
    let (label_key, label_value) = (&opts.injection_label.0, opts.injection_label.1.as_str());
    let webhook =
        |purpose: &str, rules, namespace_selector, object_selector, conditions| MutatingWebhook {
            name: opts.webhook_name(purpose),
            client_config: opts.client_config("/mutate"),
            rules: Some(rules),
            namespace_selector,
            object_selector,
            failure_policy: Some(opts.failure_policy.clone()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            admission_review_versions: vec!["v1".into()],
            reinvocation_policy: Some("IfNeeded".into()),
            match_policy: Some("Equivalent".into()),
            match_conditions: Some(conditions),
        };
    MutatingWebhookConfiguration {
        metadata: metadata(&opts.service),
        webhooks: Some(vec![
            webhook(
                "namespaces",
                mutated(Mutator::Namespace),
                None,
                selector(vec![requirement(NAME_LABEL, "NotIn", &excluded)]),
                match_conditions::namespaces(label_key),
            ),
            // Pods in namespaces labelled for injection, unless they opt out: as Istio selects them.
            webhook(
                "pods",
                mutated(Mutator::Pod),
                selector(vec![
                    requirement(label_key, "In", &[label_value]),
                    requirement(NAME_LABEL, "NotIn", &excluded),
                ]),
                selector(vec![requirement(INJECT_LABEL, "NotIn", &["false"])]),
                match_conditions::pods(),
            ),
            // Pods that opt in, in namespaces without the label.
            webhook(
                "pods-opt-in",
                mutated(Mutator::Pod),
                selector(vec![
                    requirement(label_key, "DoesNotExist", &[]),
                    requirement(NAME_LABEL, "NotIn", &excluded),
                ]),
                selector(vec![requirement(INJECT_LABEL, "In", &["true"])]),
                match_conditions::pods(),
            ),
        ]),
    }
}

pub fn validating(opts: &WebhookOptions) -> ValidatingWebhookConfiguration {
    // Validation stays on everywhere but in the webhook's own namespace and kube-system.
    let mut excluded = vec![opts.namespace.as_str()];
    if opts.namespace != "kube-system" {
        excluded.push("kube-system");
    }
    ValidatingWebhookConfiguration {
        metadata: metadata(&opts.service),
        webhooks: Some(vec![ValidatingWebhook {
            name: opts.webhook_name("validate"),
            client_config: opts.client_config("/validate"),
            rules: Some(rules(kinds::validated(), VALIDATED_OPERATIONS)),
            namespace_selector: selector(vec![requirement(NAME_LABEL, "NotIn", &excluded)]),
            object_selector: None,
            failure_policy: Some(opts.failure_policy.clone()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            admission_review_versions: vec!["v1".into()],
            match_policy: Some("Equivalent".into()),
            match_conditions: Some(match_conditions::validation()),
        }]),
    }
}

/// Both configurations as a two-document YAML stream.
pub fn render_yaml(opts: &WebhookOptions) -> Result<String, yaml_serde::Error> {
    Ok(format!(
        "{}---\n{}",
        yaml_serde::to_string(&mutating(opts))?,
        yaml_serde::to_string(&validating(opts))?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: Option<&str>) -> WebhookOptions {
        WebhookOptions {
            service: "mesh-admission".into(),
            namespace: "mesh-system".into(),
            ca_bundle: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            failure_policy: "Fail".into(),
            excluded_namespaces: vec!["kube-system".into(), "istio-system".into()],
            injection_label: ("istio-injection".into(), "enabled".into()),
            url: url.map(|u| parse_base_url(u).unwrap()),
        }
    }

    #[test]
    fn base_urls_are_accepted_and_normalised() {
        for (value, want) in [
            ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
            ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
            ("HTTPS://localhost:1", "https://localhost:1"),
            ("https://webhook.example.com", "https://webhook.example.com"),
            ("https://[::1]:8443", "https://[::1]:8443"),
            ("https://[fd00::1]", "https://[fd00::1]"),
            ("https://my-host:65535", "https://my-host:65535"),
        ] {
            assert_eq!(parse_base_url(value).as_deref(), Ok(want), "{value}");
        }
    }

    #[test]
    fn bad_base_urls_say_what_is_wrong() {
        for (value, says) in [
            ("127.0.0.1:8443", "not a URL"),
            ("http://127.0.0.1:8443", "scheme must be https"),
            (
                "https://127.0.0.1:8443/mutate",
                "a path is not allowed (\"/mutate\")",
            ),
            ("https://127.0.0.1:8443//", "a path is not allowed"),
            (
                "https://127.0.0.1:8443?timeout=5s",
                "a query is not allowed",
            ),
            ("https://127.0.0.1:8443#x", "a fragment is not allowed"),
            ("https://user:pw@127.0.0.1:8443", "user information"),
            ("https://:8443", "the host is missing"),
            ("https://", "the host is missing"),
            (
                "https://127.0.0.1:",
                "the port must be a number 1-65535 (value \"\")",
            ),
            (
                "https://127.0.0.1:0",
                "the port must be a number 1-65535 (value \"0\")",
            ),
            ("https://127.0.0.1:65536", "1-65535 (value \"65536\")"),
            ("https://127.0.0.1:+80", "1-65535 (value \"+80\")"),
            ("https://127.0.0.1:http", "1-65535 (value \"http\")"),
            ("https://::1:8443", "not a host name"),
            ("https://[::1", "is not [IPv6] or [IPv6]:PORT"),
            ("https://[::1]8443", "is not [IPv6] or [IPv6]:PORT"),
            ("https://[nope]:8443", "\"[nope]\" is not an IPv6 address"),
            (
                "https://300.0.0.1:8443",
                "\"300.0.0.1\" is not an IPv4 address",
            ),
            ("https://bad_host:8443", "\"bad_host\" is not a host name"),
            ("https://-x.example:8443", "is not a host name"),
            ("https://a..b:8443", "is not a host name"),
        ] {
            let error = parse_base_url(value).expect_err(value);
            assert!(error.contains(says), "{value}: {error}");
        }
    }

    #[test]
    fn by_url_every_webhook_calls_its_endpoint_and_nothing_else_changes() {
        let by_service = options(None);
        let by_url = options(Some("https://127.0.0.1:8443/"));
        for (path, with_url, with_service) in mutating(&by_url)
            .webhooks
            .unwrap()
            .into_iter()
            .zip(mutating(&by_service).webhooks.unwrap())
            .map(|(u, s)| ("/mutate", serde_json::to_value(u), serde_json::to_value(s)))
            .chain(
                validating(&by_url)
                    .webhooks
                    .unwrap()
                    .into_iter()
                    .zip(validating(&by_service).webhooks.unwrap())
                    .map(|(u, s)| {
                        (
                            "/validate",
                            serde_json::to_value(u),
                            serde_json::to_value(s),
                        )
                    }),
            )
        {
            let (mut with_url, mut with_service) = (with_url.unwrap(), with_service.unwrap());
            let client = with_url["clientConfig"].as_object_mut().unwrap();
            assert_eq!(
                client.remove("url"),
                Some(format!("https://127.0.0.1:8443{path}").into())
            );
            assert!(!client.contains_key("service"), "{client:?}");
            let client = with_service["clientConfig"].as_object_mut().unwrap();
            assert_eq!(client["service"]["path"], path);
            client.remove("service");
            // Selectors, rules, exclusions, failure policy, names: all the same.
            assert_eq!(with_url, with_service);
        }
    }

    #[test]
    fn by_service_is_unchanged() {
        let hook = &mutating(&options(None)).webhooks.unwrap()[0];
        let service = hook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.name.as_str(), service.namespace.as_str()),
            ("mesh-admission", "mesh-system")
        );
        assert_eq!(
            (service.path.as_deref(), service.port),
            (Some("/mutate"), Some(443))
        );
        assert_eq!(hook.client_config.url, None);
    }
}
