//! Carries out a plan: server-side apply with the field manager `mesh-admission` (forcing only on
//! objects that carry our managed-by label), deletion with the object's uid as precondition (a
//! same-name object created since is someone else's). Several requests run at once: the first
//! reconcile of a large cluster writes thousands of objects.

use futures_util::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};

use crate::model::object::Unread;
use crate::model::{Key, Object, ObjectRef, Served};
use crate::policy::plan::{Plan, Write};

/// The field manager of every write (DESIGN.md section 9).
pub const FIELD_MANAGER: &str = "mesh-admission";

/// What happened to one object, and who owns it.
#[derive(Debug)]
pub struct Written {
    pub action: Action,
    pub key: Key,
    pub owner: Option<ObjectRef>,
    /// The resourceVersion the apiserver gave an applied object, which the watch will bring.
    pub resource_version: Option<u64>,
}

impl Written {
    /// What the reflectors must show before the next plan: the version applied, or the absence.
    pub fn awaited(&self) -> Option<(Key, Option<u64>)> {
        let version = self.resource_version;
        let awaited = version.is_some() || self.action == Action::Deleted;
        awaited.then(|| (self.key.clone(), version))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Applied,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Applied => "applied",
            Action::Deleted => "deleted",
        }
    }
}

/// A write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{} {}/{} not {}: {source}", .write.key.kind, .write.key.namespace, .write.key.name, .write.action.as_str())]
pub struct WriteError {
    pub write: Written,
    #[source]
    pub source: kube::Error,
}

/// Applies or deletes one object.
async fn write(client: &Client, write: Write<'_>) -> Result<Written, WriteError> {
    let (kind, namespace, name) = write.key();
    let version = kind.generated_version().unwrap_or("v1");
    let served = Served::new(kind, version);
    let api: Api<Object<Unread>> = Api::namespaced_with(client.clone(), namespace, &served);
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let mut written = Written {
        action: Action::Applied,
        key: Key {
            namespace,
            name,
            kind,
        },
        owner: None,
        resource_version: None,
    };
    let result = match write {
        Write::Apply { object, force } => {
            let params = PatchParams {
                force,
                ..PatchParams::apply(FIELD_MANAGER)
            };
            written.owner = Some(object.owner.clone());
            api.patch(&object.name, &params, &Patch::Apply(object))
                .await
                .map(|reply| {
                    let version = reply.metadata.identity.resource_version;
                    written.resource_version = version.and_then(|v| v.parse().ok());
                })
        }
        Write::Delete(deletion) => {
            let uid = deletion.uid.clone();
            let preconditions = Preconditions {
                uid,
                resource_version: None,
            };
            let params = DeleteParams {
                preconditions: Some(preconditions),
                ..Default::default()
            };
            (written.action, written.owner) = (Action::Deleted, deletion.owner.clone());
            match api.delete(&deletion.name, &params).await {
                // Already gone is what was wanted.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                result => result.map(drop),
            }
        }
    };
    match result {
        Ok(()) => Ok(written),
        Err(source) => Err(WriteError {
            write: written,
            source,
        }),
    }
}

/// Applies, then deletes, `parallel` requests at a time; returns every outcome.
pub async fn execute(
    client: &Client,
    plan: Plan<'_>,
    parallel: usize,
) -> Vec<Result<Written, WriteError>> {
    let mut results = Vec::new();
    for writes in [plan.applies(), plan.deletions()] {
        let done = futures_util::stream::iter(writes)
            .map(|w| write(client, w))
            .buffer_unordered(parallel.max(1));
        results.extend(done.collect::<Vec<_>>().await);
    }
    results
}
