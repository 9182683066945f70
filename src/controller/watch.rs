//! The controller's view of the cluster: one kube-runtime reflector per kind `render` reads or
//! generates (the kinds table says which), each keeping its objects as the model's own types, so a
//! reconcile builds the model from the stores by sharing their objects, not copying them.
//!
//! An object `render` would ignore (a HelmRelease without mesh annotations, a workload whose pods
//! carry none, a Pod or ReplicaSet another object owns) is not kept, and an update that leaves what
//! the model holds of an object unchanged (a Deployment's status) wakes nobody.

use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::cluster::served_version;
use crate::model::{KindVisitor, Model, Served, Stored, with_type};
use crate::policy::kinds::{self, Kind};

/// Every watched kind's store, and the signal that one of them changed.
pub struct Reflectors {
    kinds: Vec<Reflected>,
    pub changed: Arc<Notify>,
}

/// One kind's store, whatever its type, and how its watch is doing.
struct Reflected {
    kind: &'static Kind,
    state: Arc<Mutex<WatchState>>,
    add_to: Box<dyn Fn(&mut Model) + Send + Sync>,
}

#[derive(Default)]
struct WatchState {
    /// The version served, once known (asked of the API for a HelmRelease).
    version: Option<Arc<str>>,
    /// A complete list has been seen: the store may be trusted.
    listed: bool,
    /// Listing failed before it ever succeeded (no CRD, no permission).
    failing: bool,
}

fn lock(state: &Mutex<WatchState>) -> std::sync::MutexGuard<'_, WatchState> {
    // A panic while holding the lock leaves a state that is still whole.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a typed reflector for a kind.
struct Start<'a>(
    &'a Client,
    Option<&'a str>,
    &'a Arc<Notify>,
    &'a CancellationToken,
);

impl KindVisitor for Start<'_> {
    type Output = Reflected;

    fn visit<T: Stored>(self, kind: &'static Kind) -> Reflected {
        let Start(client, helm_release_version, changed, stop) = self;
        let writer = reflector::store::Writer::<T>::new(store_key(kind));
        let store = writer.as_reader();
        let state = Arc::new(Mutex::new(WatchState::default()));
        let version = helm_release_version.map(str::to_owned);
        let task = watch(
            client.clone(),
            kind,
            version,
            writer,
            state.clone(),
            changed.clone(),
        );
        let add_to = Box::new(move |model: &mut Model| {
            for object in store.state() {
                model.add(kind, object);
            }
        });
        tokio::spawn(stop.clone().run_until_cancelled_owned(task));
        Reflected {
            kind,
            state,
            add_to,
        }
    }
}

impl Reflectors {
    /// Watches every kind `render` reads or generates, until `stop`.
    pub fn start(client: &Client, version: Option<&str>, stop: &CancellationToken) -> Self {
        let changed = Arc::new(Notify::new());
        let start = |kind| with_type(kind, Start(client, version, &changed, stop));
        let kinds = kinds::rendered().filter_map(start).collect();
        Reflectors { kinds, changed }
    }

    /// Whether every kind needed to render has been listed, and every optional kind has either
    /// been listed or failed to list: only then does a reconcile see the whole cluster.
    pub fn settled(&self) -> bool {
        self.kinds.iter().all(|r| {
            let state = lock(&r.state);
            state.listed || (r.kind.optional && state.failing)
        })
    }

    /// Whether `kind`'s store is complete (an Istio kind without its CRD is not).
    pub fn listed(&self, kind: &Kind) -> bool {
        self.kinds
            .iter()
            .any(|r| r.kind == kind && lock(&r.state).listed)
    }

    /// The model of what the stores hold now.
    pub fn model(&self) -> Model {
        let mut model = Model::default();
        for reflected in &self.kinds {
            (reflected.add_to)(&mut model);
        }
        model
    }

    /// The kind and version a watched kind is served as, once known.
    pub fn served(&self, kind: &Kind) -> Option<Served> {
        let reflected = self.kinds.iter().find(|r| r.kind == kind)?;
        let version = lock(&reflected.state).version.clone()?;
        Some(Served {
            kind: reflected.kind,
            version,
        })
    }
}

/// What a store keys its objects by besides namespace and name: the kind alone, since the version
/// a HelmRelease is served in is known only once the API has been asked.
fn store_key(kind: &'static Kind) -> Served {
    Served::new(kind, "")
}

/// Watches `kind` cluster-wide into `writer` for ever: errors (a missing CRD, a lost connection)
/// are retried with kube-runtime's default backoff, and logged once each until they change.
async fn watch<T: Stored>(
    client: Client,
    kind: &'static Kind,
    configured: Option<String>,
    writer: reflector::store::Writer<T>,
    state: Arc<Mutex<WatchState>>,
    changed: Arc<Notify>,
) {
    let version = match kind.watched_version() {
        Some(version) => version.to_owned(),
        None => helm_release_version(&client, kind, configured).await,
    };
    let served = Served::new(kind, &version);
    lock(&state).version = Some(served.version.clone());
    tracing::info!(kind = kind.kind, version = %served.api_version(), "watching");
    let reader = writer.as_reader();
    let events = watcher(
        Api::<T>::all_with(client, &served),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(T::trim);
    let mut events = std::pin::pin!(only_changes(events, reader, kind).reflect(writer));
    let mut last_error: Option<String> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::InitDone) => {
                if last_error.take().is_some() {
                    tracing::info!(kind = kind.kind, "watch recovered");
                }
                let mut state = lock(&state);
                (state.listed, state.failing) = (true, false);
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {}
            Err(error) => {
                let mut state = lock(&state);
                state.failing |= !state.listed;
                // Without the CRD every retry fails alike: said once, and again when it changes.
                let error = error.to_string();
                if last_error.as_ref() != Some(&error) {
                    let message = "watch failed; retrying with backoff";
                    match kind.optional {
                        true => tracing::info!(kind = kind.kind, %error, "{message}"),
                        false => tracing::warn!(kind = kind.kind, %error, "{message}"),
                    }
                    last_error = Some(error);
                }
            }
        }
        // A failed optional kind may settle the stores too.
        changed.notify_one();
    }
}

/// The watcher's events less those that change nothing the model holds: an object `render` would
/// ignore is dropped (or removed, if it was kept before), an update equal to what is kept is
/// dropped.
fn only_changes<T: Stored>(
    events: impl Stream<Item = Result<watcher::Event<T>, watcher::Error>>,
    store: Store<T>,
    kind: &'static Kind,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> {
    events.filter_map(move |event| {
        let kept = |object: &T| store.get(&object.to_object_ref(store_key(kind)));
        let event = match event {
            Ok(watcher::Event::InitApply(object)) if !object.rendered() => None,
            Ok(watcher::Event::Apply(object)) if !object.rendered() => kept(&object)
                .is_some()
                .then_some(Ok(watcher::Event::Delete(object))),
            Ok(watcher::Event::Apply(object))
                if kept(&object).is_some_and(|k| k.same_as(&object, kind)) =>
            {
                None
            }
            other => Some(other),
        };
        std::future::ready(event)
    })
}

/// The configured HelmRelease version, or the one the API prefers (asked until it answers).
async fn helm_release_version(client: &Client, kind: &Kind, configured: Option<String>) -> String {
    let mut delay = std::time::Duration::from_millis(500);
    let mut last_error = None;
    loop {
        let error = match served_version(client, kind, configured.as_deref()).await {
            Ok(version) => return version,
            Err(error) => error.to_string(),
        };
        if last_error.as_ref() != Some(&error) {
            tracing::warn!(kind = kind.kind, %error, "cannot find the served version; retrying");
            last_error = Some(error);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}
