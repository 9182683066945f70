//! The audit of a live cluster (`audit --cluster`, the controller's reports): the cluster's model
//! (`model::cluster`) for the findings only the set shows, and the objects `/validate` reads as
//! the API serves them, a page at a time, for the webhook's own findings (the model leaves out
//! fields those rules read). Read-only; the findings come from the pure `audit` core.

pub mod reports;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::error::DiscoveryError;
use serde_json::Value;

use crate::audit::{self, AuditFinding};
use crate::config::Config;
use crate::model::cluster::{self, NotServed};
use crate::policy::kinds::{self, Kind};

/// Objects asked for in one list call, as `model::cluster` asks.
const PAGE: u32 = 500;

/// Every finding of the cluster, and the kinds it does not serve (so not audited). The objects
/// `/validate` reads are audited a page at a time: only the model and one page are held.
pub async fn findings(
    client: &kube::Client,
    config: &Config,
) -> anyhow::Result<(Vec<AuditFinding>, Vec<NotServed>)> {
    let read = cluster::read(client, None).await?;
    let mut found = Vec::new();
    for kind in kinds::validated() {
        each_page(client, kind, |page| {
            for object in page {
                found.extend(audit::object_findings(&read.model, &object, config));
            }
        })
        .await?;
    }
    Ok((
        audit::with_set_findings(found, &read.model, config),
        read.not_served,
    ))
}

/// Lists every object of `kind`, a page at a time, each as JSON to `take`; none when the cluster
/// does not serve the kind.
async fn each_page(
    client: &kube::Client,
    kind: &'static Kind,
    mut take: impl FnMut(Vec<Value>),
) -> anyhow::Result<()> {
    let version = match cluster::served_version(client, kind, kind.watched_version()).await {
        Ok(version) => version,
        Err(kube::Error::Discovery(
            DiscoveryError::MissingApiGroup(_) | DiscoveryError::MissingKind(_),
        )) => return Ok(()),
        Err(error) => anyhow::bail!("cannot find the version of {kind} the API serves: {error}"),
    };
    let api_version = kind.api_version(&version);
    let resource = ApiResource {
        group: kind.group.to_owned(),
        version,
        api_version: api_version.clone(),
        kind: kind.kind.to_owned(),
        plural: kind.resource.to_owned(),
    };
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(response)) if response.code == 404 => return Ok(()),
            Err(error) => anyhow::bail!("cannot list {kind} ({api_version}): {error}"),
        };
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        let mut objects = Vec::with_capacity(page.items.len());
        for item in page.items {
            let mut object = serde_json::to_value(item)?;
            // List items carry no type of their own.
            object["apiVersion"] = Value::from(api_version.as_str());
            object["kind"] = Value::from(kind.kind);
            objects.push(object);
        }
        take(objects);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}
