//! `mesh-admission controller` (DESIGN.md section 9): keeps exactly what `render` prints for the
//! cluster's objects applied, and prunes the rest. Wiring around the pure `policy::render`:
//! kube-runtime reflectors keep the model of the mesh (`watch`), a debounced loop renders it and
//! plans the difference (`policy::plan`, pure), then writes (`apply`) and tells the owners
//! (`events`); leader election (`leader`) and the admin port (`admin`) surround it. Nothing about
//! Istio lives here.
//!
//! `render` is global (conflicts across HelmReleases, one PeerAuthentication per namespace), so
//! every reconcile renders the whole model; a plan writes only what differs, so a steady state
//! writes nothing.

pub mod admin;
pub mod apply;
pub mod events;
pub mod leader;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use crate::cli::ControllerArgs;
use crate::config::Config;
use crate::model::{Key, ObjectRef};
use crate::policy::plan;
use crate::policy::render::{self, Rendered};
use admin::ControllerMetrics;
use apply::{WriteError, Written};
use events::Events;
use watch::Reflectors;

/// How long a reconcile waits for the reflectors to show the last one's writes.
const AWAIT: Duration = Duration::from_secs(2);
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
    let listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let admin_addr = listener.local_addr()?;
    let router = admin::router(metrics.clone(), ready.clone());
    let shutdown = stop.clone().cancelled_owned();
    let admin = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .into_future(),
    );

    let reflectors = Reflectors::start(&client, args.helm_release_version.as_deref(), &stop);
    let identity = leader::identity();
    let namespace = leader::namespace(args.leader_election_namespace.as_deref(), &client);
    tracing::info!(%admin_addr, %identity, lease_namespace = %namespace, "listening");
    let election = leader::Election::start(client.clone(), &namespace, &identity)
        .await
        .context("cannot start leader election")?;
    let mut controller = Controller {
        events: Events::new(client.clone(), identity, args.parallel),
        client,
        config,
        reflectors,
        metrics: metrics.clone(),
        awaited: plan::Unseen::default(),
        parallel: usize::from(args.parallel),
        reconciled: Arc::new(tokio::sync::Notify::new()),
    };
    // Its own stop: it holds a receiver of the election, which must be gone before the release.
    let reporting_stop = stop.child_token();
    let reporting = tokio::spawn(crate::live_audit::reports::run(
        controller.client.clone(),
        controller.config.clone(),
        args.report_interval,
        election.leading.clone(),
        controller.reconciled.clone(),
        reporting_stop.clone(),
    ));
    let leading = election.leading.clone();
    let signalled = signals.shutdown.cancelled();
    controller.run(leading, &ready, &args, signalled).await;

    ready.store(false, Ordering::Release);
    reporting_stop.cancel();
    let _ = reporting.await;
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

/// A reconcile some of whose writes failed (the first one named; the others were done). It is
/// retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} writes failed, first: {first}")]
pub struct ReconcileError {
    failed: usize,
    total: usize,
    first: Box<WriteError>,
}

struct Controller {
    client: Client,
    config: Config,
    reflectors: Reflectors,
    metrics: Arc<ControllerMetrics>,
    events: Events,
    /// The last reconcile's writes, until the reflectors show them.
    awaited: plan::Unseen,
    parallel: usize,
    /// Told after each reconcile: the reports follow the same changes.
    reconciled: Arc<tokio::sync::Notify>,
}

impl Controller {
    /// Reconciles after every change (gathered for `--debounce`: changes come in bursts, a Helm
    /// upgrade, a relist), every `--resync`, and on becoming the leader, until `signalled`.
    async fn run(
        &mut self,
        mut leading: tokio::sync::watch::Receiver<bool>,
        ready: &AtomicBool,
        args: &ControllerArgs,
        signalled: impl Future<Output = ()>,
    ) {
        let mut signalled = std::pin::pin!(signalled);
        let mut resync = tokio::time::interval_at(Instant::now() + args.resync, args.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changed = self.reflectors.changed.clone();
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            let wake_at = retry
                .map(|(at, _)| at)
                .or(self.awaited.until.map(Instant::from_std));
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
                () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {}
            }
            tokio::select! {
                () = &mut signalled => return,
                () = tokio::time::sleep(args.debounce) => {}
            }
            let settled = self.reflectors.settled();
            ready.store(settled, Ordering::Release);
            if !settled || !*leading.borrow() {
                continue;
            }
            let span = tracing::info_span!(
                "reconcile",
                objects = Empty,
                problems = Empty,
                writes = Empty
            );
            let result = self.reconcile().instrument(span).await;
            self.metrics.reconciled(result.is_ok());
            self.reconciled.notify_one();
            retry = match result {
                Ok(()) => None,
                Err(error) => {
                    let delay = retry.map_or(RETRY_MIN, |(_, d)| (d * 2).min(RETRY_MAX));
                    tracing::warn!(%error, retry_in = ?delay, "reconcile failed");
                    Some((Instant::now() + delay, delay))
                }
            };
        }
    }

    /// Renders the model, writes the difference, tells the owners.
    async fn reconcile(&mut self) -> Result<(), ReconcileError> {
        let model = self.reflectors.model();
        // Planning before the reflectors show the last writes would write them again.
        if self.awaited.pending(&model, std::time::Instant::now()) {
            return Ok(());
        }
        let rendered = render::render(&model, &self.config);
        let plan = plan::plan(&rendered, &model, |kind| self.reflectors.listed(kind));
        let results = apply::execute(&self.client, plan, self.parallel).await;
        let total = results.len();
        let (written, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        let written: Vec<Written> = written.into_iter().filter_map(Result::ok).collect();
        self.record(&rendered, &written);
        let awaited = written.iter().filter_map(Written::awaited).collect();
        self.awaited = plan::Unseen::new(awaited, std::time::Instant::now() + AWAIT);
        // A deleted HelmRelease has nobody to tell.
        let reflectors = &self.reflectors;
        let version = |kind| Some(reflectors.served(kind)?.api_version());
        let regarding = |owner: &ObjectRef| model.reference(owner, version);
        let (notes, conflicts) = self.events.notes(&rendered, &written, regarding);
        self.metrics.conflicts.inc_by(conflicts);
        // Publishing takes a while in a large cluster: the model and the render go first.
        drop((rendered, model, written));
        self.events.publish(notes).await;
        let count = failed.len();
        match failed.into_iter().find_map(Result::err).map(Box::new) {
            Some(first) => Err(ReconcileError {
                failed: count,
                total,
                first,
            }),
            None => Ok(()),
        }
    }

    /// Logs and counts what a reconcile found and wrote.
    fn record(&self, rendered: &Rendered, written: &[Written]) {
        let span = tracing::Span::current();
        span.record("objects", rendered.objects.len());
        span.record("problems", rendered.problems.len());
        span.record("writes", written.len());
        for write in written {
            let Key {
                kind,
                namespace,
                name,
            } = &write.key;
            self.metrics.written(write.action, kind);
            tracing::info!(%kind, %namespace, %name, "{}", write.action.as_str());
        }
    }
}
