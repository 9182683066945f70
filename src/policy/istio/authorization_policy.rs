//! AuthorizationPolicy (`security.istio.io`, DESIGN.md section 10): the peers a rule names.
//!
//! | field | rule | level |
//! | --- | --- | --- |
//! | `rules[].from[].source.principals` / `notPrincipals` | `*`, `<trust domain>/ns/<namespace>/sa/<service account>`, or such a string with one `*` at its very start or end | error |
//! | same | no `spiffe://` (Istio adds the scheme itself) | error |
//! | same | a trust domain within 2 edits of, but not equal to, `mesh.trustDomain`, an alias or `cluster.local`: a typo | error |
//! | same | any other trust domain not in `mesh.federatedTrustDomains`: matches only that foreign domain's peers | warning |
//! | `rules[].from[].source.namespaces` / `notNamespaces` | `*`, a namespace name, or one with a `*` at its start or end | error |
//! | `action: ALLOW` (or none) | a rule with neither `from`, `to` nor `when` allows every request | warning |
//!
//! Why these never work although istiod accepts them: Istio turns a principal `P` into an Envoy string
//! match on `spiffe://P` (exact; prefix for `P*`; suffix for `*P`; presence for `*`), and a `*`
//! anywhere else is quoted literally (pilot/pkg/security/authz/matcher). A principal whose trust
//! domain is not this mesh's is kept as written, with only an istiod log line ("does not match the
//! current trust domain", pilot/pkg/security/trustdomain/bundle.go). `cluster.local` is Istio's name
//! for "this mesh": it is rewritten to the trust domain and its aliases, so it is always right.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::subdomain_fragment;
use super::{LITERAL_STAR, Pattern, check_dns_label, check_subdomain, label_fragment};
use crate::config::MeshConfig;
use crate::policy::finding::Finding;
use crate::policy::object::{Text, object, objects};

/// The trust domain Istio reads as "this mesh, whatever its trust domain and aliases".
pub const LOCAL_TRUST_DOMAIN: &str = "cluster.local";
/// The scheme Istio puts in front of every principal itself.
pub const SPIFFE_SCHEME: &str = "spiffe://";
/// Furthest a trust domain may be from a known one to be taken for a typo of it.
pub const MAX_TYPO_EDITS: usize = 2;
/// The shape of a principal, for messages.
pub const PRINCIPAL_FORMAT: &str = "<trust domain>/ns/<namespace>/sa/<service account>";

/// The fields the rules read.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizationPolicy<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Spec<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "objects")]
    pub rules: Option<Vec<Rule<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Rule<'a> {
    #[serde(borrow, default, deserialize_with = "objects")]
    pub from: Option<Vec<From<'a>>>,
    /// Only whether there are any.
    #[serde(default)]
    pub to: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    pub when: Option<Vec<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct From<'a> {
    #[serde(borrow, default, deserialize_with = "object")]
    pub source: Option<Source<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source<'a> {
    #[serde(borrow, default)]
    pub principals: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    pub not_principals: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    pub namespaces: Option<Vec<Text<'a>>>,
    #[serde(borrow, default)]
    pub not_namespaces: Option<Vec<Text<'a>>>,
}

/// Applies the AuthorizationPolicy rows; `mesh` names the trust domains principals may use.
pub fn validate(policy: &AuthorizationPolicy<'_>, mesh: &MeshConfig) -> Vec<Finding> {
    let Some(spec) = &policy.spec else {
        return Vec::new();
    };
    let trust = TrustDomains::of(mesh);
    let mut findings = Vec::new();
    // Istio's default action is ALLOW.
    let allows = spec.action.as_deref().is_none_or(|a| a == "ALLOW");
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let present = |list: &Option<Vec<IgnoredAny>>| list.as_ref().is_some_and(|l| !l.is_empty());
        let has_from = rule.from.as_ref().is_some_and(|l| !l.is_empty());
        if allows && !has_from && !present(&rule.to) && !present(&rule.when) {
            findings.push(Finding::warning(
                format!("spec.rules[{r}]"),
                "has no from, to or when: this ALLOW policy allows every request to its workloads",
            ));
        }
        for (f, from) in rule.from.iter().flatten().enumerate() {
            let Some(source) = &from.source else {
                continue;
            };
            let at = format!("spec.rules[{r}].from[{f}].source");
            for (name, list) in [
                ("principals", &source.principals),
                ("notPrincipals", &source.not_principals),
            ] {
                for (i, principal) in list.iter().flatten().enumerate() {
                    let field = format!("{at}.{name}[{i}]");
                    findings.extend(check_principal(&field, &principal.0, &trust));
                }
            }
            for (name, list) in [
                ("namespaces", &source.namespaces),
                ("notNamespaces", &source.not_namespaces),
            ] {
                for (i, namespace) in list.iter().flatten().enumerate() {
                    if let Some(problem) = namespace_problem(&namespace.0) {
                        findings.push(
                            Finding::error(format!("{at}.{name}[{i}]"), problem)
                                .with_value(namespace.0.as_ref()),
                        );
                    }
                }
            }
        }
    }
    findings
}

/// The trust domains of the configuration, as the principal rules weigh them.
struct TrustDomains<'m> {
    /// `mesh.trustDomain`, its aliases and `cluster.local`: a near miss of one is a typo.
    own: Vec<&'m str>,
    /// `mesh.federatedTrustDomains`: peers of these are expected.
    federated: Vec<&'m str>,
    configured: &'m str,
}

impl<'m> TrustDomains<'m> {
    fn of(mesh: &'m MeshConfig) -> Self {
        let mut own = vec![mesh.trust_domain.as_str()];
        own.extend(mesh.trust_domain_aliases.iter().map(String::as_str));
        own.push(LOCAL_TRUST_DOMAIN);
        TrustDomains {
            own,
            federated: mesh
                .federated_trust_domains
                .iter()
                .map(String::as_str)
                .collect(),
            configured: &mesh.trust_domain,
        }
    }

    fn is_known(&self, domain: &str) -> bool {
        self.own.contains(&domain) || self.federated.contains(&domain)
    }

    /// The known trust domain `domain` most likely meant, if it is a near miss of one.
    fn meant(&self, domain: &str, among: &[&'m str]) -> Option<&'m str> {
        among
            .iter()
            .map(|known| (strsim::levenshtein(domain, known), *known))
            .filter(|(edits, _)| *edits <= MAX_TYPO_EDITS)
            .min_by_key(|(edits, _)| *edits)
            .map(|(_, known)| known)
    }
}

/// The trust domain a principal names: the part before its first `/`, when that part is whole (an
/// exact principal, or a prefix pattern past it).
fn trust_domain_of(principal: &str) -> Option<&str> {
    let (domain, _) = principal.split_once('/')?;
    (!domain.contains('*')).then_some(domain)
}

fn check_principal(field: &str, value: &str, trust: &TrustDomains<'_>) -> Vec<Finding> {
    let error = |message: String| vec![Finding::error(field, message).with_value(value)];
    if let Some(rest) = strip_scheme(value) {
        // Name the whole fix: the principal without the scheme, its trust domain corrected too.
        let fixed = match trust_domain_of(rest).and_then(|d| Some((d, trust.meant(d, &trust.own)?)))
        {
            Some((domain, meant)) if !trust.is_known(domain) => {
                format!("{meant}{}", &rest[domain.len()..])
            }
            _ => rest.to_owned(),
        };
        return error(format!(
            "never matches: Istio adds \"{SPIFFE_SCHEME}\" itself; did you mean \"{fixed}\"?"
        ));
    }
    let shape = match Pattern::of(value) {
        Pattern::Any => return Vec::new(),
        Pattern::Literal => return error(LITERAL_STAR.to_owned()),
        Pattern::Exact(exact) => exact_principal_problem(exact),
        Pattern::Prefix(start) => (!principal_prefix(start)).then(|| {
            format!("a \"*\" at the end matches principals starting with {start:?}, which no {PRINCIPAL_FORMAT} does")
        }),
        Pattern::Suffix(end) => (!principal_suffix(end)).then(|| {
            format!("a \"*\" at the start matches principals ending with {end:?}, which no {PRINCIPAL_FORMAT} does")
        }),
    };
    if let Some(problem) = shape {
        return error(problem);
    }
    let Some(domain) = trust_domain_of(value) else {
        return Vec::new();
    };
    if trust.is_known(domain) {
        return Vec::new();
    }
    if let Some(meant) = trust.meant(domain, &trust.own) {
        let which = if meant == trust.configured {
            format!("mesh.trustDomain {meant:?}")
        } else if meant == LOCAL_TRUST_DOMAIN {
            format!("{LOCAL_TRUST_DOMAIN:?} (Istio's name for this mesh)")
        } else {
            format!("the alias {meant:?} of mesh.trustDomain")
        };
        return error(format!(
            "trust domain {domain:?} is a typo of {which} and never matches; did you mean \"{meant}{}\"?",
            &value[domain.len()..]
        ));
    }
    let hint = match trust.meant(domain, &trust.federated) {
        Some(federated) => format!("; did you mean {federated:?}?"),
        None => String::new(),
    };
    vec![Finding::warning(
        field,
        format!("foreign trust domain {domain:?}: matches only its peers{hint}"),
    )]
}

/// Whether the principal `pattern`, as written in a rule, matches a peer whose identity is
/// `identity` (`<mesh.trustDomain>/ns/<namespace>/sa/<service account>`), as Istio matches it: exact,
/// `*` prefix or suffix, `*` alone; `cluster.local` and the aliases stand for `mesh.trustDomain`.
/// Anything the rows above refuse (a `spiffe://` scheme, a `*` inside, a typo of the trust domain)
/// never matches, as in Istio.
pub fn principal_matches(pattern: &str, identity: &str, mesh: &MeshConfig) -> bool {
    let local = |domain: &str| {
        domain == mesh.trust_domain
            || domain == LOCAL_TRUST_DOMAIN
            || mesh.trust_domain_aliases.iter().any(|a| a == domain)
    };
    // `alias/ns/a/sa/b` is rewritten to the trust domain's: compare what follows the trust domain.
    let after_local = |value: &'_ str| -> Option<usize> {
        let domain = trust_domain_of(value)?;
        local(domain).then_some(domain.len())
    };
    let own_rest = identity.strip_prefix(mesh.trust_domain.as_str());
    match Pattern::of(pattern) {
        Pattern::Any => true,
        Pattern::Literal => false,
        Pattern::Exact(exact) => match after_local(exact) {
            Some(at) => own_rest == Some(&exact[at..]),
            None => exact == identity,
        },
        Pattern::Prefix(start) => match after_local(start) {
            Some(at) => own_rest.is_some_and(|rest| rest.starts_with(&start[at..])),
            None => identity.starts_with(start),
        },
        Pattern::Suffix(end) => identity.ends_with(end),
    }
}

/// Whether a `namespaces` entry matches the namespace `namespace` (exact, `*` prefix or suffix).
pub fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    match Pattern::of(pattern) {
        Pattern::Any => true,
        Pattern::Literal => false,
        Pattern::Exact(exact) => exact == namespace,
        Pattern::Prefix(start) => namespace.starts_with(start),
        Pattern::Suffix(end) => namespace.ends_with(end),
    }
}

/// The principal without a `spiffe://` scheme (any case), when it has one.
fn strip_scheme(value: &str) -> Option<&str> {
    let head = value.get(..SPIFFE_SCHEME.len())?;
    head.eq_ignore_ascii_case(SPIFFE_SCHEME)
        .then(|| &value[SPIFFE_SCHEME.len()..])
}

/// What is wrong with a principal without `*`, if anything.
fn exact_principal_problem(value: &str) -> Option<String> {
    let expected = format!("must be \"{PRINCIPAL_FORMAT}\" or \"*\"");
    let parts: Vec<&str> = value.split('/').collect();
    let [domain, ns_key, namespace, sa_key, account] = parts[..] else {
        return Some(format!(
            "{expected}: it has {} parts separated by '/', not 5, and never matches",
            parts.len()
        ));
    };
    if domain.is_empty() {
        return Some(format!("{expected}: the trust domain is empty"));
    }
    if (ns_key, sa_key) != ("ns", "sa") {
        return Some(format!(
            "{expected}: the 2nd and 4th parts must be \"ns\" and \"sa\""
        ));
    }
    if let Err(e) = check_dns_label(namespace) {
        return Some(format!(
            "{expected}: the namespace {namespace:?} is not a namespace name (RFC 1123 label): {e}"
        ));
    }
    if let Err(e) = check_subdomain(account) {
        return Some(format!(
            "{expected}: the service account {account:?} is not a ServiceAccount name (RFC 1123 subdomain): {e}"
        ));
    }
    None
}

/// Whether some `<trust domain>/ns/<namespace>/sa/<service account>` starts with `start`.
fn principal_prefix(start: &str) -> bool {
    let parts: Vec<&str> = start.split('/').collect();
    let last = parts.len() - 1;
    parts.len() <= 5
        && parts.iter().enumerate().all(|(i, part)| {
            let whole = i < last;
            match i {
                0 => !whole || !part.is_empty(),
                1 => {
                    if whole {
                        *part == "ns"
                    } else {
                        "ns".starts_with(part)
                    }
                }
                3 => {
                    if whole {
                        *part == "sa"
                    } else {
                        "sa".starts_with(part)
                    }
                }
                2 => {
                    if whole {
                        check_dns_label(part).is_ok()
                    } else {
                        label_fragment(part, true)
                    }
                }
                _ => subdomain_fragment(part, true),
            }
        })
}

/// Whether some `<trust domain>/ns/<namespace>/sa/<service account>` ends with `end`.
fn principal_suffix(end: &str) -> bool {
    let parts: Vec<&str> = end.rsplit('/').collect();
    let last = parts.len() - 1;
    parts.len() <= 5
        && parts.iter().enumerate().all(|(j, part)| {
            // Counted from the end: the service account first.
            let whole = j < last;
            match j {
                0 => {
                    if whole {
                        check_subdomain(part).is_ok()
                    } else {
                        subdomain_fragment(part, false)
                    }
                }
                1 => {
                    if whole {
                        *part == "sa"
                    } else {
                        "sa".ends_with(part)
                    }
                }
                3 => {
                    if whole {
                        *part == "ns"
                    } else {
                        "ns".ends_with(part)
                    }
                }
                2 => {
                    if whole {
                        check_dns_label(part).is_ok()
                    } else {
                        label_fragment(part, false)
                    }
                }
                _ => true,
            }
        })
}

/// What is wrong with a `namespaces` entry, if anything.
fn namespace_problem(value: &str) -> Option<String> {
    let expected = "must be a namespace name (RFC 1123 label), \"*\", or a name with a \"*\" at its start or end";
    match Pattern::of(value) {
        Pattern::Any => None,
        Pattern::Literal => Some(LITERAL_STAR.to_owned()),
        Pattern::Exact(name) => check_dns_label(name)
            .err()
            .map(|e| format!("{expected}: {e}; it never matches")),
        Pattern::Prefix(part) if !label_fragment(part, true) => Some(format!(
            "{expected}: no namespace name starts with {part:?}"
        )),
        Pattern::Suffix(part) if !label_fragment(part, false) => {
            Some(format!("{expected}: no namespace name ends with {part:?}"))
        }
        Pattern::Prefix(_) | Pattern::Suffix(_) => None,
    }
}

#[cfg(test)]
#[path = "authorization_policy_tests.rs"]
mod tests;
