//! The controller's OpenReports (DESIGN.md section 13): while leading, after each reconcile and
//! every `--report-interval` the cluster is audited (`live_audit`, read-only, the same findings as `audit --cluster`), and
//! the reports `audit --output reports` would print are written where they differ from the stored
//! ones (server-side apply), the stored ones nothing needs any more deleted. A steady cluster gets
//! no writes; each finding keeps the timestamp it was first seen with.
//!
//! Reading the whole cluster once per interval, rather than following watches, keeps this apart from
//! the generator's reflectors (which hold only what `render` reads); see docs/audit.md.

use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::audit::report::{self, Change, FirstSeen, Timestamp};
use crate::config::Config;
use crate::live_audit;

/// The field manager of the reports' server-side applies.
const MANAGER: &str = "mesh-admission";
/// The least time between two audits: each lists the whole cluster, and reconciles come as fast
/// as pods change. Triggers meanwhile are gathered into one audit after it.
const GAP: Duration = Duration::from_secs(2);

fn resource(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource {
        group: "openreports.io".into(),
        version: "v1alpha1".into(),
        api_version: report::API_VERSION.into(),
        kind: kind.into(),
        plural,
    }
}

/// Audits and writes while this replica leads, until `stop`: after each reconcile of the generator
/// (`reconciled`: the cluster changed, or its resync), and every `interval` for the kinds it does
/// not watch.
pub async fn run(
    client: kube::Client,
    config: Config,
    interval: Duration,
    leading: watch::Receiver<bool>,
    reconciled: Arc<Notify>,
    stop: CancellationToken,
) {
    let start = tokio::time::Instant::now() + interval;
    let mut ticks = tokio::time::interval_at(start, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
            () = reconciled.notified() => {}
        }
        if !*leading.borrow() {
            continue;
        }
        // Stopping must not wait for an audit of the whole cluster: the next leader writes anew.
        let written = tokio::select! {
            () = stop.cancelled() => return,
            written = write_reports(&client, &config) => written,
        };
        match written {
            Ok(writes) if writes > 0 => tracing::info!(writes, "reports written"),
            Ok(_) => tracing::debug!("reports unchanged"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "reports not written"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(GAP) => {}
        }
    }
}

/// One audit and its writes; the number of writes.
async fn write_reports(client: &kube::Client, config: &Config) -> anyhow::Result<usize> {
    let Some(stored) = stored_reports(client).await? else {
        tracing::debug!("the OpenReports CRDs are not installed: no reports");
        return Ok(0);
    };
    let (findings, _) = live_audit::findings(client, config).await?;
    let seen = FirstSeen::of(&stored);
    let now = now();
    let wanted = report::reports(&findings, &|f| seen.get(f, now));
    let changes = report::changes(&wanted, &stored);
    let count = changes.len();
    for change in changes {
        match change {
            Change::Apply(object) => {
                let api = api(client, object.kind, object.metadata.namespace.as_deref());
                let params = PatchParams::apply(MANAGER).force();
                api.patch(&object.metadata.name, &params, &Patch::Apply(&object))
                    .await?;
                tracing::info!(report = %object.id(), results = object.results.len(), "report applied");
            }
            Change::Delete {
                kind,
                namespace,
                name,
            } => {
                let api = api(client, &kind, namespace.as_deref());
                api.delete(&name, &DeleteParams::default()).await?;
                tracing::info!(%kind, namespace = namespace.unwrap_or_default(), %name, "report deleted");
            }
        }
    }
    Ok(count)
}

fn api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = resource(kind);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Our stored reports and cluster reports; `None` when the CRDs are not installed.
async fn stored_reports(client: &kube::Client) -> anyhow::Result<Option<Vec<Value>>> {
    let selector = format!("{}={}", report::MANAGED_BY_LABEL, report::NAME);
    let mut out = Vec::new();
    for kind in ["ClusterReport", "Report"] {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource(kind));
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(kube::Error::Api(response)) if response.code == 404 => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        for item in list.items {
            let mut object = serde_json::to_value(item)?;
            object["kind"] = Value::from(kind);
            out.push(object);
        }
    }
    Ok(Some(out))
}

fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}
