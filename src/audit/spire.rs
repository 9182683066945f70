//! SPIRE registration coverage (DESIGN.md section 13): every meshed workload must be selected by
//! exactly one ClusterSPIFFEID, and that one must give it an ID Istio accepts.
//!
//! A ClusterSPIFFEID selects a pod when its `podSelector` selects the pod's labels as admission
//! stores them and its `namespaceSelector` the namespace's (absent selectors select everything, as
//! spire-controller-manager reads them); with `mesh.spireClassName` set, only ClusterSPIFFEIDs of
//! that `className` count, as the controller manager of that class acts on no other. One without a
//! `spiffeIDTemplate` registers nothing (spire-controller-manager cannot parse it), so it counts
//! for nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::finding::{AuditFinding, Level, Subject};
use super::meshed::{Meshed, namespace_labels};
use crate::config::Config;
use crate::model::{ClusterSpiffeId, Key, Labels, Model};
use crate::policy::finding::Finding;
use crate::policy::spire::{ISTIO_SPIRE_LABEL, meant_for_mesh, mesh_id_problem, parse_mesh_id};

pub const MISSING: &str = "spire-registration-missing";
pub const AMBIGUOUS: &str = "spire-registration-ambiguous";
pub const ID_FORMAT: &str = "spire-id-format";

/// How many workloads a message names before it counts the rest.
const NAMED: usize = 3;

type Id<'m> = (&'m Key, &'m Arc<ClusterSpiffeId>);

/// The SPIRE findings for the meshed workloads of `model`.
pub fn findings(model: &Model, meshed: &[Meshed<'_>], cfg: &Config) -> Vec<AuditFinding> {
    let class = cfg.mesh.spire_class_name.as_deref();
    // Without a template spire-controller-manager cannot parse it and registers nothing.
    let (acting, other_class): (Vec<Id<'_>>, Vec<Id<'_>>) = model
        .cluster_spiffe_ids
        .iter()
        .filter(|(_, id)| {
            id.spec
                .spiffe_id_template
                .as_deref()
                .is_some_and(|t| !t.is_empty())
        })
        .partition(|(_, id)| class.is_none() || id.spec.class_name.as_deref() == class);
    let mut out = Vec::new();
    // The workloads each ClusterSPIFFEID registers, for the ID form.
    let mut registered: BTreeMap<&Key, Vec<&Meshed<'_>>> = BTreeMap::new();
    for workload in meshed {
        let namespace = workload.workload.namespace();
        let ns_labels = namespace_labels(model, namespace, cfg);
        let selecting: Vec<Id<'_>> = acting
            .iter()
            .copied()
            .filter(|(_, id)| selects(id, &workload.pod_labels, &ns_labels))
            .collect();
        let (fallback, regular): (Vec<Id<'_>>, Vec<Id<'_>>) = selecting
            .into_iter()
            .partition(|(_, id)| id.spec.fallback == Some(true));
        // A fallback applies only when no other ClusterSPIFFEID selects the pod.
        let effective = if regular.is_empty() {
            fallback
        } else {
            regular
        };
        let subject = Subject::of(
            &workload_key(workload),
            workload.workload.metadata.uid.as_deref(),
        );
        match effective.len() {
            0 => {
                let hint = missing_hint(workload, &ns_labels, &acting, &other_class, cfg);
                let message = format!(
                    "no ClusterSPIFFEID selects its pods: istio-proxy never gets a SPIRE identity and \
                     never becomes Ready{hint}"
                );
                out.push(AuditFinding::new(MISSING, Level::Error, subject, message));
            }
            1 => {}
            _ => {
                let names: Vec<String> = effective.iter().map(|(k, _)| id_name(k)).collect();
                let message = format!(
                    "{} ClusterSPIFFEIDs select its pods ({}): SPIRE registers them twice and which \
                     identity they get is undefined",
                    names.len(),
                    names.join(", ")
                );
                out.push(AuditFinding::new(
                    AMBIGUOUS,
                    Level::Warning,
                    subject,
                    message,
                ));
            }
        }
        for (key, _) in effective {
            registered.entry(key).or_default().push(workload);
        }
    }
    for (key, workloads) in registered {
        let Some(id) = model.cluster_spiffe_ids.get(key.kind, "", &key.name) else {
            continue;
        };
        out.extend(id_format(key, id, &workloads, cfg));
    }
    out
}

fn workload_key(meshed: &Meshed<'_>) -> Key {
    let workload = meshed.workload;
    Key {
        namespace: workload.namespace().to_owned(),
        name: workload.name().to_owned(),
        kind: workload.kind,
    }
}

fn id_name(key: &Key) -> String {
    Subject::of(key, None).to_string()
}

fn selects(id: &ClusterSpiffeId, pod_labels: &Labels, namespace_labels: &Labels) -> bool {
    let spec = &id.spec;
    spec.pod_selector
        .as_ref()
        .is_none_or(|s| s.matches(pod_labels))
        && spec
            .namespace_selector
            .as_ref()
            .is_none_or(|s| s.matches(namespace_labels))
}

/// What most likely went wrong, for the message: a ClusterSPIFFEID of another class that would
/// select the pods, or one that selects the other spelling of the SPIRE identity label.
fn missing_hint(
    workload: &Meshed<'_>,
    ns_labels: &Labels,
    acting: &[Id<'_>],
    other_class: &[Id<'_>],
    cfg: &Config,
) -> String {
    if let Some((key, id)) = other_class
        .iter()
        .find(|(_, id)| selects(id, &workload.pod_labels, ns_labels))
    {
        return format!(
            "; {} would, but its className {:?} is not mesh.spireClassName {:?}",
            id_name(key),
            id.spec.class_name.as_deref().unwrap_or(""),
            cfg.mesh.spire_class_name.as_deref().unwrap_or("")
        );
    }
    let ours = cfg.spire_identity_label.as_str();
    for (key, id) in acting {
        let wanted = id
            .spec
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref());
        for (label, value) in wanted.iter().flat_map(|m| m.iter()) {
            let other = match label {
                l if l == ISTIO_SPIRE_LABEL && ours != ISTIO_SPIRE_LABEL => ours,
                l if l == ours && ours != ISTIO_SPIRE_LABEL => ISTIO_SPIRE_LABEL,
                _ => continue,
            };
            let pods = &workload.pod_labels;
            if pods.get(label).is_none() && pods.get(other).is_some() {
                return format!(
                    "; {} selects {label}={value}, its pods carry {other}={} \
                     (spireIdentityLabel and the ClusterSPIFFEID must agree)",
                    id_name(key),
                    pods.get(other).unwrap_or_default()
                );
            }
        }
    }
    if acting.is_empty() && other_class.is_empty() {
        return " (the input has no usable ClusterSPIFFEID at all)".to_owned();
    }
    String::new()
}

/// `spire-id-format` for one ClusterSPIFFEID and the meshed workloads it registers: one finding per
/// distinct problem, naming the workloads concerned.
fn id_format(
    key: &Key,
    id: &ClusterSpiffeId,
    workloads: &[&Meshed<'_>],
    cfg: &Config,
) -> Vec<AuditFinding> {
    let template = id.spec.spiffe_id_template.as_deref();
    // Admission refuses its form already, and `stored` reports that with the webhook's message.
    if meant_for_mesh(&id.spec, cfg) && mesh_id_problem(template, &cfg.mesh.trust_domain).is_some()
    {
        return Vec::new();
    }
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for meshed in workloads {
        let workload = meshed.workload;
        let problem = mesh_id_problem(template, &cfg.mesh.trust_domain).or_else(|| {
            let parsed = parse_mesh_id(template?).ok()?;
            let namespace = workload.namespace();
            let account = workload.template.service_account();
            if !parsed.namespace.gives(namespace) {
                Some(format!(
                    "gives another namespace than {namespace:?}, where its pods run"
                ))
            } else if !parsed.service_account.gives(account) {
                Some(format!(
                    "gives another service account than {account:?}, which its pods run as"
                ))
            } else {
                None
            }
        });
        if let Some(problem) = problem {
            problems
                .entry(problem)
                .or_default()
                .push(id_name(&workload_key(meshed)));
        }
    }
    let subject = Subject::of(key, id.metadata.identity.uid.as_deref());
    problems
        .into_iter()
        .map(|(problem, names)| {
            let shown = names
                .iter()
                .take(NAMED)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let more = match names.len().saturating_sub(NAMED) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            let finding = Finding::error(
                "spec.spiffeIDTemplate",
                format!("{problem}, for the meshed workloads it selects ({shown}{more})"),
            );
            let finding = match template {
                Some(t) => finding.with_value(t),
                None => finding,
            };
            AuditFinding::new(
                ID_FORMAT,
                Level::Error,
                subject.clone(),
                finding.to_string(),
            )
        })
        .collect()
}
