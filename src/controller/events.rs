//! Events on the owners (DESIGN.md section 9), through kube-runtime's `Recorder`: Normal
//! `MeshApplied` for what was written, Warning `MeshConflict` / `MeshInvalid` / `MeshIncomplete`
//! for the problems `render` found. A problem is reported once while it lasts, so a steady state
//! writes no Events; one that goes away and comes back is reported again.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::apply::Written;
use crate::model::{Key, ObjectRef};
use crate::policy::render::{Problem, Reason, Rendered};

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
    /// The problems not reported yet, one note per owner and reason (kube's `Recorder` counts a
    /// second Event of one reason on one owner as a repeat of the first), and how many are
    /// conflicts. Forgets those that have gone, so that they are reported again if they return.
    pub fn new_warnings(&mut self, problems: &[Problem]) -> (Vec<Note>, u64) {
        let note = |p: &Problem| Note {
            owner: p.subject.clone(),
            reason: p.issue.reason(),
            message: p.issue.to_string(),
        };
        let current: BTreeSet<Note> = problems.iter().map(note).collect();
        let fresh: Vec<&Note> = current.difference(&self.warnings).collect();
        let conflicts = fresh
            .iter()
            .filter(|n| n.reason == Reason::Conflict)
            .count();
        let notes = grouped(
            fresh
                .into_iter()
                .map(|n| (&n.owner, n.reason, n.message.clone())),
        );
        self.warnings = current;
        (notes, conflicts as u64)
    }

    /// Forgets the problems of a note whose Event could not be written, to try again next time.
    pub fn forget(&mut self, note: &Note) {
        self.warnings
            .retain(|w| (&w.owner, w.reason) != (&note.owner, note.reason));
    }
}

/// What was written and deleted, one `MeshApplied` note per owner.
pub fn applied_notes(written: &[Written]) -> Vec<Note> {
    grouped(written.iter().filter_map(|w| {
        let Key {
            kind,
            namespace,
            name,
        } = &w.key;
        let what = format!("{} {kind} {namespace}/{name}", w.action.as_str());
        Some((w.owner.as_ref()?, Reason::Applied, what))
    }))
}

/// One note per owner and reason, with the messages joined.
fn grouped<'a>(messages: impl Iterator<Item = (&'a ObjectRef, Reason, String)>) -> Vec<Note> {
    let mut grouped: BTreeMap<(&ObjectRef, Reason), Vec<String>> = BTreeMap::new();
    for (owner, reason, message) in messages {
        grouped.entry((owner, reason)).or_default().push(message);
    }
    let note = |((owner, reason), messages): ((&ObjectRef, Reason), Vec<String>)| Note {
        owner: owner.clone(),
        reason,
        message: messages.join("; "),
    };
    grouped.into_iter().map(note).collect()
}

/// Events through one `Recorder`, and the problems reported so far.
pub struct Events {
    recorder: Recorder,
    reported: Reported,
    parallel: usize,
}

impl Events {
    /// Events signed by this replica, `parallel` published at once.
    pub fn new(client: Client, identity: String, parallel: u16) -> Self {
        let mut reporter = Reporter::from(COMPONENT.to_owned());
        reporter.instance = Some(identity);
        Events {
            recorder: Recorder::new(client, reporter),
            reported: Reported::default(),
            parallel: usize::from(parallel),
        }
    }

    /// The Events to publish: each new problem once, and what was written per owner, about the
    /// objects `regarding` finds; and how many new conflicts there were.
    pub fn notes(
        &mut self,
        rendered: &Rendered,
        written: &[Written],
        regarding: impl Fn(&ObjectRef) -> Option<ObjectReference>,
    ) -> (Vec<(ObjectReference, Note)>, u64) {
        let (fresh, conflicts) = self.reported.new_warnings(&rendered.problems);
        for n in &fresh {
            tracing::warn!(owner = %n.owner, reason = %n.reason, message = %n.message, "problem");
        }
        let notes = fresh.into_iter().chain(applied_notes(written));
        let addressed = notes.filter_map(|n| Some((regarding(&n.owner)?, n)));
        (addressed.collect(), conflicts)
    }

    /// Publishes the notes; a problem whose Event could not be written is reported again later.
    pub async fn publish(&mut self, addressed: Vec<(ObjectReference, Note)>) {
        // The first reconcile of a large cluster has an Event per owner: several go at once.
        let recorder = &self.recorder;
        let failed: Vec<Note> = futures_util::stream::iter(addressed)
            .map(|(regarding, note)| async move {
                let error = recorder.publish(&event(&note), &regarding).await.err()?;
                tracing::warn!(owner = %note.owner, reason = %note.reason, %error, "cannot write Event");
                Some(note)
            })
            .buffer_unordered(self.parallel.max(1))
            .filter_map(std::future::ready)
            .collect()
            .await;
        failed.iter().for_each(|note| self.reported.forget(note));
    }
}

/// The Event of a note: Normal for what was written, Warning for a problem.
fn event(note: &Note) -> Event {
    let (type_, action) = match note.reason {
        Reason::Applied => (EventType::Normal, "Apply"),
        _ => (EventType::Warning, "Render"),
    };
    Event {
        type_,
        reason: note.reason.as_str().to_owned(),
        // The API caps a note at 1 KiB; ours are shorter, but a long list of owners is not.
        note: Some(truncate(&note.message, 1000)),
        action: action.to_owned(),
        secondary: None,
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = (0..max - 3).rev().find(|end| text.is_char_boundary(*end));
    format!("{}…", &text[..end.unwrap_or(0)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::apply::Action;
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
            key: Key {
                namespace: "apps".into(),
                name: name.into(),
                kind,
            },
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
            "applied VirtualService apps/web-ingress; applied NetworkPolicy apps/web-ingress-public; \
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
