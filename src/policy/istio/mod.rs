//! Istio security objects (DESIGN.md section 10): what istiod accepts but what can never work, refused
//! or warned about at `kubectl apply` time. One module per kind, each reading like its rows of the
//! table; the small lexical rules they share live here and in [`duration`].
//!
//! Every module decodes its own lenient view of the object (only the fields its rules read, as
//! `object.rs` does for the other kinds), so a field Istio adds tomorrow is never a reason to deny.

pub mod authorization_policy;
pub mod destination_rule;
pub mod duration;
pub mod gateway;
pub mod peer_authentication;
pub mod virtual_service;

use super::syntax::{LabelError, LabelKind, MAX_NAME_CHARS, check_label};

/// Why a value is not one of an Istio enum's spellings, or `None` when it is one. Istio compares enum
/// values exactly (`strict` is not `STRICT`), so a case-only slip names the intended value.
pub fn enum_problem(value: &str, allowed: &[&str]) -> Option<String> {
    if allowed.contains(&value) {
        return None;
    }
    let expected = match allowed {
        [] => "must not be set".to_owned(),
        [only] => format!("must be {only}"),
        [init @ .., last] => format!("must be {} or {last}", init.join(", ")),
    };
    Some(
        match allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(value.trim()))
        {
            Some(meant) => format!("{expected}; did you mean \"{meant}\"?"),
            None => expected,
        },
    )
}

/// Checks a DNS subdomain (RFC 1123): lower-case labels joined by `.`, at most 253 characters, as
/// Kubernetes names most objects (ServiceAccounts, Gateways).
pub fn check_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(LabelError::Empty.to_string());
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "is {chars} characters long, at most {MAX_NAME_CHARS} are allowed"
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if let Err(e) = check_label(label, LabelKind::Rfc1123) {
            return Err(if labels.len() == 1 {
                e.to_string()
            } else {
                format!("label {label:?} {e}")
            });
        }
    }
    Ok(())
}

/// Checks a DNS label (RFC 1123), as Kubernetes names namespaces.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    check_label(name, LabelKind::Rfc1123).map_err(|e| e.to_string())
}

/// Where a `*` sits in a value Istio matches as a string (principals, namespaces): Istio knows exact,
/// prefix (`abc*`), suffix (`*abc`) and presence (`*`) matches, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// `*`: any value.
    Any,
    Exact(&'a str),
    /// `abc*`: the part before the `*`.
    Prefix(&'a str),
    /// `*abc`: the part after the `*`.
    Suffix(&'a str),
    /// A `*` anywhere else, or more than one: Istio takes the value literally, and no peer has a
    /// `*` in its identity, so it never matches.
    Literal,
}

impl<'a> Pattern<'a> {
    pub fn of(value: &'a str) -> Self {
        if value == "*" {
            return Pattern::Any;
        }
        match value.matches('*').count() {
            0 => Pattern::Exact(value),
            1 => {
                if let Some(rest) = value.strip_prefix('*') {
                    Pattern::Suffix(rest)
                } else if let Some(rest) = value.strip_suffix('*') {
                    Pattern::Prefix(rest)
                } else {
                    Pattern::Literal
                }
            }
            _ => Pattern::Literal,
        }
    }
}

/// The message for [`Pattern::Literal`].
pub const LITERAL_STAR: &str = "Istio matches a \"*\" only as the whole value or at its very start or end; \
     anywhere else it is taken literally and never matches";

/// Whether `text` could be the start (`prefix`) or end (`!prefix`) of a DNS label: the characters of
/// one, with no `-` where the label itself would start or end.
fn label_fragment(text: &str, prefix: bool) -> bool {
    let chars_ok = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let edge_ok = if prefix {
        !text.starts_with('-')
    } else {
        !text.ends_with('-')
    };
    chars_ok && edge_ok && text.len() <= 63
}

/// Whether `text` could be the start or end of a DNS subdomain (labels joined by `.`).
fn subdomain_fragment(text: &str, prefix: bool) -> bool {
    let chars_ok = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let edge_ok = if prefix {
        !text.starts_with(['-', '.'])
    } else {
        !text.ends_with(['-', '.'])
    };
    chars_ok && edge_ok && text.len() <= MAX_NAME_CHARS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_are_exact_and_case_slips_are_named() {
        let modes = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
        assert_eq!(enum_problem("STRICT", &modes), None);
        assert_eq!(
            enum_problem("strict", &modes).as_deref(),
            Some("must be UNSET, DISABLE, PERMISSIVE or STRICT; did you mean \"STRICT\"?")
        );
        assert_eq!(
            enum_problem("STRICT ", &modes).as_deref(),
            Some("must be UNSET, DISABLE, PERMISSIVE or STRICT; did you mean \"STRICT\"?")
        );
        assert_eq!(
            enum_problem("MUTUAL", &modes).as_deref(),
            Some("must be UNSET, DISABLE, PERMISSIVE or STRICT")
        );
        assert_eq!(enum_problem("x", &["A"]).as_deref(), Some("must be A"));
    }

    #[test]
    fn patterns_follow_istios_string_matching() {
        assert_eq!(Pattern::of("*"), Pattern::Any);
        assert_eq!(Pattern::of("a/b"), Pattern::Exact("a/b"));
        assert_eq!(Pattern::of("a/*"), Pattern::Prefix("a/"));
        assert_eq!(Pattern::of("*/b"), Pattern::Suffix("/b"));
        assert_eq!(Pattern::of("a/*/b"), Pattern::Literal);
        assert_eq!(Pattern::of("*a*"), Pattern::Literal);
        assert_eq!(Pattern::of("**"), Pattern::Literal);
        assert_eq!(Pattern::of(""), Pattern::Exact(""));
    }

    #[test]
    fn names() {
        assert_eq!(check_subdomain("bucket-sa"), Ok(()));
        assert_eq!(check_subdomain("a.b-c.d"), Ok(()));
        assert!(check_subdomain("").is_err());
        assert!(check_subdomain("Bucket").is_err());
        assert!(check_subdomain("a..b").is_err());
        assert!(check_subdomain(&"a".repeat(254)).is_err());
        assert_eq!(check_dns_label("docs"), Ok(()));
        assert!(check_dns_label("do.cs").is_err());
        assert!(label_fragment("prod-", true) && !label_fragment("-prod", true));
        assert!(label_fragment("-prod", false) && !label_fragment("prod-", false));
        assert!(!label_fragment("Prod", true));
        assert!(subdomain_fragment("sa.x", true) && !subdomain_fragment(".x", true));
    }
}

#[cfg(test)]
#[path = "seeds_tests.rs"]
mod seeds_tests;
