//! AdmissionReview bytes in, AdmissionReview bytes out: decode the envelope, hand the object to the
//! policy core, and build the reply the apiserver expects. Pure: no I/O, so the server, `review` and
//! the benchmarks all run exactly this code.

use std::borrow::Cow;

use base64::Engine;
use kube::core::Status;
use kube::core::admission::Operation;
use serde::Serialize;
use serde_json::value::RawValue;

mod envelope;

use envelope::{ObjectIn, RequestIn, ReviewIn};

use crate::config::Config;
use crate::policy::finding::{Finding, denial_message};
use crate::policy::object::{self, DecodeError};
use crate::policy::{Mutation, namespace, pod, validate};

/// Which webhook a review was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// A body that is not an AdmissionReview at all: answered with HTTP 400, since there is no uid to echo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// The body is not valid JSON.
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an `admission.k8s.io` AdmissionReview with a request.
    #[error("request body is not an AdmissionReview: {0}")]
    NotAdmissionReview(String),
}

/// How a review ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultClass {
    Patched,
    Unchanged,
    Denied,
    /// The object could not be decoded as the kind it claims.
    Error,
}

impl ResultClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultClass::Patched => "patched",
            ResultClass::Unchanged => "unchanged",
            ResultClass::Denied => "denied",
            ResultClass::Error => "error",
        }
    }
}

/// The decision for one review.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allowed {
        patch: Vec<json_patch::PatchOperation>,
        warnings: Vec<String>,
    },
    Denied {
        code: u16,
        reason: &'static str,
        message: String,
        warnings: Vec<String>,
    },
}

/// A review's facts and decision: everything needed to reply, log and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub api_version: String,
    pub uid: String,
    pub kind: String,
    pub operation: &'static str,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub decision: Decision,
}

impl Outcome {
    pub fn result(&self) -> ResultClass {
        match &self.decision {
            Decision::Allowed { patch, .. } if patch.is_empty() => ResultClass::Unchanged,
            Decision::Allowed { .. } => ResultClass::Patched,
            Decision::Denied { code: 400, .. } => ResultClass::Error,
            Decision::Denied { .. } => ResultClass::Denied,
        }
    }

    /// The reply body: an AdmissionReview with the request's apiVersion, the uid echoed, and the patch
    /// base64-encoded.
    ///
    /// Written here rather than with kube's `AdmissionResponse`, whose `patch` serializes as an array
    /// of numbers instead of the base64 string the API defines for `[]byte`.
    pub fn to_json(&self) -> Vec<u8> {
        let (allowed, status, patch, warnings) = match &self.decision {
            Decision::Allowed { patch, warnings } => {
                // A Vec of patch operations always serializes.
                let encoded = (!patch.is_empty())
                    .then(|| serde_json::to_vec(patch).unwrap_or_default())
                    .and_then(|bytes| base64_json_string(&bytes));
                (true, None, encoded, warnings)
            }
            Decision::Denied {
                code,
                reason,
                message,
                warnings,
            } => (
                false,
                Some(Status::failure(message, reason).with_code(*code)),
                None,
                warnings,
            ),
        };
        let reply = ReviewOut {
            api_version: &self.api_version,
            kind: "AdmissionReview",
            response: ResponseOut {
                uid: &self.uid,
                allowed,
                status,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: (!warnings.is_empty()).then_some(warnings.as_slice()),
            },
        };
        // Strings, bools and numbers only: serialization cannot fail.
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

/// `bytes` in base64 as a JSON string, ready to embed: the serializer would otherwise check each of
/// its characters for escapes, and base64 has none.
fn base64_json_string(bytes: &[u8]) -> Option<Box<RawValue>> {
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4 + 2);
    text.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut text);
    text.push('"');
    RawValue::from_string(text).ok()
}

fn operation_str(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Decodes a review body and decides it.
pub fn review(endpoint: Endpoint, body: &[u8], cfg: &Config) -> Result<Outcome, ReviewError> {
    let text = std::str::from_utf8(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    // One pass decodes the envelope and, when its kind is known by then (the apiserver writes `kind`
    // before `object`), the object's view too. If that view does not fit, decode again keeping the
    // object raw, so the kind-specific decoder can name the offending field.
    let review = match ReviewIn::decode(text, endpoint) {
        Ok(review) => review,
        Err(_) => ReviewIn::decode(text, envelope::Typing::Raw).map_err(|e| {
            if e.is_data() {
                ReviewError::NotAdmissionReview(e.to_string())
            } else {
                ReviewError::NotJson(e.to_string())
            }
        })?,
    };
    let api_version = review.api_version.unwrap_or_default();
    if review.kind.as_deref() != Some("AdmissionReview")
        || !api_version.starts_with("admission.k8s.io/")
    {
        return Err(ReviewError::NotAdmissionReview(format!(
            "apiVersion {api_version:?} kind {:?}, want admission.k8s.io/v1 AdmissionReview",
            review.kind.as_deref().unwrap_or("")
        )));
    }
    let request = review
        .request
        .ok_or_else(|| ReviewError::NotAdmissionReview("it has no request".into()))?;
    if request.uid.is_empty() {
        return Err(ReviewError::NotAdmissionReview(
            "request.uid is empty".into(),
        ));
    }

    let namespace = request.namespace.as_deref().unwrap_or("");
    let decision = decide(endpoint, &request, namespace, cfg);
    Ok(Outcome {
        api_version: api_version.into_owned(),
        uid: request.uid.into_owned(),
        kind: request.kind.kind.into_owned(),
        operation: operation_str(&request.operation),
        namespace: namespace.to_owned(),
        name: request.name.map(Cow::into_owned).unwrap_or_default(),
        dry_run: request.dry_run.unwrap_or(false),
        decision,
    })
}

fn allowed(patch: Vec<json_patch::PatchOperation>, warnings: Vec<String>) -> Decision {
    Decision::Allowed { patch, warnings }
}

fn decide(endpoint: Endpoint, request: &RequestIn<'_>, namespace: &str, cfg: &Config) -> Decision {
    let writes = matches!(request.operation, Operation::Create | Operation::Update);
    // DELETE and CONNECT carry no object to change; subresources (status, binding…) are not ours.
    if !writes || request.sub_resource.is_some() {
        return allowed(Vec::new(), Vec::new());
    }
    let (group, kind) = (request.kind.group.as_ref(), request.kind.kind.as_ref());
    let result = match (&request.object, endpoint) {
        (ObjectIn::Absent, _) => return allowed(Vec::new(), Vec::new()),
        (ObjectIn::Pod(p), _) => mutate_pod(p, namespace, cfg),
        (ObjectIn::Namespace(ns), _) => Ok(mutate_namespace(ns, request, cfg)),
        (ObjectIn::Raw(raw), Endpoint::Mutate) => mutate_raw(request, raw.get(), namespace, cfg),
        (ObjectIn::Raw(raw), Endpoint::Validate) => {
            return validate::validate(group, kind, raw.get())
                .map(verdict)
                .unwrap_or_else(|e| bad_request(kind, &e));
        }
    };
    result
        .map(|m| allowed(m.patch, m.warnings))
        .unwrap_or_else(|e| bad_request(kind, &e))
}

/// Mutation of an object the envelope kept raw (its kind came after it, or its view did not fit).
fn mutate_raw(
    request: &RequestIn<'_>,
    object: &str,
    namespace: &str,
    cfg: &Config,
) -> Result<Mutation, DecodeError> {
    match envelope::mutated_view(&request.kind, &request.operation) {
        Some(envelope::View::Namespace) => {
            Ok(mutate_namespace(&object::decode(object)?, request, cfg))
        }
        Some(envelope::View::Pod) => mutate_pod(&object::decode(object)?, namespace, cfg),
        None => Ok(Mutation::default()),
    }
}

fn mutate_namespace(ns: &object::Namespace<'_>, request: &RequestIn<'_>, cfg: &Config) -> Mutation {
    let name = ns
        .metadata
        .as_ref()
        .and_then(|m| m.name.as_deref())
        .or(request.name.as_deref())
        .unwrap_or("");
    namespace::mutate(ns, name, cfg)
}

fn mutate_pod(p: &object::Pod<'_>, namespace: &str, cfg: &Config) -> Result<Mutation, DecodeError> {
    // Pods created by controllers carry the namespace only in the request.
    let ns = if namespace.is_empty() {
        p.metadata
            .as_ref()
            .and_then(|m| m.namespace.as_deref())
            .unwrap_or("")
    } else {
        namespace
    };
    pod::mutate(p, ns, cfg)
}

/// Turns findings into the reply: every error in one message, warnings alongside.
pub fn verdict(findings: Vec<Finding>) -> Decision {
    let warnings = findings
        .iter()
        .filter(|f| !f.is_error())
        .map(Finding::to_warning)
        .collect();
    match denial_message(&findings) {
        None => allowed(Vec::new(), warnings),
        Some(message) => Decision::Denied {
            code: 422,
            reason: "Invalid",
            message,
            warnings,
        },
    }
}

fn bad_request(kind: &str, error: &DecodeError) -> Decision {
    Decision::Denied {
        code: 400,
        reason: "BadRequest",
        message: format!("cannot decode {kind}: {error}"),
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::finding::Severity;
    use serde_json::{Value, json};

    fn body(kind: &str, operation: &str, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
                "namespace": "apps",
                "name": "x",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "dryRun": false,
            }
        })
        .to_string()
        .into_bytes()
    }

    fn reply(endpoint: Endpoint, body: &[u8]) -> Value {
        let outcome = review(endpoint, body, &Config::default()).expect("a review");
        serde_json::from_slice(&outcome.to_json()).unwrap()
    }

    #[test]
    fn a_patched_reply_echoes_uid_and_carries_a_base64_json_patch() {
        let r = reply(
            Endpoint::Mutate,
            &body("Namespace", "CREATE", json!({"metadata": {"name": "apps"}})),
        );
        assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(r["kind"], "AdmissionReview");
        assert_eq!(r["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/metadata/labels", "value": {"istio-injection": "enabled"}}])
        );
    }

    #[test]
    fn no_change_means_no_patch_at_all() {
        let object =
            json!({"metadata": {"name": "apps", "labels": {"istio-injection": "enabled"}}});
        let r = reply(Endpoint::Mutate, &body("Namespace", "UPDATE", object));
        assert_eq!(r["response"]["allowed"], true);
        assert!(r["response"].get("patch").is_none() && r["response"].get("patchType").is_none());
    }

    #[test]
    fn delete_connect_and_pod_updates_are_untouched() {
        for (kind, op) in [
            ("Pod", "DELETE"),
            ("Pod", "CONNECT"),
            ("Pod", "UPDATE"),
            ("Namespace", "DELETE"),
        ] {
            let r = reply(
                Endpoint::Mutate,
                &body(kind, op, json!({"metadata": {"name": "x"}})),
            );
            assert_eq!(r["response"]["allowed"], true, "{kind} {op}");
            assert!(r["response"].get("patch").is_none(), "{kind} {op}");
        }
    }

    #[test]
    fn dry_run_is_answered_like_a_real_request() {
        let object = json!({"metadata": {"name": "apps"}});
        let mut real: Value = serde_json::from_slice(&body("Namespace", "CREATE", object)).unwrap();
        let real_reply = reply(Endpoint::Mutate, real.to_string().as_bytes());
        real["request"]["dryRun"] = json!(true);
        assert_eq!(
            reply(Endpoint::Mutate, real.to_string().as_bytes()),
            real_reply
        );
    }

    #[test]
    fn an_object_that_does_not_fit_its_kind_is_a_bad_request_denial() {
        let r = reply(
            Endpoint::Mutate,
            &body("Pod", "CREATE", json!({"metadata": {"labels": "app=web"}})),
        );
        assert_eq!(r["response"]["allowed"], false);
        assert_eq!(r["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["response"]["status"]["code"], 400);
        assert_eq!(r["response"]["status"]["reason"], "BadRequest");
        let message = r["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("cannot decode Pod: metadata.labels: invalid type: string"),
            "{message}"
        );
    }

    #[test]
    fn containers_that_do_not_fit_are_a_bad_request_only_when_mounts_are_asked_for() {
        let spec = json!({"containers": [["app"]]});
        let plain = reply(
            Endpoint::Mutate,
            &body("Pod", "CREATE", json!({"metadata": {}, "spec": spec})),
        );
        assert_eq!(plain["response"]["allowed"], true, "{plain}");
        assert_eq!(plain["response"]["patchType"], "JSONPatch");

        let annotations = json!({"spiffe.io/workload-api-mount": "/run/spire/sockets"});
        let asked = reply(
            Endpoint::Mutate,
            &body(
                "Pod",
                "CREATE",
                json!({"metadata": {"annotations": annotations}, "spec": spec}),
            ),
        );
        assert_eq!(asked["response"]["allowed"], false, "{asked}");
        assert_eq!(asked["response"]["status"]["code"], 400);
        let message = asked["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("cannot decode Pod: spec.containers[0]: invalid type: sequence"),
            "{message}"
        );
    }

    #[test]
    fn unfamiliar_kinds_are_allowed_untouched() {
        let r = reply(
            Endpoint::Mutate,
            &body("ConfigMap", "CREATE", json!({"metadata": {"labels": 5}})),
        );
        assert_eq!(r["response"]["allowed"], true);
        assert!(r["response"].get("patch").is_none());
    }

    #[test]
    fn bodies_that_are_not_reviews_are_errors() {
        let cfg = Config::default();
        type Check = fn(&ReviewError) -> bool;
        let cases: [(&[u8], Check); 9] = [
            (b"not json", |e| matches!(e, ReviewError::NotJson(_))),
            (b"{\"kind\":", |e| matches!(e, ReviewError::NotJson(_))),
            (b"\xff\xfe", |e| matches!(e, ReviewError::NotJson(_))),
            (b"[1,2]", |e| matches!(e, ReviewError::NotAdmissionReview(_))),
            (b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}", |e| matches!(e, ReviewError::NotAdmissionReview(_))),
            (b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}", |e| matches!(e, ReviewError::NotAdmissionReview(_))),
            // Valid JSON with a non-string operation is not an AdmissionReview, never "not JSON".
            (
                b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\",\"kind\":{\"kind\":\"Pod\"},\"operation\":false}}",
                |e| matches!(e, ReviewError::NotAdmissionReview(_)),
            ),
            (
                b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\",\"kind\":{\"kind\":\"Pod\"},\"operation\":[]}}",
                |e| matches!(e, ReviewError::NotAdmissionReview(_)),
            ),
            (
                b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"\",\"kind\":{\"kind\":\"Pod\"},\"operation\":\"CREATE\"}}",
                |e| matches!(e, ReviewError::NotAdmissionReview(_)),
            ),
        ];
        for (input, check) in cases {
            let err = review(Endpoint::Mutate, input, &cfg).unwrap_err();
            assert!(
                check(&err),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn findings_become_one_denial_listing_every_error() {
        let finding = |severity, field: &str| match severity {
            Severity::Error => Finding::error(field, "bad"),
            Severity::Warning => Finding::warning(field, "bad"),
        };
        let decision = verdict(vec![
            finding(Severity::Error, "a"),
            finding(Severity::Warning, "w"),
            finding(Severity::Error, "b"),
        ]);
        let Decision::Denied {
            code,
            reason,
            message,
            warnings,
        } = decision
        else {
            panic!("not denied")
        };
        assert_eq!((code, reason), (422, "Invalid"));
        assert_eq!(message, "a: bad; b: bad");
        assert_eq!(warnings, vec!["w: bad".to_string()]);
        assert_eq!(
            verdict(vec![finding(Severity::Warning, "w")]),
            allowed(vec![], vec!["w: bad".into()])
        );
    }
}
