//! `/validate` dispatch (DESIGN.md section 5): which rules apply to which kind, and where its pod template
//! sits. A kind not listed here is admitted without a look: an unfamiliar kind is never a reason to deny.

use serde::Deserialize;

use super::finding::Finding;
use super::helmrelease::{self, HelmRelease};
use super::object::{DecodeError, decode, map_only};
use super::podtemplate::{self, PodTemplate};

map_only!(Workload<'a>, "an object (workload)");
map_only!(WorkloadSpec<'a>, "an object (workload spec)");
map_only!(CronJob<'a>, "a CronJob object");
map_only!(CronJobSpec<'a>, "an object (CronJobSpec)");

/// Flux's HelmRelease API group; every version (v2, v2beta1, v2beta2, …) is read the same way.
pub const FLUX_HELM_GROUP: &str = "helm.toolkit.fluxcd.io";

/// Where a kind keeps the pod spec these rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    HelmRelease,
    /// A Pod: the template is the object itself.
    Pod,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs: `spec.template`.
    Workload,
    /// `spec.jobTemplate.spec.template`.
    CronJob,
}

impl Target {
    /// The rules for a group and kind (`""` or `core` is the core group), if any.
    pub fn of(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            (FLUX_HELM_GROUP, "HelmRelease") => Some(Target::HelmRelease),
            ("" | "core", "Pod") => Some(Target::Pod),
            ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job") => Some(Target::Workload),
            ("batch", "CronJob") => Some(Target::CronJob),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
struct Workload<'a> {
    #[serde(borrow, default)]
    spec: Option<WorkloadSpec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
struct WorkloadSpec<'a> {
    #[serde(borrow, default)]
    template: Option<PodTemplate<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(remote = "Self")]
struct CronJob<'a> {
    #[serde(borrow, default)]
    spec: Option<CronJobSpec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(remote = "Self")]
struct CronJobSpec<'a> {
    #[serde(borrow, default)]
    job_template: Option<Workload<'a>>,
}

/// Every finding for one object of the given group and kind. A field the rules read that has the wrong
/// type is a `DecodeError` (the caller answers 400 BadRequest), naming the field's full path.
pub fn validate(group: &str, kind: &str, object_json: &str) -> Result<Vec<Finding>, DecodeError> {
    let Some(target) = Target::of(group, kind) else {
        return Ok(Vec::new());
    };
    Ok(match target {
        Target::HelmRelease => helmrelease::validate(&decode::<HelmRelease>(object_json)?),
        Target::Pod => podtemplate::validate(&decode::<PodTemplate>(object_json)?, ""),
        Target::Workload => {
            let workload: Workload = decode(object_json)?;
            template_findings(workload.spec.and_then(|s| s.template), "spec.template")
        }
        Target::CronJob => {
            let cron_job: CronJob = decode(object_json)?;
            let template = cron_job
                .spec
                .and_then(|s| s.job_template)
                .and_then(|j| j.spec)
                .and_then(|s| s.template);
            template_findings(template, "spec.jobTemplate.spec.template")
        }
    })
}

fn template_findings(template: Option<PodTemplate<'_>>, at: &str) -> Vec<Finding> {
    template.map_or_else(Vec::new, |t| podtemplate::validate(&t, at))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
