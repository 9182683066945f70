//! AdmissionReview bytes in, AdmissionReview bytes out: decode the envelope, hand the object to the
//! policy core, and build the reply the apiserver expects. Pure: no I/O, so the server, `review` and
//! the benchmarks all run exactly this code.

use std::borrow::Cow;

use base64::Engine;
use kube::core::Status;
use serde::Serialize;
use serde_json::value::RawValue;

mod envelope;

use envelope::ReviewIn;

use crate::config::Config;
use crate::policy::decide::{self, Request};
use crate::policy::kinds;
pub use crate::policy::{Decision, Endpoint};

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
            Decision::BadRequest { .. } => ResultClass::Error,
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
                (true, None, encoded, warnings.as_slice())
            }
            Decision::Denied { message, warnings } => (
                false,
                Some(Status::failure(message, "Invalid").with_code(422)),
                None,
                warnings.as_slice(),
            ),
            Decision::BadRequest { message } => (
                false,
                Some(Status::failure(message, "BadRequest").with_code(400)),
                None,
                &[][..],
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
                warnings: (!warnings.is_empty()).then_some(warnings),
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
    let facts = Request {
        group: &request.kind.group,
        kind: &request.kind.kind,
        operation: &request.operation,
        sub_resource: request.sub_resource.as_deref(),
        namespace,
        name: request.name.as_deref(),
    };
    let decision = decide::decide(endpoint, &facts, request.object, cfg);
    Ok(Outcome {
        api_version: api_version.into_owned(),
        uid: request.uid.into_owned(),
        kind: request.kind.kind.into_owned(),
        operation: kinds::operation_name(&request.operation),
        namespace: namespace.to_owned(),
        name: request.name.map(Cow::into_owned).unwrap_or_default(),
        dry_run: request.dry_run.unwrap_or(false),
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
