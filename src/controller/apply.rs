//! Carries out a plan: server-side apply with the field manager `mesh-admission` (forcing only on
//! objects that carry our managed-by label), deletion with the object's uid as precondition (a
//! same-name object created since is someone else's). Several requests run at once: the first
//! reconcile of a large cluster writes thousands of objects.

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::time::Instant;

use super::plan::{Apply, Deletion, Plan};
use crate::model::object::Unread;
use crate::model::{Model, Object, ObjectRef, Served};
use crate::policy::kinds::Kind;

/// The field manager of every write (DESIGN.md section 9).
pub const FIELD_MANAGER: &str = "mesh-admission";

/// A write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {namespace}/{name}: {source}")]
pub struct WriteError {
    pub action: &'static str,
    pub kind: &'static Kind,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// What happened to one object, and who owns it.
#[derive(Debug)]
pub struct Written {
    pub action: Action,
    pub kind: &'static Kind,
    pub namespace: String,
    pub name: String,
    pub owner: Option<ObjectRef>,
    /// The resourceVersion the apiserver gave an applied object: the watch will bring it back.
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Applied,
    Deleted,
}

/// The objects of a generated kind, in the version `render` writes, in `namespace`.
fn api(client: &Client, kind: &'static Kind, namespace: &str) -> Api<Object<Unread>> {
    let version = kind.generated_version().unwrap_or("v1");
    Api::namespaced_with(client.clone(), namespace, &Served::new(kind, version))
}

async fn apply_one(client: &Client, apply: &Apply<'_>) -> Result<Written, WriteError> {
    let object = apply.object;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = apply.force;
    let reply = api(client, object.kind, &object.namespace)
        .patch(&object.name, &params, &Patch::Apply(object))
        .await
        .map_err(|source| WriteError {
            action: "apply",
            kind: object.kind,
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            source,
        })?;
    Ok(Written {
        action: Action::Applied,
        kind: object.kind,
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        owner: Some(object.owner.clone()),
        resource_version: reply.metadata.resource_version,
    })
}

async fn delete_one(client: &Client, deletion: &Deletion) -> Result<Written, WriteError> {
    let params = DeleteParams {
        preconditions: deletion.uid.as_ref().map(|uid| Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let result = api(client, deletion.kind, &deletion.namespace)
        .delete(&deletion.name, &params)
        .await;
    match result {
        // Already gone is what was wanted.
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => {
            return Err(WriteError {
                action: "delete",
                kind: deletion.kind,
                namespace: deletion.namespace.clone(),
                name: deletion.name.clone(),
                source,
            });
        }
    }
    Ok(Written {
        action: Action::Deleted,
        kind: deletion.kind,
        namespace: deletion.namespace.clone(),
        name: deletion.name.clone(),
        owner: deletion.owner.clone(),
        resource_version: None,
    })
}

/// The writes of the last reconcile that the reflectors do not show yet. The next reconcile waits
/// for them (at most [`AWAIT`]): planning against a store a watch event behind would write the
/// same objects again.
#[derive(Debug, Default)]
pub struct Awaited {
    /// Kind, namespace, name, and the resourceVersion applied (`None`: deleted).
    writes: Vec<(&'static Kind, String, String, Option<u64>)>,
    until: Option<Instant>,
}

/// How long a reconcile waits for the watch to show the last writes.
pub const AWAIT: Duration = Duration::from_secs(2);

impl Awaited {
    pub fn of(written: &[Written]) -> Self {
        let writes: Vec<_> = written
            .iter()
            .filter_map(|w| {
                let version = match w.action {
                    Action::Applied => Some(w.resource_version.as_deref()?.parse().ok()?),
                    Action::Deleted => None,
                };
                Some((w.kind, w.namespace.clone(), w.name.clone(), version))
            })
            .collect();
        let until = (!writes.is_empty()).then(|| Instant::now() + AWAIT);
        Awaited { writes, until }
    }

    /// When to look again, while some write is still unseen.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether `model` does not show every write yet, and the wait is not over. An etcd-backed
    /// apiserver's resourceVersions only grow; one that does not parse is taken as seen.
    pub fn pending(&mut self, model: &Model) -> bool {
        let seen =
            |(kind, namespace, name, version): &(&'static Kind, String, String, Option<u64>)| {
                let live = model
                    .collection(kind)
                    .and_then(|c| c.metadata(kind, namespace, name));
                let live_version =
                    live.and_then(|m| m.resource_version.as_deref()?.parse::<u64>().ok());
                match version {
                    Some(version) => live_version.is_some_and(|v| v >= *version),
                    None => live.is_none(),
                }
            };
        self.writes.retain(|write| !seen(write));
        let waiting = !self.writes.is_empty() && self.until.is_some_and(|t| Instant::now() < t);
        if !waiting {
            *self = Awaited::default();
        }
        waiting
    }
}

/// Applies and deletes, `parallel` requests at a time; returns every outcome.
pub async fn execute(
    client: &Client,
    plan: &Plan<'_>,
    parallel: usize,
) -> Vec<Result<Written, WriteError>> {
    let applied = futures_util::stream::iter(&plan.apply)
        .map(|apply| apply_one(client, apply))
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>();
    let mut results = applied.await;
    let deleted = futures_util::stream::iter(&plan.delete)
        .map(|deletion| delete_one(client, deletion))
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>();
    results.extend(deleted.await);
    results
}
