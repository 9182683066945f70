//! Pod mutation (DESIGN.md section 4, "Pods"): give every meshed pod its SPIRE identity.
//!
//! Reads like the contract: decide whether the pod is injected at all, then (1) the inject label,
//! (2) the SPIRE identity label, (3) the istiod templates annotation, (4) the SPIFFE CSI
//! `workload-socket` volume and, on request, its mounts.

use std::fmt;

use serde_json::{Value, json};

use super::object::{DecodeError, ObjectMeta, Pod, PodSpec, Volume};
use super::patch::{MapEdit, add, pointer, remove, replace};
use super::{Mutation, warning};
use crate::config::Config;
use crate::model::Labels;

/// Istio's per-pod injection switch, as a label (which wins) or an annotation.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// The istiod templates a pod is rendered with, merged in order.
pub const TEMPLATES_ANNOTATION: &str = "inject.istio.io/templates";
/// Asks for the Workload API socket to be mounted at this path in the application containers.
pub const WORKLOAD_API_MOUNT_ANNOTATION: &str = "spiffe.io/workload-api-mount";
/// The container istiod's template adds; it mounts the socket itself.
pub const ISTIO_PROXY_CONTAINER: &str = "istio-proxy";

/// What a pod says about sidecar injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectChoice<'a> {
    Unset,
    Enabled,
    Disabled,
    /// Neither `true` nor `false`: Istio 1.27+ ignores the value and applies the namespace default.
    Unrecognised(&'a str),
}

impl<'a> InjectChoice<'a> {
    /// The label wins over the annotation, as in Istio.
    pub fn of(meta: &'a ObjectMeta<'_>) -> Self {
        Self::from_values(meta.label(INJECT_KEY), meta.annotation(INJECT_KEY))
    }

    /// From the pod's `sidecar.istio.io/inject` label and annotation; the label wins.
    pub fn from_values(label: Option<&'a str>, annotation: Option<&'a str>) -> Self {
        match label.or(annotation) {
            None => InjectChoice::Unset,
            Some(v) if v.eq_ignore_ascii_case("true") => InjectChoice::Enabled,
            Some(v) if v.eq_ignore_ascii_case("false") => InjectChoice::Disabled,
            Some(v) => InjectChoice::Unrecognised(v),
        }
    }
}

/// What the Pod table makes of a pod, before any patch: the one decision the webhook, `audit` (which
/// workloads are meshed) and `graph` (which have a sidecar) share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meshing {
    /// Not injected: an excluded namespace, the host network, or `sidecar.istio.io/inject=false`.
    Untouched,
    /// Injected, but opted out of SPIRE (its identity label is `false`): no template, no volume.
    WithoutSpire,
    /// Injected, with a SPIRE identity.
    Spire,
}

/// Decides the Pod table's first rows and step 2's opt-out for a pod in `namespace`;
/// `spire_label` is the pod's own value of the configured SPIRE identity label.
pub fn meshing(
    namespace: &str,
    host_network: bool,
    inject: InjectChoice<'_>,
    spire_label: Option<&str>,
    cfg: &Config,
) -> Meshing {
    if cfg.is_excluded_namespace(namespace) || host_network || inject == InjectChoice::Disabled {
        Meshing::Untouched
    } else if spire_label.is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        Meshing::WithoutSpire
    } else {
        Meshing::Spire
    }
}

/// The value of `inject.istio.io/templates`: trimmed, de-duplicated names in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateList(Vec<String>);

impl TemplateList {
    /// Parses the annotation; absent or empty means the configured default list.
    pub fn parse(value: Option<&str>, defaults: &[String]) -> Self {
        let mut names: Vec<String> = Vec::new();
        for name in value.unwrap_or("").split(',').map(str::trim) {
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        if names.is_empty() {
            names = defaults.to_vec();
        }
        TemplateList(names)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n == name)
    }

    /// A gateway pod is one rendered with the gateway template, as Istio's gateway injection sets.
    pub fn is_gateway(&self, cfg: &Config) -> bool {
        self.contains(&cfg.gateway_template)
    }

    /// Appends the SPIRE template that fits the pod, unless already listed.
    pub fn with_spire(mut self, cfg: &Config) -> Self {
        let spire = if self.is_gateway(cfg) {
            &cfg.spire_gateway_template
        } else {
            &cfg.spire_template
        };
        if !self.contains(spire) {
            self.0.push(spire.clone());
        }
        self
    }
}

impl fmt::Display for TemplateList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// The labels of a pod the table injects, as stored: steps 1 and 2 add each label unless its key
/// is there (a written value wins).
pub fn stored_labels(labels: &Labels, cfg: &Config) -> Labels {
    let added = [
        (INJECT_KEY, "true"),
        (cfg.spire_identity_label.as_str(), "true"),
    ];
    // Later entries win.
    added.into_iter().chain(labels.iter()).collect()
}

/// Applies the Pod table to a pod being created in `namespace`. Fails only when a part the rules
/// must read (the containers, when mounts are asked for) cannot be read.
pub fn mutate(pod: &Pod<'_>, namespace: &str, cfg: &Config) -> Result<Mutation, DecodeError> {
    let no_meta = ObjectMeta::default();
    let meta = pod.metadata.as_ref().unwrap_or(&no_meta);
    let spec = pod.spec.as_ref();

    let inject = InjectChoice::of(meta);
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let spire_label = meta.label(&cfg.spire_identity_label);
    let meshing = meshing(namespace, host_network, inject, spire_label, cfg);
    let mut out = Mutation::default();
    if meshing == Meshing::Untouched {
        return Ok(out);
    }
    if let InjectChoice::Unrecognised(value) = inject {
        out.warnings.push(warning(format!(
            "{INJECT_KEY}={value:?} is neither true nor false: Istio ignores it, so the pod is injected"
        )));
    }

    if pod.metadata.is_none() {
        out.patch.push(add(pointer(["metadata"]), json!({})));
    }

    // 1 and 2: the labels.
    let mut labels = MapEdit::new(["metadata", "labels"], meta.labels.as_ref());
    labels.set_if_absent(INJECT_KEY, "true");
    labels.set_if_absent(&cfg.spire_identity_label, "true");
    labels.into_ops(&mut out.patch);
    if meshing == Meshing::WithoutSpire {
        return Ok(out);
    }

    // 3: the istiod templates.
    let templates = TemplateList::parse(
        meta.annotation(TEMPLATES_ANNOTATION),
        &cfg.default_templates,
    )
    .with_spire(cfg);
    let mut annotations = MapEdit::new(["metadata", "annotations"], meta.annotations.as_ref());
    annotations.set(TEMPLATES_ANNOTATION, &templates.to_string());
    annotations.into_ops(&mut out.patch);

    // 4: the SPIFFE CSI volume, and mounts where asked for.
    workload_socket_volume(spec, cfg, &mut out);
    workload_api_mounts(meta, spec, cfg, &mut out)?;
    Ok(out)
}

/// The one volume the pod must have: `{name: workload-socket, csi: {driver: csi.spiffe.io, readOnly: true}}`.
pub fn workload_socket_volume_spec(cfg: &Config) -> Value {
    json!({
        "name": cfg.workload_socket_volume,
        "csi": {"driver": cfg.csi_driver, "readOnly": true},
    })
}

/// True when the volume's only source is the read-only SPIFFE CSI driver.
fn is_spiffe_csi(volume: &Volume<'_>, cfg: &Config) -> bool {
    volume.other_sources == 0
        && volume.csi.as_ref().is_some_and(|csi| {
            csi.driver.as_deref() == Some(cfg.csi_driver.as_str()) && csi.read_only == Some(true)
        })
}

fn workload_socket_volume(spec: Option<&PodSpec<'_>>, cfg: &Config, out: &mut Mutation) {
    let desired = workload_socket_volume_spec(cfg);
    let Some(volumes) = spec.and_then(|s| s.volumes.as_ref()) else {
        out.patch.push(match spec {
            None => add(pointer(["spec"]), json!({ "volumes": [desired] })),
            Some(_) => add(pointer(["spec", "volumes"]), json!([desired])),
        });
        return;
    };
    let name = cfg.workload_socket_volume.as_str();
    let mut same_name = volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.name.as_deref() == Some(name))
        .map(|(i, _)| i);
    let Some(first) = same_name.next() else {
        out.patch
            .push(add(pointer(["spec", "volumes", "-"]), desired));
        return;
    };
    // Istio's default template declares workload-socket as an emptyDir: replace it where it stands.
    if !is_spiffe_csi(&volumes[first], cfg) {
        let index = first.to_string();
        out.patch
            .push(replace(pointer(["spec", "volumes", &index]), desired));
    }
    // Exactly one volume of that name: drop later duplicates, last first so indices stay valid.
    let duplicates: Vec<usize> = same_name.collect();
    for i in duplicates.into_iter().rev() {
        let index = i.to_string();
        out.patch.push(remove(pointer(["spec", "volumes", &index])));
    }
}

fn workload_api_mounts(
    meta: &ObjectMeta<'_>,
    spec: Option<&PodSpec<'_>>,
    cfg: &Config,
    out: &mut Mutation,
) -> Result<(), DecodeError> {
    let Some(path) = meta.annotation(WORKLOAD_API_MOUNT_ANNOTATION) else {
        return Ok(());
    };
    if !path.starts_with('/') {
        out.warnings.push(warning(format!(
            "{WORKLOAD_API_MOUNT_ANNOTATION}={path:?} is not an absolute path: no mount added"
        )));
        return Ok(());
    }
    let Some(containers) = spec.map(PodSpec::containers).transpose()?.flatten() else {
        return Ok(());
    };
    let volume = cfg.workload_socket_volume.as_str();
    let mount = json!({"name": volume, "mountPath": path, "readOnly": true});
    for (i, container) in containers.iter().enumerate() {
        if container.name.as_deref() == Some(ISTIO_PROXY_CONTAINER) {
            continue;
        }
        let index = i.to_string();
        match &container.volume_mounts {
            None => out.patch.push(add(
                pointer(["spec", "containers", &index, "volumeMounts"]),
                json!([mount]),
            )),
            Some(mounts) if mounts.iter().any(|m| m.name.as_deref() == Some(volume)) => {}
            Some(_) => out.patch.push(add(
                pointer(["spec", "containers", &index, "volumeMounts", "-"]),
                mount.clone(),
            )),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
