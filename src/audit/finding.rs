//! What `audit` reports: one finding about one object, under a stable rule id (DESIGN.md
//! section 13), as the `json` output and the reports carry it.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::model::Key;
use crate::policy::finding::Severity;
use crate::policy::kinds::Kind;

/// How bad a finding is: an error makes `audit` exit 1 (a report result `fail`), a warning does not
/// (`warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

impl From<Severity> for Level {
    fn from(severity: Severity) -> Self {
        match severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warning,
        }
    }
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

/// The object a finding is about, named `Kind/namespace/name` (`Kind//name` when cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub kind: &'static Kind,
    /// Empty for a cluster-scoped object.
    pub namespace: String,
    pub name: String,
    /// Known when the object came from the API.
    pub uid: Option<String>,
}

impl Subject {
    pub fn new(kind: &'static Kind, namespace: &str, name: &str) -> Self {
        Subject {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: None,
        }
    }

    /// The object at `key` of the model, with its uid when known.
    pub fn of(key: &Key, uid: Option<&str>) -> Self {
        Subject {
            uid: uid.map(str::to_owned),
            ..Subject::new(key.kind, &key.namespace, &key.name)
        }
    }

    /// The `apiVersion` reports name it with: the version the kinds table lists first (Flux's
    /// HelmRelease, registered for every version, as `v2`).
    pub fn api_version(&self) -> String {
        let version = self.kind.versions.first().copied().unwrap_or("v1");
        self.kind
            .api_version(if version == "*" { "v2" } else { version })
    }

    fn sort_key(&self) -> (&str, &str, &str, &str) {
        (&self.namespace, self.kind.kind, self.kind.group, &self.name)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.kind, self.namespace, self.name)
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One finding: `{rule, level, object, message}` in the `json` output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AuditFinding {
    /// A section 13 rule id (`spire-registration-missing`), or for a section 4, 5 or 10 finding the
    /// rule of its field (see [`super::stored`]).
    pub rule: String,
    pub level: Level,
    pub object: Subject,
    /// For section 4, 5 and 10 findings exactly the webhook's text, `FIELD: problem (value "X")`.
    pub message: String,
}

impl AuditFinding {
    pub fn new(rule: &str, level: Level, object: Subject, message: impl Into<String>) -> Self {
        AuditFinding {
            rule: rule.to_owned(),
            level,
            object,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

/// Findings in output order: by namespace, then object, level, rule and message.
pub fn sort(findings: &mut [AuditFinding]) {
    findings.sort_by(|a, b| {
        (a.object.sort_key(), a.level, &a.rule, &a.message).cmp(&(
            b.object.sort_key(),
            b.level,
            &b.rule,
            &b.message,
        ))
    });
}
