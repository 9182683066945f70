//! The findings as OpenReports (`openreports.io/v1alpha1`, DESIGN.md section 13): one `Report`
//! named `mesh-admission` per namespace with findings, one `ClusterReport` `mesh-admission` for the
//! cluster-scoped objects. A pure function: `audit --output reports` prints what the controller
//! writes for the same findings.
//!
//! A report holds at most [`MAX_RESULTS`] results and [`MAX_RESULT_BYTES`] of them: the rest go to
//! `mesh-admission-2`, `mesh-admission-3`, … in the same order, so that no report object nears
//! etcd's limit (Kyverno's per-resource reports once grew past it).

use serde::Serialize;

use super::finding::{AuditFinding, Level};

/// The name of the reports, their `policy` and `source`, and the manager label's value.
pub const NAME: &str = "mesh-admission";
pub const API_VERSION: &str = "openreports.io/v1alpha1";
/// The label that marks the reports the controller owns (and may delete).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The most results one report holds.
pub const MAX_RESULTS: usize = 1000;
/// The most bytes of results (as JSON) one report holds: with its metadata and summary a report
/// stays under 256 KiB, far below etcd's 1.5 MiB request limit.
pub const MAX_RESULT_BYTES: usize = 248 * 1024;

/// When a finding was first seen (`timestamp` of a result, as protobuf's Timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

/// A `Report` or `ClusterReport`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportObject {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ReportMeta,
    pub summary: Summary,
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Counts of the results by outcome, as Policy Reporter reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub error: usize,
    pub skip: usize,
}

/// One result: one finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportResult {
    pub policy: &'static str,
    pub rule: String,
    /// `fail` for an error, `warn` for a warning.
    pub result: &'static str,
    /// `high` for an error, `medium` for a warning.
    pub severity: &'static str,
    pub message: String,
    pub resources: Vec<ResourceRef>,
    pub source: &'static str,
    pub timestamp: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub api_version: String,
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl ReportObject {
    /// `Report/namespace/name` or `ClusterReport//name`.
    pub fn id(&self) -> String {
        let namespace = self.metadata.namespace.as_deref().unwrap_or("");
        format!("{}/{namespace}/{}", self.kind, self.metadata.name)
    }
}

fn result_of(finding: &AuditFinding, timestamp: Timestamp) -> ReportResult {
    let (result, severity) = match finding.level {
        Level::Error => ("fail", "high"),
        Level::Warning => ("warn", "medium"),
    };
    let object = &finding.object;
    ReportResult {
        policy: NAME,
        rule: finding.rule.clone(),
        result,
        severity,
        message: finding.message.clone(),
        resources: vec![ResourceRef {
            api_version: object.api_version(),
            kind: object.kind.kind,
            name: object.name.clone(),
            namespace: Some(object.namespace.clone()).filter(|ns| !ns.is_empty()),
            uid: object.uid.clone(),
        }],
        source: NAME,
        timestamp,
    }
}

/// The reports for `findings` (sorted as [`super::finding::sort`] leaves them), each result
/// stamped with `first_seen`: the `ClusterReport` first, then the namespaces' `Report`s by name.
/// A namespace without findings has no report.
pub fn reports(
    findings: &[AuditFinding],
    first_seen: &dyn Fn(&AuditFinding) -> Timestamp,
) -> Vec<ReportObject> {
    let mut by_namespace: std::collections::BTreeMap<&str, Vec<ReportResult>> =
        std::collections::BTreeMap::new();
    for finding in findings {
        by_namespace
            .entry(finding.object.namespace.as_str())
            .or_default()
            .push(result_of(finding, first_seen(finding)));
    }
    let mut out = Vec::new();
    for (namespace, results) in by_namespace {
        for (i, chunk) in split(results).into_iter().enumerate() {
            out.push(report(namespace, i, chunk));
        }
    }
    out
}

/// Results in chunks of at most [`MAX_RESULTS`] and [`MAX_RESULT_BYTES`] (a single result larger
/// than that still gets its own report).
fn split(results: Vec<ReportResult>) -> Vec<Vec<ReportResult>> {
    let mut chunks: Vec<Vec<ReportResult>> = vec![Vec::new()];
    let mut bytes = 0;
    for result in results {
        let size = serde_json::to_vec(&result).map_or(0, |v| v.len());
        let full = chunks.last().is_some_and(|c| {
            !c.is_empty() && (c.len() == MAX_RESULTS || bytes + size > MAX_RESULT_BYTES)
        });
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(result);
        }
    }
    chunks
}

fn report(namespace: &str, index: usize, results: Vec<ReportResult>) -> ReportObject {
    let mut summary = Summary::default();
    for result in &results {
        match result.result {
            "fail" => summary.fail += 1,
            _ => summary.warn += 1,
        }
    }
    let name = match index {
        0 => NAME.to_owned(),
        i => format!("{NAME}-{}", i + 1),
    };
    ReportObject {
        api_version: API_VERSION,
        kind: if namespace.is_empty() {
            "ClusterReport"
        } else {
            "Report"
        },
        metadata: ReportMeta {
            name,
            namespace: Some(namespace.to_owned()).filter(|ns| !ns.is_empty()),
            labels: [(MANAGED_BY_LABEL.to_owned(), NAME.to_owned())].into(),
        },
        summary,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::finding::Subject;
    use crate::policy::kinds;

    fn finding(
        kind: &'static kinds::Kind,
        namespace: &str,
        name: &str,
        level: Level,
    ) -> AuditFinding {
        AuditFinding::new(
            "rule",
            level,
            Subject::new(kind, namespace, name),
            "message",
        )
    }

    const T: Timestamp = Timestamp {
        seconds: 1_765_000_000,
        nanos: 0,
    };

    #[test]
    fn one_report_per_namespace_with_findings_and_one_cluster_report() {
        let findings = [
            finding(&kinds::CLUSTER_SPIFFE_ID, "", "mesh", Level::Error),
            finding(&kinds::DEPLOYMENT, "shop", "web", Level::Error),
            finding(
                &kinds::PEER_AUTHENTICATION,
                "shop",
                "strict",
                Level::Warning,
            ),
            finding(&kinds::HELM_RELEASE, "team", "app", Level::Warning),
        ];
        let reports = reports(&findings, &|_| T);
        let ids: Vec<String> = reports.iter().map(ReportObject::id).collect();
        assert_eq!(
            ids,
            [
                "ClusterReport//mesh-admission",
                "Report/shop/mesh-admission",
                "Report/team/mesh-admission"
            ]
        );
        let shop = &reports[1];
        assert_eq!((shop.summary.fail, shop.summary.warn), (1, 1));
        let json = serde_json::to_value(&shop.results[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "policy": "mesh-admission", "rule": "rule", "result": "fail", "severity": "high",
                "message": "message", "source": "mesh-admission",
                "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"}],
                "timestamp": {"seconds": 1_765_000_000, "nanos": 0},
            })
        );
        let release = &reports[2].results[0].resources[0];
        assert_eq!(release.api_version, "helm.toolkit.fluxcd.io/v2");
        assert_eq!(reports[0].results[0].resources[0].namespace, None);
    }

    #[test]
    fn above_a_thousand_results_a_namespace_gets_more_reports() {
        let findings: Vec<AuditFinding> = (0..2500)
            .map(|i| finding(&kinds::POD, "big", &format!("p{i:05}"), Level::Warning))
            .collect();
        let reports = reports(&findings, &|_| T);
        let sizes: Vec<(String, usize, usize)> = reports
            .iter()
            .map(|r| (r.metadata.name.clone(), r.results.len(), r.summary.warn))
            .collect();
        assert_eq!(
            sizes,
            [
                ("mesh-admission".to_owned(), 1000, 1000),
                ("mesh-admission-2".to_owned(), 1000, 1000),
                ("mesh-admission-3".to_owned(), 500, 500)
            ]
        );
        assert_eq!(reports[1].results[0].resources[0].name, "p01000");
    }

    #[test]
    fn long_messages_split_before_a_report_grows_too_large() {
        let findings: Vec<AuditFinding> = (0..1000)
            .map(|i| {
                let mut f = finding(&kinds::POD, "big", &format!("p{i:04}"), Level::Error);
                f.message = "x".repeat(400);
                f
            })
            .collect();
        let reports = reports(&findings, &|_| T);
        assert!(reports.len() > 1);
        for report in &reports {
            let bytes = serde_json::to_vec(report).unwrap().len();
            assert!(bytes < 256 * 1024, "{} is {bytes} bytes", report.id());
        }
        let total: usize = reports.iter().map(|r| r.results.len()).sum();
        assert_eq!(total, 1000);
    }
}
