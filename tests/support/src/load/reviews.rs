//! AdmissionReviews for a webhook, each with a fresh uid, every reply checked the way the apiserver
//! checks it: status 200, JSON `AdmissionReview` of the request's apiVersion, `response.uid`
//! echoed, `allowed` a boolean, `patchType` and `patch` consistent, the patch a base64 JSON array.

use std::path::Path;

use base64::Engine as _;
use hyper::body::Bytes;
use serde_json::Value;

use super::{Reply, Workload, status_reason};

/// The body split around its uid, so each request is `prefix + uid + suffix`.
#[derive(Clone)]
pub struct BodyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    api_version: String,
}

impl BodyTemplate {
    /// Splits the file's text itself around `request.uid`, so every other byte (in particular the
    /// apiserver's key order, which the server's one-pass decoding relies on) is sent as written.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let review: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let uid = review["request"]["uid"]
            .as_str()
            .filter(|uid| !uid.is_empty())
            .ok_or_else(|| format!("{}: no `request.uid` string", path.display()))?;
        let api_version = review["apiVersion"]
            .as_str()
            .unwrap_or("admission.k8s.io/v1")
            .to_string();
        // The request's own uid: the first `"uid":"<uid>"` after `"request":`.
        let request_at = text
            .find("\"request\"")
            .ok_or_else(|| format!("{}: no `request` key", path.display()))?;
        let needle = format!("\"{uid}\"");
        let at = text[request_at..]
            .find(&needle)
            .map(|i| request_at + i + 1)
            .ok_or_else(|| format!("{}: request.uid not found in the text", path.display()))?;
        Ok(Self {
            prefix: text.as_bytes()[..at].to_vec(),
            suffix: text.as_bytes()[at + uid.len()..].to_vec(),
            api_version,
        })
    }

    fn render(&self, uid: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.prefix.len() + uid.len() + self.suffix.len());
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(uid.as_bytes());
        body.extend_from_slice(&self.suffix);
        Bytes::from(body)
    }
}

/// The review of a [`BodyTemplate`], sent with a new uid each time.
pub struct Reviews {
    body: BodyTemplate,
    uid_prefix: String,
}

impl Reviews {
    /// `run_id` is part of every uid, so that concurrent runs never send the same one.
    pub fn new(body: BodyTemplate, run_id: u16) -> Reviews {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let uid_prefix = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}",
            std::process::id(),
            (nanos >> 20) as u16,
            (nanos as u16) & 0xfff,
            run_id & 0xfff
        );
        Reviews { body, uid_prefix }
    }
}

impl Workload for Reviews {
    fn body(&self, n: u64) -> (String, Bytes) {
        let uid = format!("{}-{n:012x}", self.uid_prefix);
        let body = self.body.render(&uid);
        (uid, body)
    }

    /// The apiserver's checks; what the valid reply said: `allowed` or `denied`, and `patched`.
    fn check(
        &self,
        uid: &str,
        reply: &Reply,
    ) -> Result<&'static [&'static str], (&'static str, String)> {
        let body = reply.body;
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if reply.status != 200 {
            let status = reply.status;
            return Err((
                status_reason(status),
                format!("status {status}: {}", snippet()),
            ));
        }
        let content_type = reply.content_type;
        if !content_type.is_some_and(|t| t.contains("json")) {
            return Err(("content_type", format!("content-type {content_type:?}")));
        }
        let review: Value =
            serde_json::from_slice(body).map_err(|e| ("invalid_json", format!("{e}")))?;
        if review["apiVersion"] != self.body.api_version.as_str() {
            return Err(("bad_api_version", snippet()));
        }
        if review["kind"] != "AdmissionReview" {
            return Err(("bad_kind", snippet()));
        }
        let response = &review["response"];
        if response["uid"] != uid {
            return Err((
                "uid_mismatch",
                format!("sent {uid}, got {}", response["uid"]),
            ));
        }
        let allowed = response["allowed"]
            .as_bool()
            .ok_or(("allowed_not_bool", snippet()))?;
        let patched = match (response.get("patch"), response.get("patchType")) {
            (None, None) => false,
            (Some(patch), Some(kind)) if kind == "JSONPatch" => {
                let encoded = patch.as_str().ok_or(("patch_not_string", snippet()))?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| ("patch_not_base64", e.to_string()))?;
                let ops: Value = serde_json::from_slice(&decoded)
                    .map_err(|e| ("patch_not_json", e.to_string()))?;
                if !ops.is_array() {
                    return Err(("patch_not_array", ops.to_string()));
                }
                true
            }
            _ => return Err(("patch_inconsistent", snippet())),
        };
        Ok(match (allowed, patched) {
            (true, true) => &["allowed", "patched"],
            (true, false) => &["allowed"],
            (false, true) => &["denied", "patched"],
            (false, false) => &["denied"],
        })
    }
}
