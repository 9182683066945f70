//! The findings as OpenReports (`openreports.io/v1alpha1`, DESIGN.md section 13): one `Report`
//! named `mesh-admission` per namespace with findings, one `ClusterReport` `mesh-admission` for the
//! cluster-scoped objects. A pure function: `audit --output reports` prints what the controller
//! writes for the same findings.
//!
//! A report holds at most [`MAX_RESULTS`] results and [`MAX_RESULT_BYTES`] of them: the rest go to
//! `mesh-admission-2`, `mesh-admission-3`, … in the same order, so that no report object nears
//! etcd's limit (Kyverno's per-resource reports once grew past it).

use serde::Serialize;
use serde_json::Value;

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

/// What identifies a result across audits: its rule, its object and its message.
type ResultKey = (String, String, String);

fn key_of_finding(finding: &AuditFinding) -> ResultKey {
    let object = &finding.object;
    let id = format!("{}/{}/{}", object.kind.kind, object.namespace, object.name);
    (finding.rule.clone(), id, finding.message.clone())
}

fn key_of_result(result: &Value) -> Option<ResultKey> {
    let resource = &result["resources"][0];
    let id = format!(
        "{}/{}/{}",
        resource["kind"].as_str()?,
        resource["namespace"].as_str().unwrap_or(""),
        resource["name"].as_str()?
    );
    let text = |field: &str| result[field].as_str().map(str::to_owned);
    Some((text("rule")?, id, text("message")?))
}

/// When each result of the stored reports was first seen, so that a finding keeps its timestamp
/// from one audit to the next (and a report that did not change is not written).
#[derive(Debug, Default)]
pub struct FirstSeen(std::collections::HashMap<ResultKey, Timestamp>);

impl FirstSeen {
    /// From the reports as the API serves them.
    pub fn of(stored: &[Value]) -> Self {
        let mut seen = std::collections::HashMap::new();
        for result in stored
            .iter()
            .flat_map(|r| r["results"].as_array().into_iter().flatten())
        {
            let stamp = &result["timestamp"];
            let (Some(key), Some(seconds)) = (key_of_result(result), stamp["seconds"].as_i64())
            else {
                continue;
            };
            let nanos = stamp["nanos"]
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(0);
            seen.insert(key, Timestamp { seconds, nanos });
        }
        FirstSeen(seen)
    }

    /// When `finding` was first seen: as stored, or `now` for a new one.
    pub fn get(&self, finding: &AuditFinding, now: Timestamp) -> Timestamp {
        self.0.get(&key_of_finding(finding)).copied().unwrap_or(now)
    }
}

/// One write the reports need.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create it, or replace what is stored (its results or summary differ).
    Apply(ReportObject),
    /// A stored report nothing needs any more (its namespace has nothing left to report).
    Delete {
        kind: String,
        namespace: Option<String>,
        name: String,
    },
}

/// The writes that turn the `stored` reports (ours, as the API serves them) into `wanted`: none
/// when nothing changed.
pub fn changes(wanted: &[ReportObject], stored: &[Value]) -> Vec<Change> {
    let id_of = |r: &Value| {
        let meta = &r["metadata"];
        format!(
            "{}/{}/{}",
            r["kind"].as_str().unwrap_or(""),
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or("")
        )
    };
    let by_id: std::collections::HashMap<String, &Value> =
        stored.iter().map(|r| (id_of(r), r)).collect();
    let mut out = Vec::new();
    for report in wanted {
        let same = by_id.get(&report.id()).is_some_and(|stored| {
            let json = serde_json::to_value(report).unwrap_or(Value::Null);
            stored["results"] == json["results"] && stored["summary"] == json["summary"]
        });
        if !same {
            out.push(Change::Apply(report.clone()));
        }
    }
    let wanted_ids: std::collections::HashSet<String> =
        wanted.iter().map(ReportObject::id).collect();
    for report in stored {
        if !wanted_ids.contains(&id_of(report)) {
            let meta = &report["metadata"];
            out.push(Change::Delete {
                kind: report["kind"].as_str().unwrap_or("").to_owned(),
                namespace: meta["namespace"].as_str().map(str::to_owned),
                name: meta["name"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out
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

#[cfg(test)]
mod change_tests {
    use super::*;
    use crate::audit::finding::Subject;
    use crate::policy::kinds;

    fn finding(namespace: &str, name: &str, message: &str) -> AuditFinding {
        let subject = Subject::new(&kinds::DEPLOYMENT, namespace, name);
        AuditFinding::new("spire-registration-missing", Level::Error, subject, message)
    }

    fn stamp(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn stored(reports: &[ReportObject]) -> Vec<Value> {
        reports
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    #[test]
    fn a_steady_cluster_needs_no_write_and_findings_keep_their_first_timestamp() {
        let findings = [finding("shop", "web", "m"), finding("team", "api", "m")];
        let first = reports(&findings, &|_| stamp(100));
        assert_eq!(changes(&first, &[]).len(), 2, "both are new");
        let stored = stored(&first);
        let seen = FirstSeen::of(&stored);
        // An hour later the same findings: same timestamps, nothing to write.
        let again = reports(&findings, &|f| seen.get(f, stamp(3700)));
        assert_eq!(again, first);
        assert!(changes(&again, &stored).is_empty());
        // A new finding in shop: shop's report is written, the old result keeps its time.
        let more = [
            finding("shop", "db", "m"),
            findings[0].clone(),
            findings[1].clone(),
        ];
        let next = reports(&more, &|f| seen.get(f, stamp(3700)));
        let written = changes(&next, &stored);
        let [Change::Apply(shop)] = &written[..] else {
            panic!("{written:?}")
        };
        assert_eq!(shop.id(), "Report/shop/mesh-admission");
        let times: Vec<i64> = shop.results.iter().map(|r| r.timestamp.seconds).collect();
        assert_eq!(times, [3700, 100]);
    }

    #[test]
    fn a_namespace_with_nothing_left_loses_its_report() {
        let stored = stored(&reports(&[finding("shop", "web", "m")], &|_| stamp(1)));
        assert_eq!(
            changes(&[], &stored),
            [Change::Delete {
                kind: "Report".into(),
                namespace: Some("shop".into()),
                name: "mesh-admission".into()
            }]
        );
    }
}
