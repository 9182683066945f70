//! HelmRelease validation (DESIGN.md section 5, "HelmReleases"): the Big Bang `servicemesh.bigbang.dev/*`
//! annotations from which a VirtualService and a PeerAuthentication are generated.
//!
//! Values are checked exactly as written (no trimming), every problem is reported, and annotations outside
//! `servicemesh.bigbang.dev/` are none of our business. `gateways` is checked against the configured
//! `mesh.gateways`, so the rules take the mesh configuration.

use super::finding::{Finding, annotation_path};
use super::object::HelmRelease;
use super::syntax::{LabelError, LabelKind, MAX_NAME_CHARS, check_label, closest, parse_port};
use crate::config::MeshConfig;

/// Prefix of every Big Bang service-mesh annotation.
pub const PREFIX: &str = "servicemesh.bigbang.dev/";
/// The Service the VirtualService routes to.
pub const EXPOSE: &str = "servicemesh.bigbang.dev/expose";
/// The subdomain prefixed to the Big Bang domain.
pub const HOST: &str = "servicemesh.bigbang.dev/host";
/// The Service port the VirtualService routes to.
pub const PORT: &str = "servicemesh.bigbang.dev/port";
/// The namespace's PeerAuthentication mode.
pub const MTLS_MODE: &str = "servicemesh.bigbang.dev/mtlsMode";
/// Per-pod PERMISSIVE ports: a Pod annotation.
pub const PERMISSIVE_PORTS: &str = "servicemesh.bigbang.dev/permissivePorts";
/// The gateways (names from `mesh.gateways`) the VirtualService is bound to; without it, the
/// default ones (DESIGN.md section 9).
pub const GATEWAYS: &str = "servicemesh.bigbang.dev/gateways";

/// Every key we know, for "did you mean" (after the prefix).
pub const KNOWN_NAMES: [&str; 6] = [
    "expose",
    "host",
    "port",
    "mtlsMode",
    "permissivePorts",
    "gateways",
];
/// PeerAuthentication modes, as Istio spells them.
pub const MTLS_MODES: [&str; 3] = ["STRICT", "PERMISSIVE", "DISABLE"];

/// Applies the HelmRelease table; `mesh` names the gateways `servicemesh.bigbang.dev/gateways` may list.
pub fn validate(hr: &HelmRelease<'_>, mesh: &MeshConfig) -> Vec<Finding> {
    match hr.metadata.as_ref().and_then(|m| m.annotations.as_ref()) {
        Some(annotations) => {
            let pairs = annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            validate_annotations(&pairs.collect::<Vec<_>>(), mesh)
        }
        None => Vec::new(),
    }
}

/// The HelmRelease table applied to a HelmRelease's annotations (key and value, in key order).
pub fn validate_annotations(annotations: &[(&str, &str)], mesh: &MeshConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    for &(key, value) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let field = annotation_path("", key);
        let problems: Vec<String> = match name {
            "expose" => expose_problem(value).into_iter().collect(),
            "host" => host_problems(value),
            "port" => parse_port(value)
                .err()
                .map(|e| e.to_string())
                .into_iter()
                .collect(),
            "mtlsMode" => mtls_mode_problem(value).into_iter().collect(),
            "gateways" => gateways_problems(value, &mesh.gateway_names()),
            "permissivePorts" => {
                findings.push(Finding::error(
                    field,
                    "belongs on Pods (the workload's pod template), not on the HelmRelease: \
                     it sets PERMISSIVE mTLS on ports of the pods it annotates",
                ));
                continue;
            }
            _ => {
                findings.push(Finding::error(field, unknown_key(name)));
                continue;
            }
        };
        findings.extend(
            problems
                .into_iter()
                .map(|message| Finding::error(field.clone(), message).with_value(value)),
        );
    }
    findings.extend(route_completeness(
        [EXPOSE, HOST, PORT].map(|k| (k, annotations.iter().any(|(key, _)| *key == k))),
    ));
    findings
}

/// The message for a `servicemesh.bigbang.dev/` key Big Bang does not know.
pub fn unknown_key(name: &str) -> String {
    match closest(name, &KNOWN_NAMES) {
        Some(known) => format!("unknown annotation; did you mean \"{PREFIX}{known}\"?"),
        None => format!(
            "unknown annotation (known: {})",
            KNOWN_NAMES.map(|n| format!("{PREFIX}{n}")).join(", ")
        ),
    }
}

/// A Service name: an RFC 1035 label.
fn expose_problem(value: &str) -> Option<String> {
    match check_label(value, LabelKind::Rfc1035) {
        Ok(()) => None,
        Err(LabelError::Empty) => Some("must not be empty".into()),
        Err(e) => Some(format!("must be a Service name (RFC 1035 label): {e}")),
    }
}

/// A subdomain prefix such as `grafana` or `logs.admin`. The mistakes people actually make (pasting a
/// URL, a `host:port`, a wildcard from a Gateway) are each named, then whatever remains is checked as
/// RFC 1123 labels.
fn host_problems(value: &str) -> Vec<String> {
    if value.is_empty() {
        return vec!["must not be empty".into()];
    }
    let mut problems: Vec<String> = Vec::new();
    let mut rest = value;
    if let Some((_, after)) = rest.split_once("://") {
        problems.push("must not contain a scheme: only the subdomain, e.g. \"grafana\"".into());
        rest = after;
    }
    if let Some((before, _)) = rest.split_once('/') {
        problems.push("must not contain a path".into());
        rest = before;
    }
    if let Some((before, _)) = rest.split_once(':') {
        problems.push("must not contain a port (that is servicemesh.bigbang.dev/port)".into());
        rest = before;
    }
    if rest.contains('*') {
        problems.push("wildcards are not allowed".into());
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        problems.push(format!(
            "is {chars} characters long, at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    if rest.is_empty() {
        return problems;
    }
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        problems.push("must not start or end with '.' or contain \"..\"".into());
    }
    let numbered = labels.iter().enumerate().map(|(i, l)| (i + 1, *l));
    for (number, label) in numbered.filter(|(_, l)| !l.is_empty() && !l.contains('*')) {
        if let Err(e) = check_label(label, LabelKind::Rfc1123) {
            problems.push(if labels.len() == 1 {
                format!("must be a DNS label (RFC 1123): {e}")
            } else {
                format!("label {number} ({label:?}) {e}")
            });
        }
    }
    problems
}

fn mtls_mode_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("must not be empty; leave it out for the default, STRICT".into());
    }
    if MTLS_MODES.contains(&value) {
        return None;
    }
    let expected = "must be STRICT, PERMISSIVE or DISABLE";
    // Istio matches modes exactly, so `permissive` is not PERMISSIVE: name the intended one.
    Some(
        match MTLS_MODES
            .iter()
            .find(|m| m.eq_ignore_ascii_case(value.trim()))
        {
            Some(mode) => format!("{expected}; did you mean \"{mode}\"?"),
            None => expected.to_owned(),
        },
    )
}

/// A comma-separated list of configured gateway names, as written: no empty entries, no spaces, no
/// repeats, and each name one of `mesh.gateways` (else the nearest is suggested).
fn gateways_problems(value: &str, known: &[&str]) -> Vec<String> {
    if value.is_empty() {
        return vec!["must not be empty; leave it out for the default gateways".into()];
    }
    let mut problems = Vec::new();
    let entries: Vec<&str> = value.split(',').collect();
    for (i, entry) in entries.iter().enumerate() {
        let number = i + 1;
        if entry.is_empty() {
            problems.push(format!(
                "entry {number} is empty (a stray or doubled comma)"
            ));
        } else if entry.trim() != *entry {
            problems.push(format!(
                "entry {number} ({entry:?}) must not have spaces around it"
            ));
        } else if let Some(first) = entries[..i].iter().position(|e| e == entry) {
            problems.push(format!("entry {number} repeats entry {}", first + 1));
        } else if !known.contains(entry) {
            let hint = match closest(entry, known) {
                Some(name) => format!("did you mean \"{name}\"?"),
                None if known.is_empty() => "no gateways are configured".to_owned(),
                None => format!("configured: {}", known.join(", ")),
            };
            problems.push(format!(
                "entry {number} ({entry:?}) is not a gateway of mesh.gateways; {hint}"
            ));
        }
    }
    problems
}

/// The gateway names a valid `servicemesh.bigbang.dev/gateways` value lists, in order.
pub fn gateway_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

/// expose, host and port make one VirtualService: all three or none. Each missing one is its own finding,
/// so the message names it.
fn route_completeness(present: [(&str, bool); 3]) -> Vec<Finding> {
    let set: Vec<&str> = present
        .iter()
        .filter(|(_, p)| *p)
        .filter_map(|(k, _)| k.strip_prefix(PREFIX))
        .collect();
    if set.is_empty() || set.len() == present.len() {
        return Vec::new();
    }
    let verb = if set.len() == 1 { "is" } else { "are" };
    present
        .iter()
        .filter(|(_, p)| !*p)
        .map(|(key, _)| {
            Finding::error(
                annotation_path("", key),
                format!(
                    "missing: {} {verb} set, and a VirtualService needs expose, host and port together",
                    set.join(" and ")
                ),
            )
        })
        .collect()
}

#[cfg(test)]
#[path = "helmrelease_tests.rs"]
mod tests;
