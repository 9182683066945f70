//! The model of a live cluster, read once (`graph --cluster`, `audit --cluster`): every kind of the
//! model listed through the API, read-only, as the same types the controller's reflectors keep. A
//! kind whose CRD is not installed (Istio's, SPIRE's, Flux's) is left out and said so, since a
//! cluster without SPIRE is still a cluster to look at; any other failure (no permission, the API
//! away) stops the read, because a model with a kind silently missing would give wrong answers.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::error::DiscoveryError;

use super::{KindVisitor, Model, Served, Stored, with_type};
use crate::policy::kinds::{self, Kind};

/// Objects asked for in one list call: large enough to read a big cluster in few calls, small
/// enough that one answer stays a few MiB.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot list {kind} ({api_version}): {source}")]
    List {
        kind: &'static str,
        api_version: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot find the version of {kind} the API serves: {source}")]
    Version {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// A kind that was not read because the cluster does not serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotServed {
    pub kind: &'static Kind,
    pub reason: String,
}

/// What [`read`] found: the model, and the kinds the cluster does not serve.
#[derive(Debug)]
pub struct Read {
    pub model: Model,
    pub not_served: Vec<NotServed>,
}

/// Lists every kind of the model. `helm_release_version` is the configured HelmRelease version;
/// without it the version the API prefers is asked for.
pub async fn read(
    client: &Client,
    helm_release_version: Option<&str>,
) -> Result<Read, ClusterError> {
    let mut model = Model::default();
    let mut not_served = Vec::new();
    for kind in kinds::modeled() {
        let version = match kind.watched_version() {
            Some(version) => version.to_owned(),
            None => match served_version(client, kind, helm_release_version).await {
                Ok(version) => version,
                Err(source) if is_not_served(&source) => {
                    let reason = source.to_string();
                    not_served.push(NotServed { kind, reason });
                    continue;
                }
                Err(source) => {
                    return Err(ClusterError::Version {
                        kind: kind.kind,
                        source,
                    });
                }
            },
        };
        let served = Served::new(kind, &version);
        let Some(listing) = with_type(kind, Lister { client, served }) else {
            continue;
        };
        match listing.await {
            Ok(add) => add(&mut model),
            Err(source) if is_not_served(&source) => {
                let reason = source.to_string();
                not_served.push(NotServed { kind, reason });
            }
            Err(source) => {
                return Err(ClusterError::List {
                    kind: kind.kind,
                    api_version: kind.api_version(&version),
                    source,
                });
            }
        }
    }
    Ok(Read { model, not_served })
}

/// The configured version of `kind`, or the one the API prefers.
pub async fn served_version(
    client: &Client,
    kind: &Kind,
    configured: Option<&str>,
) -> Result<String, kube::Error> {
    if let Some(version) = configured {
        return Ok(version.to_owned());
    }
    let group = kube::discovery::group(client, kind.group).await?;
    match group.recommended_kind(kind.kind) {
        Some((resource, _)) => Ok(resource.version),
        None => Err(kube::Error::Discovery(DiscoveryError::MissingKind(
            kind.kind.to_owned(),
        ))),
    }
}

/// The API does not serve the kind (its CRD is not installed): a 404 on the list, or discovery
/// without its group or kind.
fn is_not_served(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(response) => response.code == 404,
        kube::Error::Discovery(
            DiscoveryError::MissingApiGroup(_) | DiscoveryError::MissingKind(_),
        ) => true,
        _ => false,
    }
}

type AddTo = Box<dyn FnOnce(&mut Model) + Send>;

/// Lists one kind, page by page, as the type the model holds it as.
struct Lister<'a> {
    client: &'a Client,
    served: Served,
}

impl<'a> KindVisitor for Lister<'a> {
    type Output = BoxFuture<'a, Result<AddTo, kube::Error>>;

    fn visit<T: Stored>(self, kind: &'static Kind) -> Self::Output {
        Box::pin(async move {
            let api = Api::<T>::all_with(self.client.clone(), &self.served);
            let mut objects = Vec::new();
            let mut params = ListParams::default().limit(PAGE);
            loop {
                let page = api.list(&params).await?;
                let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
                objects.extend(page.items.into_iter().map(|mut object: T| {
                    object.trim();
                    object
                }));
                match next {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
            let add: AddTo = Box::new(move |model: &mut Model| {
                for object in objects {
                    model.add(kind, Arc::new(object));
                }
            });
            Ok(add)
        })
    }
}
