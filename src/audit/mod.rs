//! `mesh-admission audit` (DESIGN.md section 13): what is wrong with what is already there. A pure
//! core: objects in, findings out, no I/O.
//!
//! Two kinds of findings, under stable rule ids ([`finding::AuditFinding`]):
//! - [`stored`]: what sections 4, 5 and 10 say about each stored object, exactly as the webhook
//!   would (it reads the object as written, since those rules read fields the model leaves out);
//! - [`spire`] and [`istio`]: what only the whole set shows, read from the one model
//!   ([`crate::model::Model`]), whatever it was built from.
//!
//! [`report`] turns findings into the OpenReports objects the controller writes.

pub mod finding;
pub mod istio;
pub mod meshed;
pub mod report;
pub mod spire;
pub mod stored;

use std::collections::BTreeSet;

use serde_json::Value;

pub use finding::{AuditFinding, Level, Subject};

use crate::config::Config;
use crate::model::{Model, ReadIssue};
use crate::policy::kinds;

/// The rule of an object given twice with different content.
pub const DUPLICATE: &str = "duplicate";

/// The findings only the whole set shows (section 13's table), and the objects the model could not
/// take in.
pub fn set_findings(model: &Model, cfg: &Config) -> Vec<AuditFinding> {
    let meshed = meshed::meshed(model, cfg);
    let mut out = spire::findings(model, &meshed, cfg);
    out.extend(istio::findings(model, cfg));
    for problem in &model.problems {
        let subject = Subject::new(
            problem.kind,
            &problem.subject.namespace,
            &problem.subject.name,
        );
        let (rule, message) = match &problem.issue {
            ReadIssue::Unreadable(message) => (
                stored::UNREADABLE,
                format!("cannot decode {}: {message}", problem.kind.kind),
            ),
            ReadIssue::Duplicate => (
                DUPLICATE,
                "given twice with different content: which one is meant cannot be told".to_owned(),
            ),
        };
        out.push(AuditFinding::new(rule, Level::Error, subject, message));
    }
    out
}

/// Every finding for a set of manifests (or stored objects as the API returns them), sorted by
/// namespace and object, each once. An object the webhook cannot decode is reported once, as the
/// webhook says it.
pub fn audit_manifests(documents: &[Value], cfg: &Config) -> Vec<AuditFinding> {
    audit(&Model::from_manifests(documents), documents, cfg)
}

/// Every finding for the objects of `model`, of which `documents` are the ones the webhook
/// validates, as written (the model leaves out fields the section 4, 5 and 10 rules read).
pub fn audit(model: &Model, documents: &[Value], cfg: &Config) -> Vec<AuditFinding> {
    let found = documents
        .iter()
        .flat_map(|d| object_findings(model, d, cfg))
        .collect();
    with_set_findings(found, model, cfg)
}

/// What sections 4, 5 and 10 say about one stored object of `model`'s set; none for an object
/// another workload of the set owns. One object at a time, so that a live audit holds one page
/// of a list, never every object as written.
pub fn object_findings(model: &Model, document: &Value, cfg: &Config) -> Vec<AuditFinding> {
    if owned_by_workload(model, document) {
        return Vec::new();
    }
    stored::findings(document, cfg)
}

/// `found` (every object's [`object_findings`]) with the set's findings, sorted, each once.
pub fn with_set_findings(
    mut found: Vec<AuditFinding>,
    model: &Model,
    cfg: &Config,
) -> Vec<AuditFinding> {
    let undecodable: BTreeSet<String> = found
        .iter()
        .filter(|f| f.rule == stored::UNREADABLE)
        .map(|f| f.object.to_string())
        .collect();
    found.extend(
        set_findings(model, cfg).into_iter().filter(|f| {
            f.rule != stored::UNREADABLE || !undecodable.contains(&f.object.to_string())
        }),
    );
    finding::sort(&mut found);
    found.dedup();
    found
}

/// Whether another workload of the set owns the object (a Deployment its ReplicaSets, they their
/// Pods): the owner's findings are the ones to fix, so each replica does not repeat them.
fn owned_by_workload(model: &Model, document: &Value) -> bool {
    let Some(subject) = stored::subject_of(document) else {
        return false;
    };
    let owners = document["metadata"]["ownerReferences"].as_array();
    owners.into_iter().flatten().any(|owner| {
        let (Some(kind), Some(name)) = (owner["kind"].as_str(), owner["name"].as_str()) else {
            return false;
        };
        // A manifest in git may name only the owner's kind.
        let group = owner["apiVersion"]
            .as_str()
            .map(|v| v.split_once('/').map_or("", |(group, _)| group));
        kinds::KINDS
            .iter()
            .filter(|k| k.kind == kind && group.is_none_or(|g| g == k.group))
            .any(|k| model.workloads.get(k, &subject.namespace, name).is_some())
    })
}

/// Whether `audit` exits 1: some finding is an error (warnings alone leave it 0).
pub fn has_errors(findings: &[AuditFinding]) -> bool {
    findings.iter().any(AuditFinding::is_error)
}
