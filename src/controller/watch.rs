//! The controller's view of the cluster: one kube-runtime reflector per kind `render` reads or
//! generates (the kinds table says which), each keeping its objects as the model's own types, so a
//! reconcile builds the model from the stores by sharing their objects, not copying them.
//!
//! An object `render` would ignore (a HelmRelease without mesh annotations, a workload whose pods
//! carry none, a Pod or ReplicaSet another object owns) is not kept, and an update that leaves what
//! the model holds of an object unchanged (a Deployment's status) wakes nobody.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::model::{KindVisitor, Model, Served, Stored, with_type};
use crate::policy::kinds::{self, HELM_RELEASE, Kind};

/// Every watched kind's store, and the signal that one of them changed.
pub struct Reflectors {
    kinds: Vec<Box<dyn Reflected>>,
    pub changed: Arc<Notify>,
}

/// One kind's store, whatever its type.
trait Reflected: Send + Sync {
    fn kind(&self) -> &'static Kind;
    fn state(&self) -> &WatchState;
    fn add_to(&self, model: &mut Model);
    fn served(&self) -> Option<Served>;
}

/// How one kind's watch is doing.
#[derive(Default)]
pub struct WatchState {
    /// A complete list has been seen: the store may be trusted.
    listed: AtomicBool,
    /// Listing failed before it ever succeeded (no CRD, no permission).
    failing: AtomicBool,
    /// The version served, once known (discovered for a HelmRelease).
    served: Mutex<Option<Served>>,
}

struct Reflection<T: Stored> {
    kind: &'static Kind,
    store: Store<T>,
    state: Arc<WatchState>,
}

impl<T: Stored> Reflected for Reflection<T> {
    fn kind(&self) -> &'static Kind {
        self.kind
    }

    fn state(&self) -> &WatchState {
        &self.state
    }

    fn add_to(&self, model: &mut Model) {
        for object in self.store.state() {
            model.add(self.kind, object);
        }
    }

    fn served(&self) -> Option<Served> {
        lock(&self.state.served).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a value that is still whole.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a kind's watch task comes from: started by [`Reflectors::start`].
type WatchTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts a typed reflector for a kind.
struct Start<'a> {
    client: &'a Client,
    helm_release_version: Option<&'a str>,
    changed: &'a Arc<Notify>,
}

impl KindVisitor for Start<'_> {
    type Output = (Box<dyn Reflected>, WatchTask);

    fn visit<T: Stored>(self, kind: &'static Kind) -> Self::Output {
        let writer = reflector::store::Writer::<T>::new(store_key(kind));
        let store = writer.as_reader();
        let state = Arc::new(WatchState::default());
        let task = watch::<T>(
            self.client.clone(),
            kind,
            self.helm_release_version.map(str::to_owned),
            writer,
            state.clone(),
            self.changed.clone(),
        );
        let reflected = Reflection { kind, store, state };
        (Box::new(reflected), Box::pin(task))
    }
}

impl Reflectors {
    /// Watches every kind `render` reads or generates, until the returned tasks are dropped.
    pub fn start(
        client: &Client,
        helm_release_version: Option<&str>,
    ) -> (Reflectors, Vec<WatchTask>) {
        let changed = Arc::new(Notify::new());
        let mut reflected = Vec::new();
        let mut tasks = Vec::new();
        for kind in kinds::rendered() {
            let start = Start {
                client,
                helm_release_version,
                changed: &changed,
            };
            if let Some((store, task)) = with_type(kind, start) {
                reflected.push(store);
                tasks.push(task);
            }
        }
        let reflectors = Reflectors {
            kinds: reflected,
            changed,
        };
        (reflectors, tasks)
    }

    /// Whether every kind needed to render has been listed, and every optional kind has either
    /// been listed or failed to list: only then does a reconcile see the whole cluster.
    pub fn settled(&self) -> bool {
        self.kinds.iter().all(|r| {
            let state = r.state();
            state.listed.load(Ordering::Acquire)
                || (r.kind().optional && state.failing.load(Ordering::Acquire))
        })
    }

    /// Whether `kind`'s store is complete (an Istio kind without its CRD is not).
    pub fn listed(&self, kind: &Kind) -> bool {
        self.kinds
            .iter()
            .any(|r| r.kind() == kind && r.state().listed.load(Ordering::Acquire))
    }

    /// The model of what the stores hold now.
    pub fn model(&self) -> Model {
        let mut model = Model::default();
        for reflected in &self.kinds {
            reflected.add_to(&mut model);
        }
        model
    }

    /// The kind and version a watched kind is served as, once known.
    pub fn served(&self, kind: &Kind) -> Option<Served> {
        self.kinds.iter().find(|r| r.kind() == kind)?.served()
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
    helm_release_version: Option<String>,
    writer: reflector::store::Writer<T>,
    state: Arc<WatchState>,
    changed: Arc<Notify>,
) {
    let version = served_version(&client, kind, helm_release_version, &state).await;
    let served = Served::new(kind, &version);
    *lock(&state.served) = Some(served.clone());
    tracing::info!(kind = kind.kind, version = %served.api_version(), "watching");
    let reader = writer.as_reader();
    let api: Api<T> = Api::all_with(client, &served);
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(T::trim);
    let events = only_changes(events, reader, store_key(kind));
    let mut events = std::pin::pin!(events.reflect(writer));
    let mut last_error: Option<String> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                if last_error.take().is_some() {
                    tracing::info!(kind = kind.kind, "watch recovered");
                }
                state.listed.store(true, Ordering::Release);
                state.failing.store(false, Ordering::Release);
                changed.notify_one();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => changed.notify_one(),
            Err(error) => {
                if !state.listed.load(Ordering::Acquire) {
                    state.failing.store(true, Ordering::Release);
                }
                // Without the CRD every retry fails alike: said once, and again when it changes.
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    if kind.optional {
                        tracing::info!(kind = kind.kind, error = %text, "watch failed; retrying with backoff");
                    } else {
                        tracing::warn!(kind = kind.kind, error = %text, "watch failed; retrying with backoff");
                    }
                    last_error = Some(text);
                }
                // A failed optional kind may settle the stores.
                changed.notify_one();
            }
        }
    }
}

/// The watcher's events less those that change nothing the model holds: an object `render` would
/// ignore is dropped (or removed, if it was kept before), an update equal to what is kept is
/// dropped.
fn only_changes<T: Stored>(
    events: impl Stream<Item = Result<watcher::Event<T>, watcher::Error>>,
    store: Store<T>,
    key: Served,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> {
    events.filter_map(move |event| {
        let kept = |object: &T| store.get(&object.to_object_ref(key.clone()));
        let event = match event {
            Ok(watcher::Event::InitApply(object)) if !object.rendered() => None,
            Ok(watcher::Event::Apply(object)) if !object.rendered() => kept(&object)
                .is_some()
                .then_some(Ok(watcher::Event::Delete(object))),
            Ok(watcher::Event::Apply(object))
                if kept(&object).is_some_and(|k| same(k.as_ref(), &object)) =>
            {
                None
            }
            other => Some(other),
        };
        std::future::ready(event)
    })
}

/// Whether two versions of an object hold the same for the model. The resourceVersion changes on
/// every write; the generated kinds' plan reads it, the others never do.
fn same<T: Stored>(kept: &T, incoming: &T) -> bool {
    let mut incoming = incoming.clone();
    incoming.meta_mut().resource_version = kept.meta().resource_version.clone();
    *kept == incoming
}

/// The version to watch `kind` in: the configured or served one for a HelmRelease (asked until
/// the API answers), the one `render` writes for a generated kind, else the table's.
async fn served_version(
    client: &Client,
    kind: &'static Kind,
    configured: Option<String>,
    state: &WatchState,
) -> String {
    if *kind != HELM_RELEASE {
        let version = kind.generated_version().or(kind.versions.first().copied());
        return version.unwrap_or("v1").to_owned();
    }
    if let Some(version) = configured {
        return version;
    }
    let mut delay = std::time::Duration::from_millis(500);
    let mut last_error = None;
    loop {
        match kube::discovery::group(client, kind.group).await {
            Ok(group) => {
                if let Some((resource, _)) = group.recommended_kind(kind.kind) {
                    return resource.version;
                }
                last_error = Some(format!("{} is not served by {}", kind.kind, kind.group));
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(kind = kind.kind, error = %text, "cannot find the served version; retrying");
                    last_error = Some(text);
                }
            }
        }
        state.failing.store(true, Ordering::Release);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}
