//! What validation reports: one problem with one field, rendered as DESIGN.md section 3 shows it,
//! `FIELD: problem (value "X")`.

use std::fmt;

/// Whether a finding denies the request or only warns the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Denies the request (422 Invalid).
    Error,
    /// Admits it; kubectl prints it as a `Warning:` line.
    Warning,
}

/// One problem found in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Full path of the field, e.g. `spec.template.metadata.annotations[servicemesh.bigbang.dev/port]`.
    pub field: String,
    /// What is wrong, e.g. `must be a port number 1-65535`.
    pub message: String,
    /// The offending value exactly as written, when showing it helps.
    pub value: Option<String>,
}

/// Values longer than this are cut in the rendered text: a denial should name the problem, not echo a
/// whole proxy configuration back.
pub const MAX_VALUE_CHARS: usize = 80;

impl Finding {
    pub fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
            value: None,
        }
    }

    pub fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(field, message)
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The finding as one `response.warnings` line, shortened to what kubectl shows.
    pub fn to_warning(&self) -> String {
        super::warning(self.to_string())
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        let Some(value) = &self.value else {
            return Ok(());
        };
        // Debug quoting makes spaces, quotes and control characters visible: `" 80"`, `"80\n"`.
        if value.chars().count() > MAX_VALUE_CHARS {
            let head: String = value.chars().take(MAX_VALUE_CHARS).collect();
            write!(f, " (value {head:?}…)")
        } else {
            write!(f, " (value {value:?})")
        }
    }
}

/// The denial message: every error, in order, joined by `; `. `None` when nothing denies.
pub fn denial_message(findings: &[Finding]) -> Option<String> {
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.is_error())
        .map(Finding::to_string)
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// The path of `rest` inside the object part at `at` (`""` for the object itself).
pub fn field_path(at: &str, rest: &str) -> String {
    if at.is_empty() {
        rest.to_owned()
    } else {
        format!("{at}.{rest}")
    }
}

/// The path of one annotation of the object part at `at`.
pub fn annotation_path(at: &str, key: &str) -> String {
    field_path(at, &format!("metadata.annotations[{key}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_contract() {
        let f = Finding::error(
            "metadata.annotations[servicemesh.bigbang.dev/port]",
            "must be a port number 1-65535",
        )
        .with_value("80a");
        assert_eq!(
            f.to_string(),
            r#"metadata.annotations[servicemesh.bigbang.dev/port]: must be a port number 1-65535 (value "80a")"#
        );
    }

    #[test]
    fn values_show_spaces_quotes_and_newlines() {
        let render = |v: &str| Finding::error("f", "bad").with_value(v).to_string();
        assert_eq!(render(" 80"), r#"f: bad (value " 80")"#);
        assert_eq!(render("a\"b"), r#"f: bad (value "a\"b")"#);
        assert_eq!(render("true\n"), r#"f: bad (value "true\n")"#);
        assert_eq!(render(""), r#"f: bad (value "")"#);
    }

    #[test]
    fn long_values_are_cut() {
        let text = Finding::error("f", "bad")
            .with_value("x".repeat(500))
            .to_string();
        assert!(
            text.ends_with(&format!("\"{}\"…)", "x".repeat(80))),
            "{text}"
        );
    }

    #[test]
    fn no_value_no_parenthesis() {
        let f = Finding::warning("a.b", "belongs elsewhere");
        assert_eq!(f.to_string(), "a.b: belongs elsewhere");
        assert!(!f.is_error());
    }

    #[test]
    fn warnings_fit_on_one_kubectl_line() {
        let f = Finding::warning("x".repeat(200), "y");
        assert_eq!(
            f.to_warning().chars().count(),
            crate::policy::MAX_WARNING_CHARS
        );
    }

    #[test]
    fn denial_lists_every_error_and_no_warning() {
        let findings = [
            Finding::error("a", "one"),
            Finding::warning("b", "two"),
            Finding::error("c", "three").with_value("3"),
        ];
        assert_eq!(
            denial_message(&findings).as_deref(),
            Some(r#"a: one; c: three (value "3")"#)
        );
        assert_eq!(denial_message(&findings[1..2]), None);
    }

    #[test]
    fn paths() {
        assert_eq!(annotation_path("", "k/v"), "metadata.annotations[k/v]");
        assert_eq!(
            annotation_path("spec.template", "k"),
            "spec.template.metadata.annotations[k]"
        );
    }
}
