//! The controller's view of the cluster: one store per watched kind, fed by a kube-runtime watcher
//! and by the objects the controller itself has just written, so that a reconcile right after a
//! write compares with what was written rather than with a watch event still on its way (which
//! would write the same object twice).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::kinds::Watched;

/// `namespace/name` within one kind (`""` namespace for cluster-scoped kinds).
pub type Key = (String, String);

/// One kind's objects.
#[derive(Default)]
struct KindStore {
    /// Shared with the snapshots of reconciles in progress: a snapshot of a large cluster copies
    /// pointers, not objects (the objects are most of the controller's memory).
    objects: HashMap<Key, Arc<Value>>,
    /// The objects of a relist in progress: they replace `objects` once complete.
    relist: Option<HashMap<Key, Arc<Value>>>,
    /// A complete list has been seen: the store may be trusted.
    listed: bool,
    /// Listing failed before it ever succeeded (no CRD, no permission).
    failing: bool,
    /// The resourceVersion at which the controller deleted an object, so that a watch event older
    /// than the deletion does not bring it back.
    deleted: HashMap<Key, u64>,
}

/// Every kind's store, and the signal that one of them changed.
#[derive(Default)]
pub struct Stores {
    kinds: Mutex<BTreeMap<Watched, KindStore>>,
    pub changed: Notify,
}

/// What a reconcile reads: a copy of every store at one moment.
pub struct Snapshot {
    pub objects: BTreeMap<Watched, Vec<Arc<Value>>>,
    /// The kinds whose store is complete.
    pub listed: Vec<Watched>,
}

impl Snapshot {
    pub fn listed(&self, kind: Watched) -> bool {
        self.listed.contains(&kind)
    }
}

/// The key of a (projected) object.
pub fn key_of(object: &Value) -> Key {
    let meta = &object["metadata"];
    let text = |field: &str| meta[field].as_str().unwrap_or_default().to_owned();
    (text("namespace"), text("name"))
}

/// An etcd-backed apiserver's resourceVersions are its revision numbers, which only grow. The API
/// calls them opaque, so when one does not parse the newer object cannot be told and the
/// incoming one is taken.
fn resource_version(object: &Value) -> Option<u64> {
    object["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

fn older(incoming: &Value, stored: Option<&Value>) -> bool {
    match (
        resource_version(incoming),
        stored.and_then(resource_version),
    ) {
        (Some(new), Some(old)) => new < old,
        _ => false,
    }
}

impl Stores {
    pub fn new() -> Arc<Stores> {
        let stores = Stores::default();
        {
            let mut kinds = stores.lock();
            for kind in Watched::all() {
                kinds.insert(kind, KindStore::default());
            }
        }
        Arc::new(stores)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Watched, KindStore>> {
        // A panic while holding the lock leaves maps that are still whole; keep using them.
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every kind needed to render has been listed, and every optional kind has either
    /// been listed or failed to list: only then does a reconcile see the whole cluster.
    pub fn settled(&self) -> bool {
        self.lock()
            .iter()
            .all(|(kind, store)| store.listed || (kind.optional() && store.failing))
    }

    pub fn snapshot(&self) -> Snapshot {
        let kinds = self.lock();
        Snapshot {
            objects: kinds
                .iter()
                .map(|(kind, store)| (*kind, store.objects.values().cloned().collect()))
                .collect(),
            listed: kinds
                .iter()
                .filter(|(_, s)| s.listed)
                .map(|(k, _)| *k)
                .collect(),
        }
    }

    /// The stored object of `kind` at `key`, if any.
    pub fn get(&self, kind: Watched, key: &Key) -> Option<Arc<Value>> {
        self.lock().get(&kind)?.objects.get(key).cloned()
    }

    /// Records an object the controller has written (the apiserver's reply, projected).
    pub fn written(&self, kind: Watched, object: Value) {
        let changed = self.apply(kind, object);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Records an object the controller has deleted.
    pub fn deleted(&self, kind: Watched, key: &Key) {
        let mut kinds = self.lock();
        let Some(store) = kinds.get_mut(&kind) else {
            return;
        };
        if let Some(object) = store.objects.remove(key)
            && let Some(rv) = resource_version(&object)
        {
            store.deleted.insert(key.clone(), rv);
        }
    }

    /// Stores `object` unless the store holds a newer version; returns whether anything changed.
    fn apply(&self, kind: Watched, object: Value) -> bool {
        let mut kinds = self.lock();
        let Some(store) = kinds.get_mut(&kind) else {
            return false;
        };
        let key = key_of(&object);
        if let (Some(deleted), Some(rv)) = (store.deleted.get(&key), resource_version(&object))
            && rv <= *deleted
        {
            return false;
        }
        let stored = store.objects.get(&key).map(|o| &**o);
        if older(&object, stored) || stored == Some(&object) {
            return false;
        }
        store.objects.insert(key, Arc::new(object));
        true
    }

    /// One watch event; returns whether the store changed.
    fn event(&self, kind: Watched, event: watcher::Event<DynamicObject>) -> bool {
        let project = |object: &DynamicObject| {
            serde_json::to_value(object)
                .ok()
                .map(|value| (key_of_dynamic(object, kind), kind.project(&value)))
        };
        match event {
            watcher::Event::Init => {
                if let Some(store) = self.lock().get_mut(&kind) {
                    store.relist = Some(HashMap::new());
                }
                false
            }
            watcher::Event::InitApply(object) => {
                if let Some((key, Some(value))) = project(&object)
                    && let Some(store) = self.lock().get_mut(&kind)
                {
                    store
                        .relist
                        .get_or_insert_default()
                        .insert(key, Arc::new(value));
                }
                false
            }
            watcher::Event::InitDone => {
                let mut kinds = self.lock();
                let Some(store) = kinds.get_mut(&kind) else {
                    return false;
                };
                let listed = store.relist.take().unwrap_or_default();
                let changed = !store.listed || listed != store.objects;
                store.objects = listed;
                store.deleted.clear();
                store.listed = true;
                store.failing = false;
                changed
            }
            watcher::Event::Apply(object) => match project(&object) {
                Some((_, Some(value))) => self.apply(kind, value),
                // Now of no interest to `render` (e.g. its mesh annotations were removed).
                Some((key, None)) => self
                    .lock()
                    .get_mut(&kind)
                    .is_some_and(|s| s.objects.remove(&key).is_some()),
                None => false,
            },
            watcher::Event::Delete(object) => {
                let key = key_of_dynamic(&object, kind);
                let mut kinds = self.lock();
                let Some(store) = kinds.get_mut(&kind) else {
                    return false;
                };
                store.deleted.remove(&key);
                store.objects.remove(&key).is_some()
            }
        }
    }

    fn failed(&self, kind: Watched) {
        if let Some(store) = self.lock().get_mut(&kind)
            && !store.listed
        {
            store.failing = true;
        }
    }
}

fn key_of_dynamic(object: &DynamicObject, kind: Watched) -> Key {
    let namespace = if kind.cluster_scoped() {
        String::new()
    } else {
        object.metadata.namespace.clone().unwrap_or_default()
    };
    (namespace, object.metadata.name.clone().unwrap_or_default())
}

/// Backoff of a failing watch: from `MIN` doubling to `MAX`. The maximum bounds how long objects
/// of a CRD installed after start-up take to appear.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(500);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Watches `kind` cluster-wide into `stores` until `stop`; errors (a missing CRD, a lost
/// connection) are logged and retried with backoff, never fatal.
pub async fn watch(client: Client, kind: Watched, stores: Arc<Stores>, stop: CancellationToken) {
    let resource = kind.api_resource();
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    // Pages keep the memory of the initial list bounded.
    let config = watcher::Config::default().page_size(500);
    let mut events = std::pin::pin!(watcher(api, config));
    let mut delay = WATCH_BACKOFF_MIN;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = events.next() => next,
        };
        match next {
            Some(Ok(event)) => {
                delay = WATCH_BACKOFF_MIN;
                if stores.event(kind, event) {
                    stores.changed.notify_one();
                }
            }
            Some(Err(error)) => {
                stores.failed(kind);
                // Without the CRD every retry fails the same way: say it once at info, then debug.
                tracing::warn!(kind = %resource.kind, group = %resource.group, %error, retry_in = ?delay, "watch failed");
                // A failed kind may settle the stores (an optional kind without its CRD).
                stores.changed.notify_one();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(WATCH_BACKOFF_MAX);
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::render::MeshKind;
    use serde_json::json;

    const PA: Watched = Watched::Mesh(MeshKind::PeerAuthentication);

    fn object(name: &str, rv: &str, mode: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "n", "resourceVersion": rv},
               "spec": {"mtls": {"mode": mode}}})
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let stores = Stores::new();
        assert!(stores.apply(PA, object("default", "10", "STRICT")));
        assert!(!stores.apply(PA, object("default", "9", "PERMISSIVE")));
        assert!(!stores.apply(PA, object("default", "10", "STRICT")));
        assert!(stores.apply(PA, object("default", "11", "PERMISSIVE")));
        let key = ("n".to_owned(), "default".to_owned());
        assert_eq!(
            stores.get(PA, &key).unwrap()["spec"]["mtls"]["mode"],
            "PERMISSIVE"
        );
    }

    #[test]
    fn a_deleted_object_is_not_brought_back_by_an_older_event() {
        let stores = Stores::new();
        let key = ("n".to_owned(), "default".to_owned());
        stores.apply(PA, object("default", "10", "STRICT"));
        stores.deleted(PA, &key);
        assert!(!stores.apply(PA, object("default", "10", "STRICT")));
        assert!(stores.get(PA, &key).is_none());
        // A re-created object has a newer version.
        assert!(stores.apply(PA, object("default", "12", "STRICT")));
    }

    #[test]
    fn stores_settle_once_required_kinds_are_listed() {
        let stores = Stores::new();
        assert!(!stores.settled());
        for kind in Watched::all() {
            if kind.optional() {
                stores.failed(kind);
            } else {
                stores.event(kind, watcher::Event::Init);
                stores.event(kind, watcher::Event::InitDone);
            }
        }
        assert!(stores.settled());
        let snapshot = stores.snapshot();
        assert!(snapshot.listed(Watched::Mesh(MeshKind::NetworkPolicy)));
        assert!(!snapshot.listed(PA));
    }
}
