//! Pod creations for kube-apiserver: the same Pod POSTed again and again (it names itself with
//! `metadata.generateName`); a reply is valid when the pod was created (201).

use hyper::body::Bytes;
use serde_json::Value;

use super::{Reply, Workload, status_reason};

pub struct PodCreations {
    pod: Bytes,
}

impl PodCreations {
    /// `pod` is a Pod as JSON.
    pub fn new(pod: Vec<u8>) -> Result<PodCreations, String> {
        let object: Value = serde_json::from_slice(&pod).map_err(|e| format!("not JSON: {e}"))?;
        if object["kind"] != "Pod" {
            return Err("not a Pod".to_owned());
        }
        Ok(PodCreations {
            pod: Bytes::from(pod),
        })
    }
}

impl Workload for PodCreations {
    fn body(&self, n: u64) -> (String, Bytes) {
        (format!("pod {n}"), self.pod.clone())
    }

    fn check(
        &self,
        _id: &str,
        reply: &Reply,
    ) -> Result<&'static [&'static str], (&'static str, String)> {
        if reply.status == 201 {
            return Ok(&["created"]);
        }
        let text: String = String::from_utf8_lossy(reply.body)
            .chars()
            .take(400)
            .collect();
        Err((
            status_reason(reply.status),
            format!("status {}: {text}", reply.status),
        ))
    }
}
