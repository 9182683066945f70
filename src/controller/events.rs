//! Events on the owners (DESIGN.md section 9), through kube-runtime's `Recorder`: Normal
//! `MeshApplied` for what was written, Warning `MeshConflict` / `MeshInvalid` / `MeshIncomplete`
//! for the problems `render` found. A problem is reported once while it lasts, so a steady state
//! writes no Events; one that goes away and comes back is reported again.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

use super::apply::{Action, Written};
use crate::model::ObjectRef;
use crate::policy::render::{Problem, Reason};

/// What the controller signs its Events with.
pub const COMPONENT: &str = "mesh-admission-controller";

/// One Event to publish about `owner`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub owner: ObjectRef,
    pub reason: Reason,
    pub message: String,
}

/// The problems already reported, so that each is reported once while it lasts.
#[derive(Debug, Default)]
pub struct Reported {
    warnings: BTreeSet<Note>,
}

impl Reported {
    /// The problems not reported yet, one note per owner and reason, and how many of them are
    /// conflicts; forgets the ones that have gone, so that they are reported again if they come
    /// back.
    pub fn new_warnings(&mut self, problems: &[Problem]) -> (Vec<Note>, u64) {
        let current: BTreeSet<Note> = problems
            .iter()
            .map(|p| Note {
                owner: p.subject.clone(),
                reason: p.issue.reason(),
                message: p.issue.to_string(),
            })
            .collect();
        let fresh: Vec<&Note> = current.difference(&self.warnings).collect();
        let conflicts = fresh
            .iter()
            .filter(|n| n.reason == Reason::Conflict)
            .count();
        // kube's Recorder counts Events of one reason on one owner as a series of the first one:
        // what is new for an owner goes out as one Event.
        let mut grouped: BTreeMap<(&ObjectRef, Reason), Vec<&str>> = BTreeMap::new();
        for note in fresh {
            let messages = grouped.entry((&note.owner, note.reason)).or_default();
            messages.push(&note.message);
        }
        let notes = grouped
            .into_iter()
            .map(|((owner, reason), messages)| Note {
                owner: owner.clone(),
                reason,
                message: messages.join("; "),
            })
            .collect();
        self.warnings = current;
        (notes, conflicts as u64)
    }

    /// Forgets the problems of a note whose Event could not be written, to try again next time.
    pub fn forget(&mut self, note: &Note) {
        self.warnings
            .retain(|w| !(w.owner == note.owner && w.reason == note.reason));
    }
}

/// What was written and deleted, one `MeshApplied` note per owner.
pub fn applied_notes(written: &[Written]) -> Vec<Note> {
    let mut per_owner: BTreeMap<&ObjectRef, [Vec<String>; 2]> = BTreeMap::new();
    for write in written {
        let Some(owner) = &write.owner else { continue };
        let what = format!("{} {}/{}", write.kind, write.namespace, write.name);
        per_owner.entry(owner).or_default()[usize::from(write.action == Action::Deleted)]
            .push(what);
    }
    let notes = per_owner.into_iter().map(|(owner, [applied, deleted])| {
        let parts = [("applied", applied), ("deleted", deleted)]
            .into_iter()
            .filter(|(_, objects)| !objects.is_empty())
            .map(|(verb, objects)| format!("{verb} {}", objects.join(", ")));
        Note {
            owner: owner.clone(),
            reason: Reason::Applied,
            message: parts.collect::<Vec<_>>().join("; "),
        }
    });
    notes.collect()
}

/// Publishes `note` about the object `regarding` refers to.
pub async fn publish(
    recorder: &Recorder,
    note: &Note,
    regarding: &ObjectReference,
) -> Result<(), kube::Error> {
    let (type_, action) = match note.reason {
        Reason::Applied => (EventType::Normal, "Apply"),
        _ => (EventType::Warning, "Render"),
    };
    let event = Event {
        type_,
        reason: note.reason.as_str().to_owned(),
        // The API caps a note at 1 KiB; ours are shorter, but a long list of owners is not.
        note: Some(truncate(&note.message, 1000)),
        action: action.to_owned(),
        secondary: None,
    };
    recorder.publish(&event, regarding).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::kinds;
    use crate::policy::render::Issue;

    fn owner(name: &str) -> ObjectRef {
        ObjectRef::new("helm.toolkit.fluxcd.io", "HelmRelease", "apps", name)
    }

    fn problem(name: &str, object: &str) -> Problem {
        Problem {
            subject: owner(name),
            issue: Issue::Unmanaged {
                object: object.into(),
            },
        }
    }

    #[test]
    fn a_lasting_problem_is_reported_once_and_again_after_it_went() {
        let mut reported = Reported::default();
        assert_eq!(reported.new_warnings(&[problem("a", "x")]).0.len(), 1);
        assert!(reported.new_warnings(&[problem("a", "x")]).0.is_empty());
        // A changed message is a new problem.
        let (fresh, conflicts) = reported.new_warnings(&[problem("a", "y")]);
        assert_eq!(conflicts, 1);
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0].reason, Reason::Conflict);
        assert!(reported.new_warnings(&[]).0.is_empty());
        assert_eq!(reported.new_warnings(&[problem("a", "y")]).0.len(), 1);
        // Two new problems of one reason on one owner: one note naming both.
        let (both, conflicts) = reported.new_warnings(&[problem("b", "x"), problem("b", "y")]);
        assert_eq!(conflicts, 2);
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(both[0].message.contains("x exists") && both[0].message.contains("y exists"));
        reported.forget(&both[0]);
        assert_eq!(reported.new_warnings(&[problem("b", "x")]).0.len(), 1);
    }

    #[test]
    fn applied_notes_group_by_owner() {
        let write = |kind, name: &str, action| Written {
            action,
            kind,
            namespace: "apps".into(),
            name: name.into(),
            owner: Some(owner("web")),
            resource_version: None,
        };
        let notes = applied_notes(&[
            write(&kinds::VIRTUAL_SERVICE, "web-ingress", Action::Applied),
            write(
                &kinds::NETWORK_POLICY,
                "web-ingress-public",
                Action::Applied,
            ),
            write(
                &kinds::AUTHORIZATION_POLICY,
                "web-ingress-public",
                Action::Deleted,
            ),
        ]);
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
