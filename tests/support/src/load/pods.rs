//! Pod creations for kube-apiserver, as client-go sends them: the same Pod POSTed again and again
//! (it names itself with `metadata.generateName`) over HTTP/2 with a bearer token; a reply is valid
//! when the pod was created (201) and, if asked, the stored pod passes a check.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use serde_json::Value;

use super::{Reply, Target, Workload, status_reason, tls_connector};
use crate::client::Protocol;

pub struct PodCreations {
    pod: Bytes,
    check: Option<StoredCheck>,
}

/// What every stored pod must satisfy, and the failure reason of one that does not.
struct StoredCheck {
    reason: &'static str,
    holds: fn(&Value) -> bool,
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
            check: None,
        })
    }

    /// A created pod that the apiserver stored without satisfying `check` fails as `reason`.
    pub fn checked(mut self, reason: &'static str, check: fn(&Value) -> bool) -> PodCreations {
        self.check = Some(StoredCheck {
            reason,
            holds: check,
        });
        self
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
        let text = || -> String {
            String::from_utf8_lossy(reply.body)
                .chars()
                .take(400)
                .collect()
        };
        if reply.status != 201 {
            let status = reply.status;
            return Err((
                status_reason(status),
                format!("status {status}: {}", text()),
            ));
        }
        if let Some(check) = &self.check {
            let stored: Value = serde_json::from_slice(reply.body)
                .map_err(|e| ("invalid_json", format!("{e}: {}", text())))?;
            if !(check.holds)(&stored) {
                let name = stored["metadata"]["name"].as_str().unwrap_or("?");
                return Err((check.reason, format!("pod {name}: {}", text())));
            }
        }
        Ok(&["created"])
    }
}

/// Where pods of `namespace` are created: the apiserver at `url` (`https://HOST:PORT`), verified
/// against the CA in `ca`, with the bearer `token`; `timeout` bounds each handshake and request.
pub fn pods_target(
    url: &str,
    ca: &Path,
    token: &str,
    namespace: &str,
    timeout: Duration,
) -> Result<Target, String> {
    let base: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    if base.scheme_str() != Some("https") {
        return Err(format!("{url:?}: only https is supported"));
    }
    let host = base
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = base.port_u16().unwrap_or(443);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url:?}: no address"))?;
    let authorization = HeaderValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| "not a valid token".to_owned())?;
    Ok(Target {
        addr,
        server_name: host,
        authority,
        protocol: Protocol::Http2,
        connector: tls_connector(ca, Protocol::Http2)?,
        path: format!("/api/v1/namespaces/{namespace}/pods"),
        headers: vec![
            (header::AUTHORIZATION, authorization),
            (
                header::USER_AGENT,
                HeaderValue::from_static("mesh-admission load (pods)"),
            ),
        ],
        connect_timeout: timeout,
        request_timeout: timeout,
    })
}
