//! Events on the owners (DESIGN.md section 9): Normal `MeshApplied` for what was written, Warning
//! `MeshConflict` / `MeshInvalid` / `MeshIncomplete` for the problems `render` found. A problem is
//! reported once while it lasts, so a steady state writes no Events; one that goes away and comes
//! back is reported again.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::policy::render::{ObjectRef, Problem};

/// What the controller signs its Events with.
pub const COMPONENT: &str = "mesh-admission-controller";

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Normal,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "Normal",
            Severity::Warning => "Warning",
        }
    }
}

/// One Event to publish about `owner`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub owner: ObjectRef,
    pub severity: Severity,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    pub fn of_problem(problem: &Problem) -> Note {
        Note {
            owner: problem.subject.clone(),
            severity: Severity::Warning,
            reason: problem.issue.event_reason(),
            message: problem.issue.to_string(),
        }
    }
}

/// The problems already reported, so that each is reported once while it lasts.
#[derive(Debug, Default)]
pub struct Reported {
    warnings: BTreeSet<Note>,
}

impl Reported {
    /// The Warning notes among `current` not reported yet; forgets the ones that have gone, so
    /// that they are reported again if they come back.
    pub fn new_warnings(&mut self, current: Vec<Note>) -> Vec<Note> {
        let current: BTreeSet<Note> = current.into_iter().collect();
        let fresh = current.difference(&self.warnings).cloned().collect();
        self.warnings = current;
        fresh
    }

    /// Forgets a note whose Event could not be written, to try again next time.
    pub fn forget(&mut self, note: &Note) {
        self.warnings.remove(note);
    }
}

/// The reference an Event needs: apiVersion, kind, namespace, name and uid of the owner.
#[derive(Debug, Clone)]
pub struct Regarding {
    pub api_version: String,
    pub uid: Option<String>,
}

/// Writes core/v1 Events (what `kubectl describe` and `kubectl get events` show) as `instance`.
pub struct Publisher {
    client: Client,
    instance: String,
}

impl Publisher {
    pub fn new(client: Client, instance: String) -> Self {
        Publisher { client, instance }
    }

    pub async fn publish(&self, note: &Note, regarding: &Regarding) -> Result<(), kube::Error> {
        let owner = &note.owner;
        // A cluster-scoped owner's Events live in `default`, as client-go puts them.
        let namespace = if owner.namespace.is_empty() {
            "default"
        } else {
            owner.namespace.as_str()
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", owner.name)),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(regarding.api_version.clone()),
                kind: Some(owner.kind.clone()),
                name: Some(owner.name.clone()),
                namespace: (!owner.namespace.is_empty()).then(|| owner.namespace.clone()),
                uid: regarding.uid.clone(),
                ..Default::default()
            },
            reason: Some(note.reason.to_owned()),
            // The API caps a message at 1 KiB; ours are shorter, but a long list of owners is not.
            message: Some(truncate(&note.message, 1000)),
            type_: Some(note.severity.as_str().to_owned()),
            source: Some(EventSource {
                component: Some(COMPONENT.to_owned()),
                ..Default::default()
            }),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(truncate(&self.instance, 128)),
            action: Some(action(note.severity).to_owned()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

fn action(severity: Severity) -> &'static str {
    match severity {
        Severity::Normal => "Apply",
        Severity::Warning => "Render",
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    // Room for the ellipsis (3 bytes in UTF-8), cut on a character boundary.
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Groups the objects written and deleted per owner into one `MeshApplied` note each.
pub fn applied_notes(
    written: &[(ObjectRef, String)],
    deleted: &[(ObjectRef, String)],
) -> Vec<Note> {
    let mut per_owner: BTreeMap<&ObjectRef, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for (owner, what) in written {
        per_owner.entry(owner).or_default().0.push(what);
    }
    for (owner, what) in deleted {
        per_owner.entry(owner).or_default().1.push(what);
    }
    per_owner
        .into_iter()
        .map(|(owner, (written, deleted))| {
            let mut parts = Vec::new();
            if !written.is_empty() {
                parts.push(format!("applied {}", written.join(", ")));
            }
            if !deleted.is_empty() {
                parts.push(format!("deleted {}", deleted.join(", ")));
            }
            Note {
                owner: owner.clone(),
                severity: Severity::Normal,
                reason: "MeshApplied",
                message: parts.join("; "),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &str, message: &str) -> Note {
        Note {
            owner: ObjectRef::new("helm.toolkit.fluxcd.io", "HelmRelease", "apps", name),
            severity: Severity::Warning,
            reason: "MeshConflict",
            message: message.into(),
        }
    }

    #[test]
    fn a_lasting_problem_is_reported_once_and_again_after_it_went() {
        let mut reported = Reported::default();
        assert_eq!(reported.new_warnings(vec![note("a", "x")]).len(), 1);
        assert!(reported.new_warnings(vec![note("a", "x")]).is_empty());
        // A changed message is a new problem.
        assert_eq!(reported.new_warnings(vec![note("a", "y")]).len(), 1);
        assert!(reported.new_warnings(vec![]).is_empty());
        assert_eq!(reported.new_warnings(vec![note("a", "y")]).len(), 1);
    }

    #[test]
    fn applied_notes_group_by_owner() {
        let owner = ObjectRef::new("helm.toolkit.fluxcd.io", "HelmRelease", "apps", "web");
        let notes = applied_notes(
            &[
                (owner.clone(), "VirtualService apps/web-ingress".into()),
                (
                    owner.clone(),
                    "NetworkPolicy apps/web-ingress-public".into(),
                ),
            ],
            &[(
                owner.clone(),
                "AuthorizationPolicy apps/web-ingress-public".into(),
            )],
        );
        assert_eq!(notes.len(), 1);
        assert_eq!(
            notes[0].message,
            "applied VirtualService apps/web-ingress, NetworkPolicy apps/web-ingress-public; \
             deleted AuthorizationPolicy apps/web-ingress-public"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character() {
        let text = "é".repeat(600);
        let cut = truncate(&text, 1000);
        assert!(cut.len() <= 1000);
        assert!(cut.ends_with('…'));
    }
}
