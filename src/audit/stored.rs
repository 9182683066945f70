//! The findings sections 4, 5 and 10 give for one stored object: exactly what the webhook would say
//! about it today (`policy::validate` and the Pod table's warnings), each under the rule of its
//! field.
//!
//! The rule of a field is its path with list indexes dropped and, for a workload, the path of its
//! pod template too, so that a rule names the same thing on a Pod and on a Deployment:
//! `metadata.annotations[servicemesh.bigbang.dev/port]`, `spec.rules.from.source.principals`,
//! `spec.containers.env[EDG_INGRESS_PROXY_CONFIG]`. A Pod table warning's rule is the key it is
//! about (`sidecar.istio.io/inject`). The findings section 13 names itself keep its rule id: a
//! `permissivePorts` port no container declares is `port-not-declared`, a ClusterSPIFFEID's ID
//! form refused at admission `spire-id-format`.

use serde_json::Value;

use super::finding::{AuditFinding, Level, Subject};
use crate::config::Config;
use crate::model::read::DEFAULT_NAMESPACE;
use crate::policy::helmrelease::PREFIX;
use crate::policy::kinds::{self, Kind};
use crate::policy::object::{Pod, decode_at};
use crate::policy::{pod, validate};

/// The rule of an object that the webhook could not decode (it answers 400 BadRequest).
pub const UNREADABLE: &str = "unreadable";
/// Section 13's rule for a port that no selected workload declares.
pub const PORT_NOT_DECLARED: &str = "port-not-declared";

/// The object a manifest is, when it is of a kind the webhook reads.
pub fn subject_of(document: &Value) -> Option<Subject> {
    let api_version = document["apiVersion"].as_str()?;
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    let kind = kinds::find(group, document["kind"].as_str()?)?;
    let name = document["metadata"]["name"].as_str().unwrap_or("");
    let namespace = if kind.is_cluster_scoped() {
        ""
    } else {
        document["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
    };
    let mut subject = Subject::new(kind, namespace, name);
    subject.uid = document["metadata"]["uid"].as_str().map(str::to_owned);
    Some(subject)
}

/// Every section 4, 5 and 10 finding for one stored object.
pub fn findings(document: &Value, cfg: &Config) -> Vec<AuditFinding> {
    let Some(subject) = subject_of(document) else {
        return Vec::new();
    };
    let kind = subject.kind;
    let text = document.to_string();
    let mut out = Vec::new();
    match validate::validate(kind.group, kind.kind, &text, cfg) {
        Ok(found) => out.extend(found.into_iter().map(|f| {
            let rule = rule_of(kind, &f.field, f.is_error());
            AuditFinding::new(&rule, f.severity.into(), subject.clone(), f.to_string())
        })),
        Err(error) => {
            // The webhook's BadRequest message.
            let message = format!("cannot decode {}: {error}", kind.kind);
            out.push(AuditFinding::new(
                UNREADABLE,
                Level::Error,
                subject,
                message,
            ));
            return out;
        }
    }
    out.extend(pod_table_warnings(kind, &text, &subject, cfg));
    out
}

/// The warnings of the Pod table for a Pod, or for the pods a workload's template makes.
fn pod_table_warnings(
    kind: &'static Kind,
    text: &str,
    subject: &Subject,
    cfg: &Config,
) -> Vec<AuditFinding> {
    let Some(path) = kind.template else {
        return Vec::new();
    };
    let Ok(Some(template)) = decode_at::<Pod>(text, path) else {
        return Vec::new();
    };
    let Ok(mutation) = pod::mutate(&template, &subject.namespace, cfg) else {
        return Vec::new();
    };
    mutation
        .warnings
        .into_iter()
        .map(|warning| {
            // Each warning starts with the key it is about: `sidecar.istio.io/inject="yes" is …`.
            let rule = warning.split_once('=').map_or("pod", |(key, _)| key);
            AuditFinding::new(rule, Level::Warning, subject.clone(), warning.clone())
        })
        .collect()
}

/// The rule of a finding on `field` of an object of `kind`.
pub fn rule_of(kind: &Kind, field: &str, is_error: bool) -> String {
    let permissive = format!("metadata.annotations[{PREFIX}permissivePorts]");
    let template = kind.template.unwrap_or_default().join(".");
    let field = field
        .strip_prefix(&template)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(field);
    if field == permissive && !is_error {
        return PORT_NOT_DECLARED.to_owned();
    }
    if *kind == kinds::CLUSTER_SPIFFE_ID && field == "spec.spiffeIDTemplate" {
        return super::spire::ID_FORMAT.to_owned();
    }
    without_indexes(field)
}

/// `spec.rules[0].from[1].source.principals[2]` → `spec.rules.from.source.principals`; bracketed
/// keys (`annotations[servicemesh.bigbang.dev/port]`) stay.
fn without_indexes(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inside = &rest[open + 1..close];
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&rest[open..=close]);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_are_field_paths_without_indexes_or_template_paths() {
        let cases = [
            (
                &kinds::DEPLOYMENT,
                "spec.template.metadata.annotations[servicemesh.bigbang.dev/port]",
                true,
                "metadata.annotations[servicemesh.bigbang.dev/port]",
            ),
            (
                &kinds::POD,
                "spec.containers[0].env[EDG_INGRESS_PROXY_CONFIG]",
                true,
                "spec.containers.env[EDG_INGRESS_PROXY_CONFIG]",
            ),
            (
                &kinds::CRON_JOB,
                "spec.jobTemplate.spec.template.spec.initContainers[1].env[X]",
                true,
                "spec.initContainers.env[X]",
            ),
            (
                &kinds::AUTHORIZATION_POLICY,
                "spec.rules[0].from[12].source.principals[3]",
                true,
                "spec.rules.from.source.principals",
            ),
            (
                &kinds::DEPLOYMENT,
                "spec.template.metadata.annotations[servicemesh.bigbang.dev/permissivePorts]",
                false,
                "port-not-declared",
            ),
            (
                &kinds::POD,
                "metadata.annotations[servicemesh.bigbang.dev/permissivePorts]",
                true,
                "metadata.annotations[servicemesh.bigbang.dev/permissivePorts]",
            ),
        ];
        for (kind, field, error, want) in cases {
            assert_eq!(rule_of(kind, field, error), want, "{field}");
        }
    }

    #[test]
    fn the_webhooks_findings_and_warnings_with_its_messages() {
        let cfg = Config::default();
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"sidecar.istio.io/inject": "yes"},
                "annotations": {"servicemesh.bigbang.dev/permissivePorts": "8080,x"}},
                "spec": {"containers": [{"name": "web"}]}}}});
        let found: Vec<(String, Level, String, String)> = findings(&deployment, &cfg)
            .into_iter()
            .map(|f| (f.rule, f.level, f.object.to_string(), f.message))
            .collect();
        let object = "Deployment/shop/web".to_owned();
        let annotation =
            "spec.template.metadata.annotations[servicemesh.bigbang.dev/permissivePorts]";
        assert_eq!(found, [
            ("port-not-declared".into(), Level::Warning, object.clone(),
             format!("{annotation}: port 8080: no container declares it")),
            ("metadata.annotations[servicemesh.bigbang.dev/permissivePorts]".into(), Level::Error, object.clone(),
             format!("{annotation}: entry 2 must be a port number 1-65535 (value \"x\")")),
            ("sidecar.istio.io/inject".into(), Level::Warning, object,
             "sidecar.istio.io/inject=\"yes\" is neither true nor false: Istio ignores it, so the pod is injected".into()),
        ]);
        let unreadable =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": ["a"]}});
        let found = findings(&unreadable, &cfg);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule, UNREADABLE);
        assert!(
            found[0]
                .message
                .starts_with("cannot decode Pod: metadata.labels: "),
            "{}",
            found[0].message
        );
        // A kind the webhook does not read has nothing to say.
        assert!(
            findings(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                &cfg
            )
            .is_empty()
        );
    }
}
