//! The `matchConditions` of the webhook configurations (DESIGN.md section 8): CEL expressions with which
//! the apiserver skips a call whose reply cannot matter. Each call costs the apiserver a round trip
//! on its one HTTP/2 connection to the webhook and a share of its pod-create throughput.
//!
//! A condition may only skip what the server itself would admit unchanged and without a warning: the
//! server keeps applying every rule, so `review`, a cluster without these conditions and one with
//! them agree (`tests/match_conditions.rs` proves it over the corpus and the case tables). Every key
//! comes from the policy's own constants, so a renamed annotation cannot leave a stale condition.
//!
//! The apiserver treats an expression that fails to evaluate as a failed call (the failure policy
//! decides), so every field access is guarded with `has()`: a missing `labels` map is a skip
//! decision, never an error.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;

use crate::policy::contrast::{
    EGRESS_ANNOTATION, EGRESS_ENV_VARS, INGRESS_ANNOTATION, INGRESS_ENV_VARS,
};
use crate::policy::helmrelease::PREFIX;
use crate::policy::kinds;
use crate::policy::namespace::ISTIO_REVISION_LABEL;
use crate::policy::pod::INJECT_KEY;

/// Namespaces: only while neither the injection label nor Istio's revision label is set, since
/// either one is the namespace's own choice, which the server never overrides.
pub fn namespaces(injection_label_key: &str) -> Vec<MatchCondition> {
    let has_label = |key: &str| format!("{} in object.metadata.labels", cel_string(key));
    vec![condition(
        "no-injection-choice-yet",
        format!(
            "!has(object.metadata.labels) ||\n  !({} || {})",
            has_label(injection_label_key),
            has_label(ISTIO_REVISION_LABEL)
        ),
    )]
}

/// Pods: not with `hostNetwork` (Istio never injects them) and not when the pod opts out with
/// `sidecar.istio.io/inject: false`, where the label wins over the annotation and the value is
/// compared without case, exactly as the server reads it.
pub fn pods() -> Vec<MatchCondition> {
    let key = cel_string(INJECT_KEY);
    vec![
        condition(
            "not-host-network",
            "!has(object.spec) || !has(object.spec.hostNetwork) || object.spec.hostNetwork != true"
                .to_owned(),
        ),
        condition(
            "not-opted-out",
            format!(
                "!(has(object.metadata.labels) && {key} in object.metadata.labels\n  \
                 ? object.metadata.labels[{key}].lowerAscii() == 'false'\n  \
                 : has(object.metadata.annotations) && {key} in object.metadata.annotations &&\n    \
                 object.metadata.annotations[{key}].lowerAscii() == 'false')"
            ),
        ),
    ]
}

/// Validation: always for the API groups whose rules read the spec (the Istio security objects of
/// DESIGN.md section 10: any field may hold the mistake), else only when the object or its pod template
/// carries a setting a rule reads: a Big Bang mesh annotation, a Contrast proxy annotation, or a
/// Contrast proxy env var in a container or init container. Every template place of the kinds table is looked at whatever the kind (a missing
/// place is an empty map): a Deployment whose own metadata carries a mesh annotation is called needlessly, which
/// is harmless, and one expression for every kind stays short enough to review.
pub fn validation() -> Vec<MatchCondition> {
    let annotations = cel_list(&[INGRESS_ANNOTATION, EGRESS_ANNOTATION]);
    let env_vars: Vec<&str> = INGRESS_ENV_VARS
        .iter()
        .chain(EGRESS_ENV_VARS.iter())
        .copied()
        .collect();
    let env_vars = cel_list(&env_vars);
    let prefix = cel_string(PREFIX);
    let places: Vec<String> = kinds::template_paths()
        .into_iter()
        .map(template_place)
        .collect();
    let groups = cel_list(&kinds::spec_validated_groups());
    vec![condition(
        "mesh-settings-present",
        format!(
            "request.kind.group in {groups} ||\n[\n  {}\n].exists(t,\n  \
             has(t.metadata) && has(t.metadata.annotations) && t.metadata.annotations.exists(k,\n    \
             k.startsWith({prefix}) || k in {annotations}) ||\n  \
             has(t.spec) && [\n    \
             has(t.spec.containers) ? t.spec.containers : [],\n    \
             has(t.spec.initContainers) ? t.spec.initContainers : []\n  \
             ].exists(cs, cs.exists(c, has(c.env) && c.env.exists(e, has(e.name) && e.name in {env_vars}))))",
            places.join(",\n  ")
        ),
    )]
}

/// The pod template at `path` of the object (the kinds table's paths), or an empty map where the
/// object has none.
fn template_place(path: &[&str]) -> String {
    if path.is_empty() {
        return "object".to_owned();
    }
    let fields: Vec<String> = (1..=path.len())
        .map(|depth| format!("object.{}", path[..depth].join(".")))
        .collect();
    let guards: Vec<String> = fields.iter().map(|f| format!("has({f})")).collect();
    format!(
        "{} ? {} : {{}}",
        guards.join(" && "),
        fields[fields.len() - 1]
    )
}

fn condition(name: &str, expression: String) -> MatchCondition {
    MatchCondition {
        name: name.to_owned(),
        expression,
    }
}

/// A CEL string literal. Label and annotation keys cannot hold quotes or backslashes, but the
/// configured label key is the user's text, so it is escaped rather than trusted.
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn cel_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|item| cel_string(item)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_keys_are_quoted_as_cel_strings() {
        assert_eq!(cel_string("istio-injection"), "'istio-injection'");
        assert_eq!(cel_string(r"a'b\c"), r"'a\'b\\c'");
        let expression = &namespaces("mesh.example/inject")[0].expression;
        assert!(
            expression.contains("'mesh.example/inject' in object.metadata.labels"),
            "{expression}"
        );
    }
}
