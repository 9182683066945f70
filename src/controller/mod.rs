//! `mesh-admission controller` (DESIGN.md section 9): keeps exactly what `render` prints for the
//! cluster's objects applied, and prunes the rest. The shell around the pure `policy::render`:
//! watches into stores (`stores`, `kinds`), a debounced loop that renders everything and plans the
//! difference (`reconcile`), the writes (`apply`), Events (`events`), leader election (`leader`)
//! and the admin port (`admin`, `metrics`). Nothing about Istio lives here.
//!
//! `render` is global (conflicts across HelmReleases, one PeerAuthentication per namespace), so
//! every reconcile renders the whole cluster from the stores; a plan writes only what differs, so a
//! steady state writes nothing.

pub mod admin;
pub mod apply;
pub mod events;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod stores;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use kube::Client;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cli::ControllerArgs;
use crate::config::Config;
use crate::policy::render::{self, MeshKind, ObjectRef, Rendered};
use apply::{WriteError, Written};
use events::{Note, Publisher, Regarding, Reported};
use kinds::Watched;
use metrics::{ControllerMetrics, Outcome};
use reconcile::Live;
use stores::Stores;

/// Backoff of a reconcile whose writes failed.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// `mesh-admission controller`: runs until SIGTERM or SIGINT, then releases the Lease.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    // Installed before anything slow, so a SIGTERM during start-up still releases the Lease.
    let signals =
        crate::signals::spawn_signal_handler().context("cannot install signal handlers")?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG or run in a cluster")?;
    let metrics = Arc::new(ControllerMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();

    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin = tokio::spawn({
        let router = admin::router(admin::AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        });
        let stop = stop.clone();
        async move {
            axum::serve(admin_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });

    let stores = Stores::new();
    for kind in Watched::all() {
        tokio::spawn(stores::watch(
            client.clone(),
            kind,
            stores.clone(),
            stop.clone(),
        ));
    }

    let identity = leader::identity();
    let namespace = leader::namespace(args.leader_election_namespace.as_deref());
    tracing::info!(%admin_addr, %identity, lease_namespace = %namespace, "listening");
    let election = leader::Election::start(client.clone(), &namespace, &identity)
        .await
        .context("cannot start leader election")?;

    let mut controller = Controller {
        publisher: Publisher::new(client.clone(), identity),
        client,
        config,
        stores,
        metrics: metrics.clone(),
        reported: Reported::default(),
        parallel: usize::from(args.parallel),
    };
    controller
        .run(
            election.leading.clone(),
            &ready,
            args.debounce,
            args.resync,
            signals.shutdown.cancelled(),
        )
        .await;

    ready.store(false, Ordering::Release);
    // Releasing the Lease lets the other replica take over at once rather than after the lease
    // duration; a second signal gives that up.
    tokio::select! {
        () = election.release() => {}
        aborted = signals.aborted() => return Err(aborted.into()),
    }
    metrics.leader.set(0);
    stop.cancel();
    let _ = admin.await;
    Ok(())
}

/// Why a reconcile did not finish its work; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Some writes failed (the first one named); the others were done.
    #[error("{failed} of {total} writes failed, first: {first}")]
    Writes {
        failed: usize,
        total: usize,
        first: WriteError,
    },
}

struct Controller {
    client: Client,
    config: Config,
    stores: Arc<Stores>,
    metrics: Arc<ControllerMetrics>,
    reported: Reported,
    publisher: Publisher,
    parallel: usize,
}

impl Controller {
    /// Reconciles after every change (gathered for `debounce`), every `resync`, and on becoming
    /// the leader, until `signalled`.
    async fn run(
        &mut self,
        mut leading: tokio::sync::watch::Receiver<bool>,
        ready: &AtomicBool,
        debounce: Duration,
        resync: Duration,
        signalled: impl Future<Output = ()>,
    ) {
        let mut signalled = std::pin::pin!(signalled);
        let mut resync = tokio::time::interval_at(Instant::now() + resync, resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            let retry_at = retry.map(|(at, _)| at);
            tokio::select! {
                () = &mut signalled => return,
                () = self.stores.changed.notified() => {}
                changed = leading.changed() => {
                    if changed.is_err() {
                        tracing::warn!("leader election ended; no longer writing");
                    }
                    let is_leader = *leading.borrow_and_update();
                    self.metrics.leader.set(i64::from(is_leader));
                    tracing::info!(leader = is_leader, "leadership changed");
                }
                _ = resync.tick() => {}
                () = sleep_until(retry_at), if retry_at.is_some() => {}
            }
            // Changes come in bursts (a Helm upgrade, a relist): one reconcile for the burst.
            tokio::select! {
                () = &mut signalled => return,
                () = tokio::time::sleep(debounce) => {}
            }
            let settled = self.stores.settled();
            ready.store(settled, Ordering::Release);
            if !settled || !*leading.borrow() {
                continue;
            }
            let span = tracing::info_span!(
                "reconcile",
                objects = tracing::field::Empty,
                applied = tracing::field::Empty,
                deleted = tracing::field::Empty,
                problems = tracing::field::Empty,
            );
            match self.reconcile().instrument(span).await {
                Ok(()) => {
                    self.metrics.reconciled(Outcome::Ok);
                    retry = None;
                }
                Err(error) => {
                    self.metrics.reconciled(Outcome::Error);
                    let delay = retry.map_or(RETRY_MIN, |(_, d)| (d * 2).min(RETRY_MAX));
                    tracing::warn!(%error, retry_in = ?delay, "reconcile failed");
                    retry = Some((Instant::now() + delay, delay));
                }
            }
        }
    }

    /// Renders the cluster, writes the difference, reports the problems.
    async fn reconcile(&mut self) -> Result<(), ReconcileError> {
        let snapshot = self.stores.snapshot();
        let listed: Vec<MeshKind> = MeshKind::ALL
            .into_iter()
            .filter(|k| snapshot.listed(Watched::Mesh(*k)))
            .collect();
        let inputs: Vec<Arc<Value>> = snapshot.objects.into_values().flatten().collect();
        // Our own generated objects change nothing `render` gives (it reads existing objects only
        // to leave others' alone), so their compact form is not expanded for it.
        let rendered = render::render(
            inputs
                .iter()
                .map(|o| &**o)
                .filter(|o| !kinds::is_compact(o)),
            &self.config,
        );
        let live: Vec<Live<'_>> = inputs
            .iter()
            .map(|o| &**o)
            .filter_map(|object| {
                let api_version = object["apiVersion"].as_str()?;
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let kind = MeshKind::of(group, object["kind"].as_str()?)?;
                Some(Live { kind, object })
            })
            .collect();
        let plan = reconcile::plan(&rendered, &live, |kind| listed.contains(&kind));
        let span = tracing::Span::current();
        span.record("objects", rendered.objects.len());
        span.record("problems", rendered.problems.len());

        let results = apply::execute(
            &self.client,
            &self.stores,
            &plan.apply,
            &plan.delete,
            self.parallel,
        )
        .await;
        let total = results.len();
        let owners: BTreeMap<(MeshKind, &str, &str), &ObjectRef> = rendered
            .objects
            .iter()
            .map(|o| (o.key(), &o.owner))
            .collect();
        let deleted_owners: BTreeMap<(MeshKind, &str, &str), Option<&str>> = plan
            .delete
            .iter()
            .map(|d| {
                (
                    (d.kind, d.namespace.as_str(), d.name.as_str()),
                    d.owner.as_deref(),
                )
            })
            .collect();
        let mut written = Vec::new();
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(Written::Applied(kind, namespace, name)) => {
                    self.metrics.applied(kind);
                    tracing::info!(%kind, %namespace, %name, "applied");
                    if let Some(owner) = owners.get(&(kind, namespace.as_str(), name.as_str())) {
                        written.push(((*owner).clone(), format!("{kind} {namespace}/{name}")));
                    }
                }
                Ok(Written::Deleted(kind, namespace, name)) => {
                    self.metrics.deleted(kind);
                    tracing::info!(%kind, %namespace, %name, "deleted");
                    let owner = deleted_owners
                        .get(&(kind, namespace.as_str(), name.as_str()))
                        .copied()
                        .flatten()
                        .and_then(parse_owner_ref);
                    if let Some(owner) = owner {
                        deleted.push((owner, format!("{kind} {namespace}/{name}")));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "write failed");
                    failures.push(error);
                }
            }
        }
        span.record("applied", written.len());
        span.record("deleted", deleted.len());
        self.report(&rendered, &written, &deleted).await;
        let failed = failures.len();
        match failures.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(ReconcileError::Writes {
                failed,
                total,
                first,
            }),
        }
    }

    /// Publishes the Events: each new problem once, and what was written per owner.
    async fn report(
        &mut self,
        rendered: &Rendered,
        written: &[(ObjectRef, String)],
        deleted: &[(ObjectRef, String)],
    ) {
        let problems = rendered.problems.iter().map(Note::of_problem).collect();
        let fresh = self.reported.new_warnings(problems);
        for note in &fresh {
            tracing::warn!(owner = %note.owner, reason = note.reason, message = %note.message, "problem");
            if note.reason == "MeshConflict" {
                self.metrics.conflicts.inc();
            }
        }
        // The owner may be gone (a deleted HelmRelease): nobody to tell.
        let addressed: Vec<(Note, Regarding)> = fresh
            .into_iter()
            .chain(events::applied_notes(written, deleted))
            .filter_map(|note| {
                let regarding = self.regarding(&note.owner)?;
                Some((note, regarding))
            })
            .collect();
        // The first reconcile of a large cluster has an Event per owner: several go at once, as
        // the writes do.
        let publisher = &self.publisher;
        let failed: Vec<Note> = futures_util::stream::iter(addressed)
            .map(|(note, regarding)| async move {
                let result = publisher.publish(&note, &regarding).await;
                result.err().map(|error| (note, error))
            })
            .buffer_unordered(self.parallel.max(1))
            .filter_map(|failure| async move {
                let (note, error) = failure?;
                tracing::warn!(owner = %note.owner, reason = note.reason, %error, "cannot write Event");
                Some(note)
            })
            .collect()
            .await;
        for note in &failed {
            self.reported.forget(note);
        }
    }

    /// The owner's apiVersion and uid, from the stores; `None` when it is not (or no longer) there.
    fn regarding(&self, owner: &ObjectRef) -> Option<Regarding> {
        let kind = Watched::of_owner(&owner.group, &owner.kind)?;
        let object = self
            .stores
            .get(kind, &(owner.namespace.clone(), owner.name.clone()))?;
        Some(Regarding {
            api_version: object["apiVersion"].as_str()?.to_owned(),
            uid: object["metadata"]["uid"].as_str().map(str::to_owned),
        })
    }
}

/// The owner annotation's `GROUP/KIND/NAMESPACE/NAME` (`core` for the core group) as a reference.
fn parse_owner_ref(text: &str) -> Option<ObjectRef> {
    let mut parts = text.splitn(4, '/');
    let (group, kind, namespace, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let group = if group == "core" { "" } else { group };
    Some(ObjectRef::new(group, kind, namespace, name))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_refs_read_back() {
        for owner in [
            ObjectRef::new("helm.toolkit.fluxcd.io", "HelmRelease", "apps", "web"),
            ObjectRef::namespace("apps"),
            ObjectRef::new("apps", "Deployment", "apps", "web"),
            ObjectRef::new("", "Pod", "apps", "web-0"),
        ] {
            assert_eq!(parse_owner_ref(&owner.owner_ref()), Some(owner));
        }
        assert_eq!(parse_owner_ref("nonsense"), None);
    }
}
