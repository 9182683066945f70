//! What a layer, and a connection, decide: the words of the JSON output and of `--explain`.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

/// Writes a shared name as a string.
pub fn name<S: serde::Serializer>(name: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(name)
}

/// Writes shared names as a list of strings.
pub fn names<S: serde::Serializer>(names: &[Arc<str>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(names.iter().map(|n| &**n))
}

/// A connection's verdict, ordered from closed to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Denied,
    /// Some requests: the conditions say which.
    Partial,
    Allowed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Denied => "denied",
            Verdict::Partial => "partial",
            Verdict::Allowed => "allowed",
        }
    }
}

/// What travels on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Istio mutual TLS: the source's identity is known.
    Mtls,
    Plaintext,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Mtls => "mtls",
            Security::Plaintext => "plaintext",
        }
    }
}

/// The three layers, in the order they decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Networkpolicy,
    Mtls,
    Authorization,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Networkpolicy => "networkpolicy",
            Layer::Mtls => "mtls",
            Layer::Authorization => "authorization",
        }
    }
}

fn no_words(why: &str) -> bool {
    why.is_empty()
}

/// What one layer says about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Partial,
    Denied,
    /// The layer has nothing to say (no sidecar to enforce AuthorizationPolicies).
    Skipped,
}

/// One layer's decision with the objects that make it (`Kind/namespace/name`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerDecision {
    pub layer: Layer,
    pub outcome: Outcome,
    #[serde(serialize_with = "names")]
    pub by: Vec<Arc<str>>,
    /// For a partial outcome: which requests or sources pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
    /// Why, in words (filled in for `--explain` only); borrowed when fixed, so that deciding
    /// hundreds of thousands of connections allocates nothing for it.
    #[serde(skip_serializing_if = "no_words")]
    pub why: Cow<'static, str>,
}

impl LayerDecision {
    pub fn new(layer: Layer, outcome: Outcome) -> Self {
        LayerDecision {
            layer,
            outcome,
            by: Vec::new(),
            conditions: Vec::new(),
            why: Cow::Borrowed(""),
        }
    }
}

/// Whether a rule (or a part of one) matches a connection: yes, no, or for some requests only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    /// For requests meeting these conditions (all of them).
    Partial(Vec<String>),
}

impl Match {
    pub fn of(yes: bool) -> Self {
        if yes { Match::Yes } else { Match::No }
    }

    /// Both must match.
    pub fn and(self, other: Match) -> Match {
        match (self, other) {
            (Match::No, _) | (_, Match::No) => Match::No,
            (Match::Yes, m) | (m, Match::Yes) => m,
            (Match::Partial(mut a), Match::Partial(b)) => {
                a.extend(b);
                Match::Partial(a)
            }
        }
    }

    /// Either may match.
    pub fn or(self, other: Match) -> Match {
        match (self, other) {
            (Match::Yes, _) | (_, Match::Yes) => Match::Yes,
            (Match::No, m) | (m, Match::No) => m,
            (Match::Partial(a), Match::Partial(b)) => Match::Partial(vec![format!(
                "({}) or ({})",
                a.join(" and "),
                b.join(" and ")
            )]),
        }
    }

    /// All of `parts` (none: yes).
    pub fn all(parts: impl IntoIterator<Item = Match>) -> Match {
        let mut result = Match::Yes;
        for part in parts {
            result = result.and(part);
            if result == Match::No {
                break;
            }
        }
        result
    }

    /// Any of `parts` (none: no).
    pub fn any(parts: impl IntoIterator<Item = Match>) -> Match {
        let mut result = Match::No;
        for part in parts {
            result = result.or(part);
            if result == Match::Yes {
                break;
            }
        }
        result
    }

    /// The conditions as one phrase.
    pub fn phrase(&self) -> String {
        match self {
            Match::Partial(conditions) => conditions.join(" and "),
            Match::Yes => "always".into(),
            Match::No => "never".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_matches_combine_like_the_rules_they_come_from() {
        let p = |c: &str| Match::Partial(vec![c.into()]);
        assert_eq!(Match::Yes.and(p("a")), p("a"));
        assert_eq!(Match::No.and(p("a")), Match::No);
        assert_eq!(
            p("a").and(p("b")),
            Match::Partial(vec!["a".into(), "b".into()])
        );
        assert_eq!(Match::No.or(p("a")), p("a"));
        assert_eq!(Match::Yes.or(p("a")), Match::Yes);
        assert_eq!(p("a").or(p("b")), p("(a) or (b)"));
        assert_eq!(Match::all([]), Match::Yes);
        assert_eq!(Match::any([]), Match::No);
        assert!(Verdict::Denied < Verdict::Partial && Verdict::Partial < Verdict::Allowed);
    }
}
