//! Namespaces, HelmReleases, Services and workloads as the rules read them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::labels::Labels;
use super::object::{Object, Unread, or_default};
use super::selector::LabelSelector;
use crate::policy::helmrelease::PREFIX;
use crate::policy::kinds::Kind;

/// A Namespace: its name and labels.
pub type Namespace = Object<Unread>;

/// A Flux HelmRelease of any version: its mesh annotations and target namespace.
pub type HelmRelease = Object<HelmReleaseSpec>;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    #[serde(default)]
    pub target_namespace: Option<String>,
}

/// Whether an object's annotations (or a pod template's) carry a `servicemesh.bigbang.dev/` key.
pub fn has_mesh_annotation(annotations: &Labels) -> bool {
    annotations.keys().any(|k| k.starts_with(PREFIX))
}

impl HelmRelease {
    /// Drops what no rule reads: labels, and annotations outside `servicemesh.bigbang.dev/`.
    pub fn keep_mesh_annotations(&mut self) {
        self.metadata.labels = Labels::default();
        let annotations = &self.metadata.annotations;
        self.metadata.annotations = annotations.filtered(|key, _| key.starts_with(PREFIX));
    }
}

/// A Service: its pod selector and ports.
pub type Service = Object<ServiceSpec>;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    #[serde(default, deserialize_with = "or_default")]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    /// Wider than the API's `int32`, so that a number out of range is reported, not unreadable.
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub target_port: Option<PortRef>,
    #[serde(default)]
    pub protocol: Option<String>,
}

/// A port by number or by a container port's name (`targetPort`, a NetworkPolicy's `port`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(i64),
    Name(String),
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// A pod template: the labels and annotations its pods get, and what of their spec the rules
/// read.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct PodTemplate {
    #[serde(default, deserialize_with = "or_default")]
    pub metadata: TemplateMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TemplateMeta {
    #[serde(default, deserialize_with = "or_default")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "or_default")]
    pub annotations: Labels,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub containers: Vec<Container>,
    #[serde(default, deserialize_with = "or_default")]
    pub init_containers: Vec<Container>,
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// The deprecated spelling, still honoured by the API when the other is absent.
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub ports: Vec<ContainerPort>,
    /// `Always` on an init container makes it a native sidecar, serving as long as the pod.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
}

impl PodTemplate {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key)
    }

    /// The ports its pods serve: every `containerPort` of its containers and of its native
    /// sidecars (init containers that run as long as the pod), as numbers 1-65535.
    pub fn declared_ports(&self) -> std::collections::BTreeSet<u16> {
        let sidecars = self
            .spec
            .init_containers
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        self.spec
            .containers
            .iter()
            .chain(sidecars)
            .flat_map(|c| &c.ports)
            .filter_map(|p| p.container_port.and_then(|n| u16::try_from(n).ok()))
            .filter(|n| *n > 0)
            .collect()
    }

    /// The service account its pods run as (`default` when none is named).
    pub fn service_account(&self) -> &str {
        let spec = &self.spec;
        spec.service_account_name
            .as_deref()
            .or(spec.service_account.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }
}

/// A Deployment, StatefulSet, DaemonSet, ReplicaSet or Job as read: selector and template.
pub type Templated = Object<TemplatedSpec>;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TemplatedSpec {
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default, deserialize_with = "or_default")]
    pub template: PodTemplate,
}

/// A CronJob as read: the template of its Jobs' pods.
pub type CronJob = Object<CronJobSpec>;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub job_template: JobTemplate,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct JobTemplate {
    #[serde(default, deserialize_with = "or_default")]
    pub spec: TemplatedSpec,
}

/// A bare Pod as read: its own labels and annotations are its template's.
pub type Pod = Object<PodSpec>;

/// A workload as the rules see it: the object (its kind, name, namespace, owners) and the pod
/// template its pods are made from (a Pod is its own template).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: &'static Kind,
    /// Name, namespace, uid and owner references; labels and annotations are the template's.
    pub metadata: ObjectMeta,
    /// `None` for a Pod, which is selected by its own labels.
    pub selector: Option<LabelSelector>,
    pub template: PodTemplate,
}

impl Workload {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// Whether another object (a ReplicaSet's Deployment, a Pod's ReplicaSet) owns it: then its
    /// owner is the workload the rules look at.
    pub fn is_owned(&self) -> bool {
        self.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| !o.is_empty())
    }

    /// Whether its pods carry mesh annotations: all that `render` looks at workloads for.
    pub fn has_mesh_annotation(&self) -> bool {
        has_mesh_annotation(&self.template.metadata.annotations)
    }

    pub fn of_templated(kind: &'static Kind, object: &Templated) -> Workload {
        Workload {
            kind,
            metadata: identity(&object.metadata.identity),
            selector: object.spec.selector.clone(),
            template: object.spec.template.clone(),
        }
    }

    pub fn of_cron_job(kind: &'static Kind, object: &CronJob) -> Workload {
        let spec = &object.spec.job_template.spec;
        Workload {
            kind,
            metadata: identity(&object.metadata.identity),
            selector: spec.selector.clone(),
            template: spec.template.clone(),
        }
    }

    pub fn of_pod(kind: &'static Kind, pod: &Pod) -> Workload {
        Workload {
            kind,
            metadata: identity(&pod.metadata.identity),
            selector: None,
            template: PodTemplate {
                metadata: TemplateMeta {
                    labels: pod.metadata.labels.clone(),
                    annotations: pod.metadata.annotations.clone(),
                },
                spec: pod.spec.clone(),
            },
        }
    }
}

/// An object's name, namespace, uid and owners.
fn identity(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        owner_references: meta.owner_references.clone(),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::kinds;
    use serde_json::json;

    #[test]
    fn a_cron_job_and_a_pod_are_workloads_with_their_templates() {
        let cron: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "apps"},
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"app": "n"}},
                "spec": {"serviceAccountName": "batch", "containers": [{"name": "c", "image": "x"}]}}}}},
        }))
        .unwrap();
        let workload = Workload::of_cron_job(&kinds::CRON_JOB, &cron);
        assert_eq!(workload.template.service_account(), "batch");
        assert_eq!(
            workload.template.metadata.labels,
            Labels::from([("app", "n")])
        );

        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"app": "p"}, "ownerReferences": [{"kind": "ReplicaSet"}]},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}, {"containerPort": 70000}]}],
                     "initContainers": [{"name": "s", "restartPolicy": "Always", "ports": [{"containerPort": 15000}]},
                                        {"name": "i", "ports": [{"containerPort": 9}]}]},
        }))
        .unwrap();
        let workload = Workload::of_pod(&kinds::POD, &pod);
        assert!(workload.is_owned());
        assert_eq!(workload.template.service_account(), "default");
        assert_eq!(
            workload
                .template
                .declared_ports()
                .into_iter()
                .collect::<Vec<_>>(),
            [8080, 15000]
        );
    }

    #[test]
    fn a_helm_release_keeps_only_its_mesh_annotations() {
        let mut release: HelmRelease = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"a": "b"},
                "annotations": {"servicemesh.bigbang.dev/expose": "web", "flux": "x"}},
            "spec": {"targetNamespace": "t", "values": {"big": [1, 2, 3]}},
        }))
        .unwrap();
        release.keep_mesh_annotations();
        assert_eq!(release.spec.target_namespace.as_deref(), Some("t"));
        assert!(release.metadata.labels.is_empty());
        let kept = Labels::from([("servicemesh.bigbang.dev/expose", "web")]);
        assert_eq!(release.metadata.annotations, kept);
    }
}
