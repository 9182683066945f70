//! VirtualService (`networking.istio.io`, DESIGN.md section 10).
//!
//! | field | rule | level |
//! | --- | --- | --- |
//! | `gateways`, `{http,tls,tcp}[].match[].gateways` | `mesh`, `<name>` or `<namespace>/<name>` with RFC 1123 parts | error |
//! | `http[].retries.perTryTimeout` | not longer than the route's `timeout`: the route times out first, so a slow try is never retried | error |
//! | `http[].retries` | `attempts` × `perTryTimeout` not longer than `timeout`: the last attempts could never run | warning |
//!
//! A route without `timeout` (or `0s`) has none, so nothing bounds its retries. Durations are Go's
//! ([`GoDuration`]); one that does not parse is named, as the CRD's CEL rule refuses it too.

use std::borrow::Cow;

use serde::Deserialize;

use super::duration::{EXPECTED, GoDuration};
use super::{check_dns_label, check_subdomain};
use crate::policy::finding::Finding;
use crate::policy::object::{Text, object, objects};

/// The reserved gateway name for the mesh's sidecars.
pub const MESH: &str = "mesh";

/// The fields the rules read.
#[derive(Debug, Default, Deserialize)]
pub struct VirtualService<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Spec<'a> {
    #[serde(borrow, default)]
    pub gateways: Option<Vec<Text<'a>>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub http: Option<Vec<HttpRoute<'a>>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub tls: Option<Vec<Route<'a>>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub tcp: Option<Vec<Route<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HttpRoute<'a> {
    #[serde(borrow, default, rename = "match", deserialize_with = "objects")]
    pub matches: Option<Vec<Match<'a>>>,
    #[serde(borrow, default)]
    pub timeout: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "object")]
    pub retries: Option<Retries<'a>>,
}

/// A TLS or TCP route: only its matches' gateways are read.
#[derive(Debug, Default, Deserialize)]
pub struct Route<'a> {
    #[serde(borrow, default, rename = "match", deserialize_with = "objects")]
    pub matches: Option<Vec<Match<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Match<'a> {
    #[serde(borrow, default)]
    pub gateways: Option<Vec<Text<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries<'a> {
    #[serde(default)]
    pub attempts: Option<i64>,
    #[serde(borrow, default)]
    pub per_try_timeout: Option<Cow<'a, str>>,
}

/// Applies the VirtualService rows.
pub fn validate(service: &VirtualService<'_>) -> Vec<Finding> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    gateways("spec.gateways", &spec.gateways, &mut findings);
    for (kind, routes) in [("tls", &spec.tls), ("tcp", &spec.tcp)] {
        for (r, route) in routes.iter().flatten().enumerate() {
            for (m, matched) in route.matches.iter().flatten().enumerate() {
                let at = format!("spec.{kind}[{r}].match[{m}].gateways");
                gateways(&at, &matched.gateways, &mut findings);
            }
        }
    }
    for (r, route) in spec.http.iter().flatten().enumerate() {
        for (m, matched) in route.matches.iter().flatten().enumerate() {
            let at = format!("spec.http[{r}].match[{m}].gateways");
            gateways(&at, &matched.gateways, &mut findings);
        }
        retries(&format!("spec.http[{r}]"), route, &mut findings);
    }
    findings
}

fn gateways(at: &str, list: &Option<Vec<Text<'_>>>, out: &mut Vec<Finding>) {
    for (i, name) in list.iter().flatten().enumerate() {
        if let Some(problem) = gateway_problem(&name.0) {
            out.push(Finding::error(format!("{at}[{i}]"), problem).with_value(name.0.as_ref()));
        }
    }
}

/// What is wrong with a gateway reference, if anything. A name without a namespace may be dotted:
/// Istio still reads the legacy `<name>.<namespace>` form (with a warning of its own).
pub fn gateway_problem(value: &str) -> Option<String> {
    let expected =
        "must be \"mesh\", \"<gateway name>\" or \"<namespace>/<gateway name>\" (RFC 1123)";
    if value == MESH {
        return None;
    }
    if value.eq_ignore_ascii_case(MESH) {
        return Some(format!("{expected}; did you mean \"{MESH}\"?"));
    }
    match value.split_once('/') {
        None => check_subdomain(value)
            .err()
            .map(|e| format!("{expected}: {e}")),
        Some((namespace, name)) => {
            if let Err(e) = check_dns_label(namespace) {
                Some(format!("{expected}: the namespace {namespace:?} {e}"))
            } else if let Err(e) = check_dns_label(name) {
                Some(format!("{expected}: the gateway name {name:?} {e}"))
            } else {
                None
            }
        }
    }
}

/// A duration field: its value, or the finding that it is none. `None` when absent.
fn duration(field: String, text: Option<&str>, out: &mut Vec<Finding>) -> Option<GoDuration> {
    let text = text?;
    match GoDuration::parse(text) {
        Ok(d) => Some(d),
        Err(e) => {
            out.push(Finding::error(field, format!("must be {EXPECTED}: {e}")).with_value(text));
            None
        }
    }
}

fn retries(at: &str, route: &HttpRoute<'_>, out: &mut Vec<Finding>) {
    let timeout = duration(format!("{at}.timeout"), route.timeout.as_deref(), out);
    let Some(retries) = &route.retries else {
        return;
    };
    let per_try = duration(
        format!("{at}.retries.perTryTimeout"),
        retries.per_try_timeout.as_deref(),
        out,
    );
    // No timeout, or `0s` (disabled): nothing bounds the retries. A negative one the CRD refuses.
    let (Some(timeout), Some(per_try)) = (timeout, per_try) else {
        return;
    };
    if !timeout.is_positive() || !per_try.is_positive() {
        return;
    }
    let timeout_text = route.timeout.as_deref().unwrap_or_default();
    let per_try_text = retries.per_try_timeout.as_deref().unwrap_or_default();
    if per_try > timeout {
        out.push(
            Finding::error(
                format!("{at}.retries.perTryTimeout"),
                format!(
                    "is longer than the route's timeout ({at}.timeout {timeout_text:?}): the route \
                     times out first, so a try that times out is never retried"
                ),
            )
            .with_value(per_try_text),
        );
        return;
    }
    let attempts = retries.attempts.unwrap_or(0);
    if attempts > 1 && per_try.times(attempts) > i128::from(timeout.0) {
        out.push(Finding::warning(
            format!("{at}.retries"),
            format!(
                "{attempts} attempts × perTryTimeout {per_try_text} exceed timeout {timeout_text}: \
                 the last attempts never run"
            ),
        ));
    }
}

#[cfg(test)]
#[path = "virtual_service_tests.rs"]
mod tests;
