//! Which workloads are meshed (DESIGN.md section 4: injected and not opted out of SPIRE), judged on
//! the objects as admission stores them: a namespace with the injection label the Namespace table
//! gives it, pods with the labels the Pod table adds. Offline manifests (not yet admitted) and
//! stored objects (admitted) so give the same answer.

use std::sync::Arc;

use crate::config::Config;
use crate::model::core::Workload;
use crate::model::{Labels, Model};
use crate::policy::kinds;
use crate::policy::namespace;
use crate::policy::pod::{self, INJECT_KEY, InjectChoice, Meshing, meshing};

/// A workload whose pods are injected with a SPIRE identity.
#[derive(Debug)]
pub struct Meshed<'m> {
    pub workload: &'m Arc<Workload>,
    /// Its pods' labels as admission stores them.
    pub pod_labels: Labels,
}

/// The labels of `namespace` as stored: its own (none when the input has no such Namespace), the
/// injection label the Namespace table adds, and the name label the apiserver adds.
pub fn namespace_labels(model: &Model, namespace: &str, cfg: &Config) -> Labels {
    let own = model
        .namespaces
        .get(&kinds::NAMESPACE, "", namespace)
        .map(|ns| ns.metadata.labels.clone())
        .unwrap_or_default();
    namespace::stored_labels(namespace, &own, cfg)
}

/// Whether the Pod webhooks (as `webhook-config` registers them, and as Istio selects pods) are
/// called for a pod with `labels` in a namespace with `namespace_labels`.
fn reaches_webhook(labels: &Labels, namespace_labels: &Labels, cfg: &Config) -> bool {
    let label = &cfg.namespace_label;
    let inject = labels.get(INJECT_KEY);
    match namespace_labels.get(&label.key) {
        Some(value) => value == label.value && inject != Some("false"),
        None => inject == Some("true"),
    }
}

/// The workloads the rules look at: those no other workload of the input owns (a Deployment, not
/// its ReplicaSets and Pods).
pub fn top_level(model: &Model) -> impl Iterator<Item = &Arc<Workload>> {
    model.workloads.iter().map(|(_, w)| w).filter(move |w| {
        let owners = w.metadata.owner_references.iter().flatten();
        !owners.into_iter().any(|owner| {
            model
                .workloads
                .in_namespace(w.namespace())
                .any(|(key, _)| key.kind.kind == owner.kind && key.name == owner.name)
        })
    })
}

/// What section 4 makes of a workload's pods, and their labels as stored.
pub fn decide(model: &Model, workload: &Workload, cfg: &Config) -> (Meshing, Labels) {
    let template = &workload.template;
    let labels = &template.metadata.labels;
    let namespace = workload.namespace();
    if !reaches_webhook(labels, &namespace_labels(model, namespace, cfg), cfg) {
        return (Meshing::Untouched, labels.clone());
    }
    let inject = InjectChoice::from_values(
        labels.get(INJECT_KEY),
        template.metadata.annotations.get(INJECT_KEY),
    );
    let host_network = template.spec.host_network == Some(true);
    let spire_label = labels.get(&cfg.spire_identity_label);
    let decided = meshing(namespace, host_network, inject, spire_label, cfg);
    if decided == Meshing::Untouched {
        return (decided, labels.clone());
    }
    (decided, pod::stored_labels(labels, cfg))
}

/// Every top-level workload whose pods get a SPIRE identity.
pub fn meshed<'m>(model: &'m Model, cfg: &Config) -> Vec<Meshed<'m>> {
    top_level(model)
        .filter_map(|workload| match decide(model, workload, cfg) {
            (Meshing::Spire, pod_labels) => Some(Meshed {
                workload,
                pod_labels,
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(namespace: &str, labels: Value, extra: Value) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace, "labels": labels}, "spec": {}});
        if let Some(spec) = extra.as_object() {
            for (k, v) in spec {
                pod["spec"][k] = v.clone();
            }
        }
        pod
    }

    /// Section 4's rows, and the webhook's selectors, decide which workloads are meshed.
    #[test]
    fn meshed_workloads_table() {
        let cfg = Config::default();
        let namespaces = [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "off", "labels": {"istio-injection": "disabled"}}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rev", "labels": {"istio.io/rev": "canary"}}}),
        ];
        let rows: Vec<(&str, Value, Meshing)> = vec![
            (
                "an unlabelled namespace is labelled by admission",
                pod("shop", json!({}), json!({})),
                Meshing::Spire,
            ),
            (
                "opted out of injection",
                pod(
                    "shop",
                    json!({"sidecar.istio.io/inject": "false"}),
                    json!({}),
                ),
                Meshing::Untouched,
            ),
            (
                "opted out of SPIRE",
                pod(
                    "shop",
                    json!({"spire-managed-identity": "False"}),
                    json!({}),
                ),
                Meshing::WithoutSpire,
            ),
            (
                "host network",
                pod("shop", json!({}), json!({"hostNetwork": true})),
                Meshing::Untouched,
            ),
            (
                "excluded namespace",
                pod(
                    "istio-system",
                    json!({"sidecar.istio.io/inject": "true"}),
                    json!({}),
                ),
                Meshing::Untouched,
            ),
            (
                "namespace disabled: an explicit choice",
                pod("off", json!({"sidecar.istio.io/inject": "true"}), json!({})),
                Meshing::Untouched,
            ),
            (
                "revision namespace, no opt-in",
                pod("rev", json!({}), json!({})),
                Meshing::Untouched,
            ),
            (
                "revision namespace, opted in",
                pod("rev", json!({"sidecar.istio.io/inject": "true"}), json!({})),
                Meshing::Spire,
            ),
        ];
        for (case, object, want) in rows {
            let mut inputs = namespaces.to_vec();
            inputs.push(object);
            let model = Model::from_manifests(&inputs);
            let (_, workload) = model.workloads.iter().next().unwrap();
            let (got, labels) = decide(&model, workload, &cfg);
            assert_eq!(got, want, "{case}");
            if got == Meshing::Spire {
                assert_eq!(labels.get("spire-managed-identity"), Some("true"), "{case}");
                assert_eq!(labels.get(INJECT_KEY), Some("true"), "{case}");
            }
        }
    }

    #[test]
    fn owned_workloads_are_judged_through_their_owner() {
        let model = Model::from_manifests(&[
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}}),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "shop",
                   "ownerReferences": [{"kind": "Deployment", "name": "web"}]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "namespace": "shop",
                   "ownerReferences": [{"kind": "ReplicaSet", "name": "gone"}]}}),
        ]);
        let names: Vec<&str> = top_level(&model).map(|w| w.name()).collect();
        assert_eq!(names, ["orphan", "web"]);
        assert_eq!(
            namespace_labels(&model, "shop", &Config::default()),
            Labels::from([
                ("istio-injection", "enabled"),
                (namespace::NAMESPACE_NAME_LABEL, "shop")
            ])
        );
    }
}
