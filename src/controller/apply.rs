//! Carries out a plan: server-side apply with the field manager `mesh-admission` (forcing only on
//! objects that carry our managed-by label), deletion with the object's uid as precondition (a
//! same-name object created since is someone else's). Several requests run at once: the first
//! reconcile of a large cluster writes thousands of objects.

use futures_util::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::{Api, Client};

use super::kinds::Watched;
use super::reconcile::{Apply, Deletion};
use super::stores::{Key, Stores};
use crate::policy::render::MeshKind;

/// The field manager of every write (DESIGN.md section 9).
pub const FIELD_MANAGER: &str = "mesh-admission";

/// A write that failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {namespace}/{name}: {source}")]
pub struct WriteError {
    pub action: &'static str,
    pub kind: MeshKind,
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// What happened to one object.
pub enum Written {
    Applied(MeshKind, String, String),
    Deleted(MeshKind, String, String),
}

fn api(client: &Client, kind: MeshKind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &Watched::Mesh(kind).api_resource(),
    )
}

/// Applies one object and records the apiserver's reply in the stores.
async fn apply_one(
    client: &Client,
    stores: &Stores,
    apply: &Apply<'_>,
) -> Result<Written, WriteError> {
    let object = apply.object;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = apply.force;
    let result = api(client, object.kind, &object.namespace)
        .patch(&object.name, &params, &Patch::Apply(&object.manifest))
        .await;
    let error = |source| WriteError {
        action: "apply",
        kind: object.kind,
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        source,
    };
    let reply = result.map_err(error)?;
    let kind = Watched::Mesh(object.kind);
    if let Some(projected) = serde_json::to_value(&reply)
        .ok()
        .and_then(|value| kind.project(&value))
    {
        stores.written(kind, projected);
    }
    Ok(Written::Applied(
        object.kind,
        object.namespace.clone(),
        object.name.clone(),
    ))
}

async fn delete_one(
    client: &Client,
    stores: &Stores,
    deletion: &Deletion,
) -> Result<Written, WriteError> {
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
    let key: Key = (deletion.namespace.clone(), deletion.name.clone());
    stores.deleted(Watched::Mesh(deletion.kind), &key);
    Ok(Written::Deleted(
        deletion.kind,
        deletion.namespace.clone(),
        deletion.name.clone(),
    ))
}

/// Applies and deletes, `parallel` requests at a time; returns every outcome.
pub async fn execute(
    client: &Client,
    stores: &Stores,
    applies: &[Apply<'_>],
    deletions: &[Deletion],
    parallel: usize,
) -> Vec<Result<Written, WriteError>> {
    let applied = futures_util::stream::iter(applies)
        .map(|apply| apply_one(client, stores, apply))
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>();
    let mut results = applied.await;
    let deleted = futures_util::stream::iter(deletions)
        .map(|deletion| delete_one(client, stores, deletion))
        .buffer_unordered(parallel.max(1))
        .collect::<Vec<_>>();
    results.extend(deleted.await);
    results
}
