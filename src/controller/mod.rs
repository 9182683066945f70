//! `mesh-admission controller` (DESIGN.md section 9): keeps exactly what `render` prints for the
//! cluster's objects applied, and prunes the rest. Wiring around the pure `policy::render`:
//! kube-runtime reflectors keep the model of the mesh (`watch`), a debounced loop renders it and
//! plans the difference (`plan`), then writes (`apply`), tells the owners (`events`), and leader
//! election (`leader`) and the admin port (`admin`, `metrics`) surround it. Nothing about Istio
//! lives here.
//!
//! `render` is global (conflicts across HelmReleases, one PeerAuthentication per namespace), so
//! every reconcile renders the whole model; a plan writes only what differs, so a steady state
//! writes nothing.

pub mod admin;
pub mod apply;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cli::ControllerArgs;
use crate::config::Config;
use crate::model::{Model, ObjectRef};
use crate::policy::kinds;
use crate::policy::render::{self, Rendered};
use apply::{Awaited, WriteError, Written};
use events::{Note, Reported};
use metrics::{ControllerMetrics, Outcome};
use watch::Reflectors;

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
    let router = admin::router(admin::AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let admin = tokio::spawn(
        axum::serve(admin_listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );

    let (reflectors, watches) = Reflectors::start(&client, args.helm_release_version.as_deref());
    for watch in watches {
        let stop = stop.clone();
        tokio::spawn(async move { stop.run_until_cancelled(watch).await });
    }

    let identity = leader::identity();
    let namespace = leader::namespace(args.leader_election_namespace.as_deref());
    tracing::info!(%admin_addr, %identity, lease_namespace = %namespace, "listening");
    let election = leader::Election::start(client.clone(), &namespace, &identity)
        .await
        .context("cannot start leader election")?;

    let reporter = Reporter {
        controller: events::COMPONENT.to_owned(),
        instance: Some(identity),
    };
    let mut controller = Controller {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        reflectors,
        metrics: metrics.clone(),
        reported: Reported::default(),
        awaited: Awaited::default(),
        parallel: usize::from(args.parallel),
    };
    let timing = Timing {
        debounce: args.debounce,
        resync: args.resync,
    };
    let leading = election.leading.clone();
    controller
        .run(leading, &ready, timing, signals.shutdown.cancelled())
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

/// When the loop reconciles besides on changes.
struct Timing {
    /// Changes come in bursts (a Helm upgrade, a relist): one reconcile for the burst.
    debounce: Duration,
    resync: Duration,
}

struct Controller {
    client: Client,
    config: Config,
    reflectors: Reflectors,
    metrics: Arc<ControllerMetrics>,
    recorder: Recorder,
    reported: Reported,
    /// The last reconcile's writes, until the reflectors show them.
    awaited: Awaited,
    parallel: usize,
}

impl Controller {
    /// Reconciles after every change (gathered for `debounce`), every `resync`, and on becoming
    /// the leader, until `signalled`.
    async fn run(
        &mut self,
        mut leading: tokio::sync::watch::Receiver<bool>,
        ready: &AtomicBool,
        timing: Timing,
        signalled: impl Future<Output = ()>,
    ) {
        let mut signalled = std::pin::pin!(signalled);
        let resync_every = timing.resync;
        let mut resync = tokio::time::interval_at(Instant::now() + resync_every, resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changed = self.reflectors.changed.clone();
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            let wake_at = retry.map(|(at, _)| at).or(self.awaited.until());
            tokio::select! {
                () = &mut signalled => return,
                () = changed.notified() => {}
                changed = leading.changed() => {
                    if changed.is_err() {
                        tracing::warn!("leader election ended; no longer writing");
                    }
                    let is_leader = *leading.borrow_and_update();
                    self.metrics.leader.set(i64::from(is_leader));
                    tracing::info!(leader = is_leader, "leadership changed");
                }
                _ = resync.tick() => {}
                () = sleep_until(wake_at), if wake_at.is_some() => {}
            }
            tokio::select! {
                () = &mut signalled => return,
                () = tokio::time::sleep(timing.debounce) => {}
            }
            let settled = self.reflectors.settled();
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

    /// Renders the model, writes the difference, tells the owners.
    async fn reconcile(&mut self) -> Result<(), ReconcileError> {
        let model = self.reflectors.model();
        // Rendering before the reflectors show the last writes would write them again.
        if self.awaited.pending(&model) {
            return Ok(());
        }
        let rendered = render::render(&model, &self.config);
        let plan = plan::plan(&rendered, &model, |kind| self.reflectors.listed(kind));
        let results = apply::execute(&self.client, &plan, self.parallel).await;
        let total = results.len();
        let (written, failures): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        let written: Vec<Written> = written.into_iter().filter_map(Result::ok).collect();
        self.count(&rendered, &written);
        self.awaited = Awaited::of(&written);
        self.report(&rendered, &written, &model).await;
        let failed = failures.len();
        match failures.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some(first) => Err(ReconcileError::Writes {
                failed,
                total,
                first,
            }),
        }
    }

    /// Logs and counts what a reconcile found and wrote.
    fn count(&self, rendered: &Rendered, written: &[Written]) {
        let span = tracing::Span::current();
        span.record("objects", rendered.objects.len());
        span.record("problems", rendered.problems.len());
        let mut counts = [0; 2];
        for write in written {
            let (kind, namespace, name) = (write.kind, &write.namespace, &write.name);
            match write.action {
                apply::Action::Applied => self.metrics.applied(kind),
                apply::Action::Deleted => self.metrics.deleted(kind),
            }
            let action = match write.action {
                apply::Action::Applied => "applied",
                apply::Action::Deleted => "deleted",
            };
            counts[usize::from(write.action == apply::Action::Deleted)] += 1;
            tracing::info!(%kind, %namespace, %name, "{action}");
        }
        span.record("applied", counts[0]);
        span.record("deleted", counts[1]);
    }

    /// Publishes the Events: each new problem once, and what was written per owner.
    async fn report(&mut self, rendered: &Rendered, written: &[Written], model: &Model) {
        let (fresh, conflicts) = self.reported.new_warnings(&rendered.problems);
        self.metrics.conflicts.inc_by(conflicts);
        for note in &fresh {
            tracing::warn!(owner = %note.owner, reason = %note.reason, message = %note.message, "problem");
        }
        // The owner may be gone (a deleted HelmRelease): nobody to tell.
        let addressed: Vec<(Note, ObjectReference)> = fresh
            .into_iter()
            .chain(events::applied_notes(written))
            .filter_map(|note| {
                let regarding = self.regarding(&note.owner, model)?;
                Some((note, regarding))
            })
            .collect();
        // The first reconcile of a large cluster has an Event per owner: several go at once, as
        // the writes do.
        let recorder = &self.recorder;
        let failed: Vec<Note> = futures_util::stream::iter(addressed)
            .map(|(note, regarding)| async move {
                let result = events::publish(recorder, &note, &regarding).await;
                result.err().map(|error| (note, error))
            })
            .buffer_unordered(self.parallel.max(1))
            .filter_map(|failure| async move {
                let (note, error) = failure?;
                tracing::warn!(owner = %note.owner, reason = %note.reason, %error, "cannot write Event");
                Some(note)
            })
            .collect()
            .await;
        for note in &failed {
            self.reported.forget(note);
        }
    }

    /// The reference an Event on `owner` needs, when the model holds it.
    fn regarding(&self, owner: &ObjectRef, model: &Model) -> Option<ObjectReference> {
        let kind = kinds::find(&owner.group, &owner.kind)?;
        Some(ObjectReference {
            api_version: Some(self.reflectors.served(kind)?.api_version()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(owner.namespace.clone()).filter(|n| !n.is_empty()),
            uid: Some(model.uid(owner)?.to_owned()),
            ..ObjectReference::default()
        })
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
