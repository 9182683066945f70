//! The audit of a live cluster (`audit --cluster`, the controller's reports): the cluster's model
//! (`model::cluster`) for the findings only the set shows, and the objects `/validate` reads as
//! the API serves them for the webhook's own findings (the model leaves out fields those rules
//! read). Read-only; the findings come from the pure `audit` core.

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

/// Every finding of the cluster, and the kinds it does not serve (so not audited).
pub async fn findings(
    client: &kube::Client,
    config: &Config,
) -> anyhow::Result<(Vec<AuditFinding>, Vec<NotServed>)> {
    let read = cluster::read(client, None).await?;
    let mut documents = Vec::new();
    for kind in kinds::validated() {
        documents.extend(list(client, kind).await?);
    }
    Ok((
        audit::audit(&read.model, &documents, config),
        read.not_served,
    ))
}

/// Every object of `kind` as JSON; none when the cluster does not serve the kind.
async fn list(client: &kube::Client, kind: &'static Kind) -> anyhow::Result<Vec<Value>> {
    let version = match cluster::served_version(client, kind, kind.watched_version()).await {
        Ok(version) => version,
        Err(kube::Error::Discovery(
            DiscoveryError::MissingApiGroup(_) | DiscoveryError::MissingKind(_),
        )) => return Ok(Vec::new()),
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
    let mut out = Vec::new();
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(response)) if response.code == 404 => return Ok(Vec::new()),
            Err(error) => anyhow::bail!("cannot list {kind} ({api_version}): {error}"),
        };
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        for item in page.items {
            let mut object = serde_json::to_value(item)?;
            // List items carry no type of their own.
            object["apiVersion"] = Value::from(api_version.as_str());
            object["kind"] = Value::from(kind.kind);
            out.push(object);
        }
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(out)
}
