//! Pods and workload pod templates (DESIGN.md section 5, "Pods, and pod templates of …").
//!
//! The same rules run on a Pod and on the template inside a Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, Job or CronJob; `at` says where the template sits so that every field path is the full one
//! the user sees in their manifest (`spec.template.metadata.annotations[…]`).
//!
//! - `servicemesh.bigbang.dev/permissivePorts`: comma-separated ports, spaces around an entry trimmed, no
//!   empty entries, no duplicates; a port no container declares only warns (declaring `containerPort` is
//!   optional in Kubernetes, so it may well be served).
//! - `servicemesh.bigbang.dev/mtlsMode|expose|host|port|gateways`: warned about, they act only on the HelmRelease.
//! - any other `servicemesh.bigbang.dev/` key: denied as unknown with the nearest known key, exactly as on a
//!   HelmRelease. A typo here (`permissiveports`) silently leaves the ports STRICT, which is the very kind
//!   of mistake found days later that this webhook exists to stop; a warning scrolls past in CI logs.
//! - Contrast's proxy settings, as env vars of any container or init container (literal `value` only: a
//!   `valueFrom` is resolved by the kubelet, later) and as pod annotations.

use std::collections::{BTreeMap, BTreeSet};

use super::contrast::Direction;
use super::finding::{Finding, annotation_path, field_path};
use super::helmrelease::{self, PREFIX};
use super::object::{Container, DecodeError, Pod, StringMap};
use super::syntax::parse_port;

/// Big Bang keys that only act on the HelmRelease.
const HELM_RELEASE_ONLY: [&str; 5] = ["mtlsMode", "expose", "host", "port", "gateways"];

/// Applies the pod rules to the template at `at` (`""` for a Pod, `spec.template` for a Deployment …).
/// Containers that cannot be read are a `DecodeError` naming their full path.
pub fn validate(template: &Pod<'_>, at: &str) -> Result<Vec<Finding>, DecodeError> {
    let mut findings = Vec::new();
    let containers = Containers::of(template).map_err(|e| e.under(at))?;
    if let Some(annotations) = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
    {
        annotation_rules(annotations, &containers, at, &mut findings);
    }
    env_rules(&containers, at, &mut findings);
    Ok(findings)
}

/// A pod's containers and init containers, read once for all the rules.
#[derive(Default)]
struct Containers<'a> {
    init: Vec<Container<'a>>,
    main: Vec<Container<'a>>,
}

impl<'a> Containers<'a> {
    fn of(pod: &Pod<'a>) -> Result<Self, DecodeError> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(Self::default());
        };
        Ok(Containers {
            init: spec.init_containers()?.unwrap_or_default(),
            main: spec.containers()?.unwrap_or_default(),
        })
    }
}

fn annotation_rules(
    annotations: &StringMap,
    containers: &Containers<'_>,
    at: &str,
    out: &mut Vec<Finding>,
) {
    let declared = declared_ports(containers);
    for (key, value) in annotations {
        let field = annotation_path(at, key);
        if let Some(direction) = Direction::of_annotation(key) {
            contrast_setting(&field, direction, value, out);
            continue;
        }
        if let Some(name) = key.strip_prefix(PREFIX) {
            mesh_annotation(field, name, value, &declared, out);
        }
    }
}

fn mesh_annotation(
    field: String,
    name: &str,
    value: &str,
    declared: &BTreeSet<u16>,
    out: &mut Vec<Finding>,
) {
    if name == "permissivePorts" {
        permissive_ports(&field, value, declared, out);
    } else if HELM_RELEASE_ONLY.contains(&name) {
        out.push(Finding::warning(
            field,
            "belongs on the HelmRelease; ignored on pods",
        ));
    } else {
        out.push(Finding::error(field, helmrelease::unknown_key(name)));
    }
}

/// Only the `servicemesh.bigbang.dev/` rules, for a template at `at` whose pods serve `declared`
/// ports: the mesh annotations whose refusal stops `render` from generating a workload's
/// PeerAuthentication (DESIGN.md section 9). Contrast's settings are another matter and stay with
/// `/validate`.
pub fn mesh_annotation_findings<'a>(
    annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
    declared: &BTreeSet<u16>,
    at: &str,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (key, value) in annotations {
        if let Some(name) = key.strip_prefix(PREFIX) {
            mesh_annotation(
                annotation_path(at, key),
                name,
                value,
                declared,
                &mut findings,
            );
        }
    }
    findings
}

/// The ports of a `permissivePorts` value that passed the rules, in the order written.
pub fn permissive_port_list(value: &str) -> Vec<u16> {
    value
        .split(',')
        .filter_map(|entry| parse_port(entry.trim()).ok())
        .collect()
}

fn env_rules(containers: &Containers<'_>, at: &str, out: &mut Vec<Finding>) {
    // The Contrast sidecar is usually a native-sidecar init container, so those come first.
    let lists = [
        ("initContainers", &containers.init),
        ("containers", &containers.main),
    ];
    for (list, containers) in lists {
        for (index, container) in containers.iter().enumerate() {
            for var in container.env.iter().flatten() {
                let (Some(name), Some(value)) = (var.name.as_deref(), var.value.as_deref()) else {
                    continue;
                };
                if let Some(direction) = Direction::of_env_var(name) {
                    let field = field_path(at, &format!("spec.{list}[{index}].env[{name}]"));
                    contrast_setting(&field, direction, value, out);
                }
            }
        }
    }
}

/// The ports the pod serves: every `containerPort` of its containers and of its native sidecars (init
/// containers with `restartPolicy: Always` run for the pod's lifetime and take traffic like any
/// container). Ordinary init containers have exited before traffic arrives, so theirs do not count.
fn declared_ports(containers: &Containers<'_>) -> BTreeSet<u16> {
    let sidecars = containers
        .init
        .iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    containers
        .main
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.container_port.and_then(|n| u16::try_from(n).ok()))
        .collect()
}

fn permissive_ports(field: &str, value: &str, declared: &BTreeSet<u16>, out: &mut Vec<Finding>) {
    if value.trim().is_empty() {
        out.push(Finding::error(field, "must not be empty").with_value(value));
        return;
    }
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    for (i, raw) in value.split(',').enumerate() {
        let number = i + 1;
        let entry = raw.trim();
        if entry.is_empty() {
            out.push(
                Finding::error(
                    field,
                    format!("entry {number} is empty (a stray or doubled comma)"),
                )
                .with_value(value),
            );
            continue;
        }
        match parse_port(entry) {
            Err(e) => {
                out.push(Finding::error(field, format!("entry {number} {e}")).with_value(entry))
            }
            Ok(port) => {
                if let Some(first) = seen.get(&port) {
                    out.push(
                        Finding::error(field, format!("entry {number} repeats entry {first}"))
                            .with_value(entry),
                    );
                } else {
                    seen.insert(port, number);
                    if !declared.contains(&port) {
                        // Kept short: warnings are cut at 120 characters, path included.
                        out.push(Finding::warning(
                            field,
                            format!("port {port}: no container declares it"),
                        ));
                    }
                }
            }
        }
    }
}

fn contrast_setting(field: &str, direction: Direction, value: &str, out: &mut Vec<Finding>) {
    out.extend(direction.check(value).into_iter().map(|e| {
        let finding = Finding::error(field, e.to_string());
        match e.problem.value() {
            Some(v) => finding.with_value(v),
            None => finding,
        }
    }));
}

#[cfg(test)]
#[path = "podtemplate_tests.rs"]
mod tests;
