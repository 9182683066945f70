//! `mesh-admission webhook-config`: the MutatingWebhookConfiguration and ValidatingWebhookConfiguration
//! (DESIGN.md section 8), built from k8s-openapi types so the output is schema-valid by construction.
//! The Helm chart renders the same selectors and rules; `hack/check-chart.sh` compares the two.

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
}

impl WebhookOptions {
    /// The excluded list, with the webhook's own namespace added so it can never lock out its own recovery.
    fn excluded(&self) -> Vec<String> {
        let mut list = self.excluded_namespaces.clone();
        if !list.contains(&self.namespace) {
            list.push(self.namespace.clone());
        }
        list
    }

    fn client_config(&self, path: &str) -> WebhookClientConfig {
        WebhookClientConfig {
            service: Some(ServiceReference {
                name: self.service.clone(),
                namespace: self.namespace.clone(),
                path: Some(path.into()),
                port: Some(443),
            }),
            ca_bundle: Some(ByteString(self.ca_bundle.clone())),
            url: None,
        }
    }

    fn webhook_name(&self, purpose: &str) -> String {
        format!("{purpose}.{}.{}.svc", self.service, self.namespace)
    }
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

fn rule(
    operations: &[&str],
    group: &str,
    versions: &[&str],
    resources: &[&str],
    scope: &str,
) -> RuleWithOperations {
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    RuleWithOperations {
        operations: strings(operations),
        api_groups: strings(&[group]),
        api_versions: strings(versions),
        resources: strings(resources),
        scope: Some(scope.into()),
    }
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
    let webhook = |purpose: &str, rules, namespace_selector, object_selector| MutatingWebhook {
        name: opts.webhook_name(purpose),
        client_config: opts.client_config("/mutate"),
        rules: Some(vec![rules]),
        namespace_selector,
        object_selector,
        failure_policy: Some(opts.failure_policy.clone()),
        side_effects: "None".into(),
        timeout_seconds: Some(5),
        admission_review_versions: vec!["v1".into()],
        reinvocation_policy: Some("IfNeeded".into()),
        match_policy: Some("Equivalent".into()),
        match_conditions: None,
    };
    let pods = || rule(&["CREATE"], "", &["v1"], &["pods"], "Namespaced");
    MutatingWebhookConfiguration {
        metadata: metadata(&opts.service),
        webhooks: Some(vec![
            webhook(
                "namespaces",
                rule(&["CREATE", "UPDATE"], "", &["v1"], &["namespaces"], "*"),
                None,
                selector(vec![requirement(NAME_LABEL, "NotIn", &excluded)]),
            ),
            // Pods in namespaces labelled for injection, unless they opt out: as Istio selects them.
            webhook(
                "pods",
                pods(),
                selector(vec![
                    requirement(label_key, "In", &[label_value]),
                    requirement(NAME_LABEL, "NotIn", &excluded),
                ]),
                selector(vec![requirement(INJECT_LABEL, "NotIn", &["false"])]),
            ),
            // Pods that opt in, in namespaces without the label.
            webhook(
                "pods-opt-in",
                pods(),
                selector(vec![
                    requirement(label_key, "DoesNotExist", &[]),
                    requirement(NAME_LABEL, "NotIn", &excluded),
                ]),
                selector(vec![requirement(INJECT_LABEL, "In", &["true"])]),
            ),
        ]),
    }
}

pub fn validating(opts: &WebhookOptions) -> ValidatingWebhookConfiguration {
    let write = ["CREATE", "UPDATE"];
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
            rules: Some(vec![
                rule(
                    &write,
                    "helm.toolkit.fluxcd.io",
                    &["*"],
                    &["helmreleases"],
                    "Namespaced",
                ),
                rule(&write, "", &["v1"], &["pods"], "Namespaced"),
                rule(
                    &write,
                    "apps",
                    &["v1"],
                    &["deployments", "statefulsets", "daemonsets", "replicasets"],
                    "Namespaced",
                ),
                rule(
                    &write,
                    "batch",
                    &["v1"],
                    &["jobs", "cronjobs"],
                    "Namespaced",
                ),
            ]),
            namespace_selector: selector(vec![requirement(NAME_LABEL, "NotIn", &excluded)]),
            object_selector: None,
            failure_policy: Some(opts.failure_policy.clone()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            admission_review_versions: vec!["v1".into()],
            match_policy: Some("Equivalent".into()),
            match_conditions: None,
        }]),
    }
}

/// Both configurations as a two-document YAML stream.
pub fn render_yaml(opts: &WebhookOptions) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "{}---\n{}",
        serde_yaml::to_string(&mutating(opts))?,
        serde_yaml::to_string(&validating(opts))?
    ))
}
