//! `mesh-admission review`: the server's mutation and validation, offline, over manifests.
//!
//! Each object goes through exactly the code the server runs (`admission::review`) inside an
//! AdmissionReview built as the apiserver would build it. Workloads are validated as workloads, and
//! their pod templates are mutated as the Pods their controllers will create, so the output shows
//! what will run. An AdmissionReview in the input (a captured request) is reviewed as the object,
//! namespace and operation of its request.

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{
    AddOperation, CopyOperation, MoveOperation, PatchOperation, RemoveOperation, ReplaceOperation,
    TestOperation,
};
use serde_json::{Value, json};

use crate::admission::{self, Decision, Endpoint};
use crate::config::Config;
use crate::policy::kinds;

/// One object to review, with what the apiserver would say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub object: Value,
    /// The namespace the apiserver names in its request; else the object's, else the default.
    pub namespace: Option<String>,
    pub operation: String,
    pub old_object: Value,
}

/// A document that cannot be reviewed as it stands: exit code 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectError {
    #[error("an AdmissionReview without a request (a reply?) has nothing to review")]
    NoRequest,
    #[error(
        "the AdmissionReview's request (operation {operation}) has no object to review; \
         the server admits such requests unchanged"
    )]
    NoObject { operation: String },
}

impl Subject {
    /// An object as `kubectl apply` would create it.
    pub fn create(object: Value) -> Self {
        Self {
            object,
            namespace: None,
            operation: "CREATE".into(),
            old_object: Value::Null,
        }
    }

    /// What a document of the input stands for: itself, or for an AdmissionReview the object,
    /// namespace and operation of its request.
    pub fn from_document(document: Value) -> Result<Self, SubjectError> {
        let is_review = document["kind"] == "AdmissionReview"
            && document["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("admission.k8s.io/"));
        if !is_review {
            return Ok(Self::create(document));
        }
        let Value::Object(mut review) = document else {
            return Err(SubjectError::NoRequest);
        };
        let Some(Value::Object(mut request)) = review.remove("request") else {
            return Err(SubjectError::NoRequest);
        };
        let operation = request
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or("CREATE")
            .to_owned();
        let object = match request.remove("object") {
            Some(object @ Value::Object(_)) => object,
            _ => return Err(SubjectError::NoObject { operation }),
        };
        Ok(Self {
            object,
            namespace: request
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned),
            operation,
            old_object: request.remove("oldObject").unwrap_or(Value::Null),
        })
    }
}

/// One object's result.
#[derive(Debug, Clone)]
pub struct ObjectReview {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object as it will be stored (for a workload: with its pod template as its pods will be).
    pub mutated: Value,
    /// The JSON Patch from the input object to `mutated`.
    pub patch: Vec<PatchOperation>,
    /// The `/mutate` reply (for a workload: the reply for the Pod its template makes).
    pub mutate_reply: Option<Value>,
    /// The `/validate` reply.
    pub validate_reply: Option<Value>,
    /// The denial message, when validation refused the object.
    pub denial: Option<String>,
    pub warnings: Vec<String>,
}

impl ObjectReview {
    fn add_denial(&mut self, message: String) {
        self.denial = Some(match self.denial.take() {
            Some(earlier) => format!("{earlier}; {message}"),
            None => message,
        });
    }
}

/// Where a workload kind keeps its pod template.
fn template_path(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    kinds::find(group, kind)
        .filter(|k| k.is_workload())
        .and_then(|k| k.template)
}

/// An AdmissionReview for `object` as kube-apiserver sends it on CREATE.
pub fn admission_review(object: &Value, namespace: &str, uid: &str) -> Value {
    request_review(object, "CREATE", &Value::Null, namespace, uid)
}

fn request_review(
    object: &Value,
    operation: &str,
    old_object: &Value,
    namespace: &str,
    uid: &str,
) -> Value {
    let (group, version, kind) = group_version_kind(object);
    // The kinds table knows the plurals (`authorizationpolicies`); others are guessed as the apiserver
    // would not need to: no rule reads them.
    let resource = kinds::find(group, kind).map_or_else(
        || format!("{}s", kind.to_lowercase()),
        |k| k.resource.to_owned(),
    );
    let mut request = json!({
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "name": object["metadata"]["name"].as_str().unwrap_or(""),
        "operation": operation,
        "userInfo": {"username": "mesh-admission-review"},
        "object": object,
        "oldObject": old_object,
        "dryRun": true,
    });
    if !is_cluster_scoped(group, kind) {
        request["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Namespaces and ClusterSPIFFEIDs: the apiserver names no namespace in their requests.
fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    kinds::find(group, kind).map_or(kind == "Namespace", |k| k.is_cluster_scoped())
}

fn group_version_kind(object: &Value) -> (&str, &str, &str) {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    (group, version, object["kind"].as_str().unwrap_or(""))
}

/// Sends one review through the server's code and returns the decoded reply and decision.
fn run(endpoint: Endpoint, review: &Value, cfg: &Config) -> Option<(Value, Decision)> {
    let body = review.to_string();
    // A review we built ourselves is always an AdmissionReview.
    let outcome = admission::review(endpoint, body.as_bytes(), cfg).ok()?;
    let reply = serde_json::from_slice(&outcome.to_json()).ok()?;
    Some((reply, outcome.decision))
}

/// Reviews one object as `kubectl apply` creates it.
pub fn review_object(
    object: &Value,
    default_namespace: &str,
    cfg: &Config,
    uid: &str,
) -> ObjectReview {
    review_subject(
        &Subject::create(object.clone()),
        default_namespace,
        cfg,
        uid,
    )
}

/// Reviews one subject: mutation first, then validation of the result, as the apiserver orders
/// them. A denied object is reported with no patch: it will not be stored.
pub fn review_subject(
    subject: &Subject,
    default_namespace: &str,
    cfg: &Config,
    uid: &str,
) -> ObjectReview {
    let object = &subject.object;
    let (group, _, kind) = group_version_kind(object);
    let namespace = subject
        .namespace
        .as_deref()
        .or_else(|| object["metadata"]["namespace"].as_str())
        .unwrap_or(default_namespace)
        .to_owned();
    let (operation, old_object) = (subject.operation.as_str(), &subject.old_object);
    let mut result = ObjectReview {
        kind: kind.to_owned(),
        namespace: if is_cluster_scoped(group, kind) {
            String::new()
        } else {
            namespace.clone()
        },
        name: object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        mutated: object.clone(),
        patch: Vec::new(),
        mutate_reply: None,
        validate_reply: None,
        denial: None,
        warnings: Vec::new(),
    };

    // Mutation: of the object itself, or of the Pod a workload's template makes.
    let template = template_path(group, kind);
    let mutation_target = mutation_target(object);
    if let Some(target) = mutation_target {
        // Whatever happens to a workload, its controller CREATEs the Pods.
        let (operation, old_object) = match template {
            Some(_) => ("CREATE", &Value::Null),
            None => (operation, old_object),
        };
        if let Some((reply, decision)) = run(
            Endpoint::Mutate,
            &request_review(&target, operation, old_object, &namespace, uid),
            cfg,
        ) {
            if let Decision::Allowed { patch, warnings } = &decision {
                let prefix = PointerBuf::from_tokens(template.unwrap_or(&[]).iter().copied());
                result.patch = patch.iter().map(|op| rebase(op, &prefix)).collect();
                result.warnings.extend(warnings.iter().cloned());
            }
            if let Some(message) = decision.denial() {
                result.denial = Some(message.to_owned());
            }
            result.mutate_reply = Some(reply);
        }
        if json_patch::patch(&mut result.mutated, &result.patch).is_err() {
            // Cannot happen for patches built against this very object; report rather than guess.
            result
                .denial
                .get_or_insert_with(|| "internal error: the patch did not apply".into());
        }
    }

    // A denial by /mutate ends the request: the apiserver never calls /validate for it, and an
    // object that /mutate cannot decode would only be refused a second time in the same words.
    if template.is_none() && result.denial.is_some() {
        result.mutated = object.clone();
        result.patch.clear();
        return result;
    }

    // Validation: workloads as submitted, everything else as mutated.
    let validated = if template.is_some() {
        object
    } else {
        &result.mutated
    };
    if let Some((reply, decision)) = run(
        Endpoint::Validate,
        &request_review(validated, operation, old_object, &namespace, uid),
        cfg,
    ) {
        match decision {
            Decision::Allowed { warnings, .. } => result.warnings.extend(warnings),
            Decision::Denied { message, warnings } => {
                result.warnings.extend(warnings);
                result.add_denial(message);
            }
            // The workload as written cannot be decoded: it is refused before any Pod exists, so
            // this replaces what the preview of its Pod said about the same template.
            Decision::BadRequest { message } if template.is_some() => {
                result.denial = Some(message);
            }
            Decision::BadRequest { message } => result.add_denial(message),
        }
        result.validate_reply = Some(reply);
    }
    if result.denial.is_some() {
        result.mutated = object.clone();
        result.patch.clear();
    }
    result
}

/// What `/mutate` is asked about for `object`: the object itself, or for a workload the Pod its
/// controller creates from its template (`None` when a workload has no template).
pub fn mutation_target(object: &Value) -> Option<Value> {
    let (group, _, kind) = group_version_kind(object);
    match template_path(group, kind) {
        Some(path) => pod_from_template(object, path),
        None => Some(object.clone()),
    }
}

/// Whether `object` is a workload whose pod template is mutated in its stead.
pub fn is_workload(object: &Value) -> bool {
    let (group, _, kind) = group_version_kind(object);
    template_path(group, kind).is_some()
}

/// The Pod a controller creates from a workload's template; none when the template is not an object
/// (validation then names the field), since a patch for an empty Pod would not apply to it.
fn pod_from_template(object: &Value, path: &[&str]) -> Option<Value> {
    let mut template = object;
    for token in path {
        template = template.get(token)?;
    }
    let template = template.as_object()?;
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
    for field in ["metadata", "spec"] {
        if let Some(value) = template.get(field) {
            pod[field] = value.clone();
        }
    }
    Some(pod)
}

fn rebase(op: &PatchOperation, prefix: &Pointer) -> PatchOperation {
    let at = |path: &PointerBuf| prefix.concat(path);
    match op {
        PatchOperation::Add(o) => PatchOperation::Add(AddOperation {
            path: at(&o.path),
            value: o.value.clone(),
        }),
        PatchOperation::Remove(o) => PatchOperation::Remove(RemoveOperation { path: at(&o.path) }),
        PatchOperation::Replace(o) => PatchOperation::Replace(ReplaceOperation {
            path: at(&o.path),
            value: o.value.clone(),
        }),
        PatchOperation::Move(o) => PatchOperation::Move(MoveOperation {
            from: at(&o.from),
            path: at(&o.path),
        }),
        PatchOperation::Copy(o) => PatchOperation::Copy(CopyOperation {
            from: at(&o.from),
            path: at(&o.path),
        }),
        PatchOperation::Test(o) => PatchOperation::Test(TestOperation {
            path: at(&o.path),
            value: o.value.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_template_is_mutated_as_its_pods_would_be() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}}},
        });
        let r = review_object(&deployment, "default", &Config::default(), "u");
        assert_eq!(r.denial, None);
        assert_eq!(r.namespace, "shop");
        let template = &r.mutated["spec"]["template"];
        assert_eq!(
            template["metadata"]["labels"]["spire-managed-identity"],
            "true"
        );
        assert_eq!(
            template["metadata"]["annotations"]["inject.istio.io/templates"],
            "sidecar,spire"
        );
        assert_eq!(
            template["spec"]["volumes"][0]["csi"]["driver"],
            "csi.spiffe.io"
        );
        assert!(
            r.patch
                .iter()
                .all(|op| op.path().as_str().starts_with("/spec/template/"))
        );
        // CronJobs keep their template deeper.
        let cronjob = json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
        });
        let r = review_object(&cronjob, "default", &Config::default(), "u");
        assert_eq!(
            r.mutated["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"],
            "true"
        );
    }

    #[test]
    fn a_template_that_is_not_an_object_is_denied_by_validation_not_patched() {
        for template in [json!(1), json!("x"), json!([]), json!(null)] {
            let deployment = json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"template": template},
            });
            let r = review_object(&deployment, "default", &Config::default(), "u");
            assert!(r.patch.is_empty(), "{template}: {:?}", r.patch);
            assert_eq!(r.mutated, deployment);
            let denial = r.denial.unwrap_or_default();
            assert!(!denial.contains("internal error"), "{template}: {denial}");
            if !template.is_null() {
                assert!(denial.contains("spec.template"), "{template}: {denial}");
            }
        }
    }

    #[test]
    fn an_object_mutate_cannot_decode_is_refused_once() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": "app=web"}});
        let r = review_object(&pod, "default", &Config::default(), "u");
        let denial = r.denial.unwrap_or_default();
        assert!(
            denial.starts_with("cannot decode Pod: metadata.labels: invalid type: string"),
            "{denial}"
        );
        assert_eq!(denial.matches("cannot decode").count(), 1, "{denial}");
        assert_eq!(
            r.validate_reply, None,
            "the apiserver stops at /mutate's denial"
        );
        // A workload is refused by /validate as written; its Pod preview says nothing more.
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"metadata": {"labels": "app=web"}}}});
        let denial = review_object(&deployment, "default", &Config::default(), "u")
            .denial
            .unwrap_or_default();
        assert!(
            denial.starts_with("cannot decode Deployment: spec.template.metadata.labels:"),
            "{denial}"
        );
        assert_eq!(denial.matches("cannot decode").count(), 1, "{denial}");
    }

    #[test]
    fn istio_objects_are_validated_in_any_served_version() {
        for version in ["v1", "v1beta1"] {
            let policy = json!({
                "apiVersion": format!("security.istio.io/{version}"), "kind": "AuthorizationPolicy",
                "metadata": {"name": "signing-api", "namespace": "docs"},
                "spec": {"rules": [{"from": [{"source": {"principals": ["spiffe://cluster.local/ns/docs/sa/bucket-sa"]}}]}]},
            });
            let r = review_object(&policy, "default", &Config::default(), "u");
            let denial = r.denial.unwrap_or_default();
            assert!(
                denial.starts_with("spec.rules[0].from[0].source.principals[0]: never matches"),
                "{version}: {denial}"
            );
            assert_eq!(r.validate_reply.unwrap()["response"]["status"]["code"], 422);
        }
        let gateway_api = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "g"}, "spec": {"listeners": [{"tls": {"mode": "SIMPLE"}}]}});
        assert_eq!(
            review_object(&gateway_api, "default", &Config::default(), "u").denial,
            None
        );
    }

    #[test]
    fn denials_and_the_default_namespace() {
        let hr = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "x", "annotations": {"servicemesh.bigbang.dev/port": "0"}},
        });
        let r = review_object(&hr, "team-a", &Config::default(), "u");
        assert_eq!(r.namespace, "team-a");
        assert!(
            r.denial
                .as_deref()
                .is_some_and(|d| d.contains("servicemesh.bigbang.dev/port")),
            "{:?}",
            r.denial
        );
        assert!(r.patch.is_empty());
        // Pods in excluded namespaces are left alone, as in the server.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "kube-system"}});
        assert!(
            review_object(&pod, "default", &Config::default(), "u")
                .patch
                .is_empty()
        );
    }
}
