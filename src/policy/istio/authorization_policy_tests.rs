//! The AuthorizationPolicy rows of DESIGN.md section 10, one test per row, good and bad values.

use serde_json::{Value, json};

use super::*;
use crate::config::Config;
use crate::policy::object::decode;

/// The default mesh (`trustDomain: cluster.local`).
fn default_mesh() -> MeshConfig {
    Config::default().mesh
}

/// The SPIRE mesh of seed `istio-spire-sidecar-injection.md` (`trustDomain: democluster.internal`),
/// with an alias and a federated partner.
fn spire_mesh() -> MeshConfig {
    let mut mesh = Config::default().mesh;
    mesh.trust_domain = "democluster.internal".into();
    mesh.trust_domain_aliases = vec!["old-cluster.internal".into()];
    mesh.federated_trust_domains = vec!["partner.example".into()];
    mesh
}

/// Every finding for a policy, rendered as the denial or warning shows it, errors marked `E`.
fn findings(policy: &Value, mesh: &MeshConfig) -> Vec<String> {
    let text = policy.to_string();
    let view: AuthorizationPolicy = decode(&text).expect("AuthorizationPolicy decodes");
    validate(&view, mesh)
        .iter()
        .map(|f| {
            let level = if f.is_error() { "E" } else { "W" };
            format!("{level} {f}")
        })
        .collect()
}

fn with_source(source: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "signing-api", "namespace": "docs"},
        "spec": {
            "selector": {"matchLabels": {"app": "signing-api"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": source}], "to": [{"operation": {"methods": ["POST"]}}]}],
        },
    })
}

/// The findings for one principal, without the field path (checked to be the principal's).
fn principal(value: &str, mesh: &MeshConfig) -> Vec<String> {
    let found = findings(&with_source(json!({"principals": [value]})), mesh);
    let field = "spec.rules[0].from[0].source.principals[0]: ";
    found
        .into_iter()
        .map(|f| f.replacen(field, "", 1))
        .collect()
}

fn ok(values: &[&str], mesh: &MeshConfig) {
    for value in values {
        assert_eq!(principal(value, mesh), Vec::<String>::new(), "{value}");
    }
}

#[test]
fn row_1_principals_are_star_the_istio_format_or_a_prefix_or_suffix_of_it() {
    let mesh = default_mesh();
    ok(
        &[
            "*",
            // The seed's own principals (istio-authz-routing.md).
            "cluster.local/ns/docs/sa/bucket-sa",
            "cluster.local/ns/docs/sa/identity-sa",
            "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
            "cluster.local/ns/docs/sa/*",
            "cluster.local/ns/docs/*",
            "cluster.local/*",
            "cluster.local/n*",
            "*/ns/docs/sa/bucket-sa",
            "*/sa/bucket-sa",
            "*bucket-sa",
            "*a/bucket-sa",
            "cluster.local/ns/docs/sa/sa.with.dots",
        ],
        &mesh,
    );
    let literal = format!(r#"E {LITERAL_STAR} (value "cluster.local/ns/*/sa/bucket-sa")"#);
    assert_eq!(
        principal("cluster.local/ns/*/sa/bucket-sa", &mesh),
        [literal]
    );
    for value in ["*bucket*", "**", "cluster.local/ns/docs/sa/bucket-*-sa"] {
        let found = principal(value, &mesh);
        assert_eq!(found.len(), 1, "{value}");
        assert!(
            found[0].contains("taken literally and never matches"),
            "{value}: {found:?}"
        );
    }
    let cases = [
        (
            "cluster.local/ns/docs/bucket-sa",
            "must be \"<trust domain>/ns/<namespace>/sa/<service account>\" or \"*\": it has 4 parts separated by '/', not 5, and never matches",
        ),
        ("bucket-sa", "it has 1 parts"),
        (
            "cluster.local/namespace/docs/sa/bucket-sa",
            "the 2nd and 4th parts must be \"ns\" and \"sa\"",
        ),
        (
            "cluster.local/ns/Docs/sa/bucket-sa",
            "the namespace \"Docs\" is not a namespace name (RFC 1123 label): must be lower-case",
        ),
        (
            "cluster.local/ns/docs/sa/bucket_sa",
            "the service account \"bucket_sa\" is not a ServiceAccount name",
        ),
        ("/ns/docs/sa/bucket-sa", "the trust domain is empty"),
        (
            "*/ns/docs/serviceaccount/bucket-sa",
            "a \"*\" at the start matches principals ending with \"/ns/docs/serviceaccount/bucket-sa\", which no <trust domain>/ns/<namespace>/sa/<service account> does",
        ),
        (
            "cluster.local/sa/*",
            "a \"*\" at the end matches principals starting with \"cluster.local/sa/\"",
        ),
        ("cluster.local/ns/docs/sa/bucket-sa/*", "starting with"),
        ("*/Bucket-sa", "ending with"),
    ];
    for (value, says) in cases {
        let found = principal(value, &mesh);
        assert_eq!(found.len(), 1, "{value}: {found:?}");
        assert!(
            found[0].starts_with("E ") && found[0].contains(says),
            "{value}: {found:?}"
        );
        assert!(
            found[0].ends_with(&format!("(value {value:?})")),
            "{found:?}"
        );
    }
}

#[test]
fn row_2_a_spiffe_scheme_never_matches_and_the_fix_is_named() {
    assert_eq!(
        principal(
            "spiffe://cluster.local/ns/docs/sa/bucket-sa",
            &default_mesh()
        ),
        [
            r#"E never matches: Istio adds "spiffe://" itself; did you mean "cluster.local/ns/docs/sa/bucket-sa"? (value "spiffe://cluster.local/ns/docs/sa/bucket-sa")"#
        ]
    );
    // Both mistakes at once: the fix corrects both.
    assert_eq!(
        principal(
            "SPIFFE://democluster.interal/ns/docs/sa/bucket-sa",
            &spire_mesh()
        ),
        [
            r#"E never matches: Istio adds "spiffe://" itself; did you mean "democluster.internal/ns/docs/sa/bucket-sa"? (value "SPIFFE://democluster.interal/ns/docs/sa/bucket-sa")"#
        ]
    );
    ok(&["spiffe-ns/ns/docs/sa/x"], &{
        let mut mesh = default_mesh();
        mesh.federated_trust_domains = vec!["spiffe-ns".into()];
        mesh
    });
}

#[test]
fn row_3_a_near_miss_of_this_meshs_trust_domain_is_a_typo() {
    let spire = spire_mesh();
    // The issue's example.
    assert_eq!(
        principal("democluster.interal/ns/docs/sa/bucket-sa", &spire),
        [
            r#"E trust domain "democluster.interal" is a typo of mesh.trustDomain "democluster.internal" and never matches; did you mean "democluster.internal/ns/docs/sa/bucket-sa"? (value "democluster.interal/ns/docs/sa/bucket-sa")"#
        ]
    );
    assert_eq!(
        principal("cluster.locl/ns/docs/sa/bucket-sa", &spire),
        [
            r#"E trust domain "cluster.locl" is a typo of "cluster.local" (Istio's name for this mesh) and never matches; did you mean "cluster.local/ns/docs/sa/bucket-sa"? (value "cluster.locl/ns/docs/sa/bucket-sa")"#
        ]
    );
    let alias = principal("old-cluster.internl/ns/docs/sa/*", &spire);
    assert_eq!(alias.len(), 1);
    assert!(
        alias[0].contains(r#"the alias "old-cluster.internal" of mesh.trustDomain"#)
            && alias[0].contains(r#"did you mean "old-cluster.internal/ns/docs/sa/*"?"#),
        "{alias:?}"
    );
    let case = principal("Cluster.Local/ns/docs/sa/bucket-sa", &default_mesh());
    assert!(
        case[0].starts_with("E trust domain \"Cluster.Local\" is a typo"),
        "{case:?}"
    );
    // Right: the configured domain, an alias, and cluster.local in any mesh.
    ok(
        &[
            "democluster.internal/ns/docs/sa/bucket-sa",
            "old-cluster.internal/ns/docs/sa/bucket-sa",
            "cluster.local/ns/docs/sa/bucket-sa",
            // A `*` in the trust domain: no trust domain to compare.
            "democluster.interal*",
            "*.interal/ns/docs/sa/bucket-sa",
        ],
        &spire,
    );
}

#[test]
fn row_4_another_trust_domain_matches_only_foreign_peers() {
    let spire = spire_mesh();
    ok(&["partner.example/ns/shop/sa/checkout"], &spire);
    assert_eq!(
        principal("other.example/ns/shop/sa/checkout", &spire),
        [r#"W foreign trust domain "other.example": matches only its peers"#]
    );
    assert_eq!(
        principal("partner.exampel/ns/shop/sa/checkout", &spire),
        [
            r#"W foreign trust domain "partner.exampel": matches only its peers; did you mean "partner.example"?"#
        ]
    );
    // The SPIRE seed's domain in a mesh configured with the default one: far from cluster.local.
    assert_eq!(
        principal("democluster.internal/ns/docs/sa/bucket-sa", &default_mesh()),
        [r#"W foreign trust domain "democluster.internal": matches only its peers"#]
    );
    let long = findings(
        &with_source(
            json!({"notPrincipals": ["a-rather-long-partner-trust-domain.example.org/ns/x/sa/y"]}),
        ),
        &spire,
    );
    assert_eq!(long.len(), 1);
    assert!(
        long[0].starts_with("W spec.rules[0].from[0].source.notPrincipals[0]: foreign"),
        "{long:?}"
    );
}

#[test]
fn row_5_namespaces_are_names_or_prefix_or_suffix_patterns() {
    let mesh = default_mesh();
    let policy = with_source(json!({
        "namespaces": ["docs", "*", "prod-*", "*-prod", "Docs", "prod-*-eu", "-*", "*-", "docs_2"],
        "notNamespaces": ["kube-system", "ns/docs"],
    }));
    let at = "spec.rules[0].from[0].source";
    assert_eq!(
        findings(&policy, &mesh),
        [
            format!(
                r#"E {at}.namespaces[4]: must be a namespace name (RFC 1123 label), "*", or a name with a "*" at its start or end: must be lower-case; it never matches (value "Docs")"#
            ),
            format!(r#"E {at}.namespaces[5]: {LITERAL_STAR} (value "prod-*-eu")"#),
            format!(
                r#"E {at}.namespaces[6]: must be a namespace name (RFC 1123 label), "*", or a name with a "*" at its start or end: no namespace name starts with "-" (value "-*")"#
            ),
            format!(
                r#"E {at}.namespaces[7]: must be a namespace name (RFC 1123 label), "*", or a name with a "*" at its start or end: no namespace name ends with "-" (value "*-")"#
            ),
            format!(
                r#"E {at}.namespaces[8]: must be a namespace name (RFC 1123 label), "*", or a name with a "*" at its start or end: must contain only a-z, 0-9 and '-', not '_'; it never matches (value "docs_2")"#
            ),
            format!(
                r#"E {at}.notNamespaces[1]: must be a namespace name (RFC 1123 label), "*", or a name with a "*" at its start or end: must contain only a-z, 0-9 and '-', not '/'; it never matches (value "ns/docs")"#
            ),
        ]
    );
}

#[test]
fn row_6_an_allow_rule_without_from_to_or_when_allows_everything() {
    let mesh = default_mesh();
    let policy = |action: Option<&str>, rules: Value| {
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}, "rules": rules});
        if let Some(action) = action {
            spec["action"] = json!(action);
        }
        json!({"kind": "AuthorizationPolicy", "spec": spec})
    };
    let warning = "W spec.rules[1]: has no from, to or when: this ALLOW policy allows every request to its workloads";
    let rules = json!([{"to": [{"operation": {"paths": ["/health"]}}]}, {}]);
    assert_eq!(
        findings(&policy(Some("ALLOW"), rules.clone()), &mesh),
        [warning]
    );
    assert_eq!(findings(&policy(None, rules.clone()), &mesh), [warning]);
    let empty_lists = json!([{"when": [{"key": "request.headers[x]", "values": ["1"]}]}, {"from": [], "to": [], "when": []}]);
    assert_eq!(findings(&policy(None, empty_lists), &mesh), [warning]);
    // DENY or AUDIT with an empty rule, and ALLOW with no rules at all (allow nothing), are intended.
    assert!(findings(&policy(Some("DENY"), rules.clone()), &mesh).is_empty());
    assert!(findings(&policy(Some("AUDIT"), rules), &mesh).is_empty());
    assert!(findings(&policy(Some("ALLOW"), json!(null)), &mesh).is_empty());
    assert!(findings(&json!({"kind": "AuthorizationPolicy", "spec": {}}), &mesh).is_empty());
    assert!(findings(&json!({"kind": "AuthorizationPolicy"}), &mesh).is_empty());
    // The seed's rule with only `to` (health checks open to all) is fine.
    let seed =
        json!([{"to": [{"operation": {"methods": ["GET"], "paths": ["/health", "/health/*"]}}]}]);
    assert!(findings(&policy(Some("ALLOW"), seed), &mesh).is_empty());
}

#[test]
fn every_problem_of_a_policy_is_reported_with_its_path() {
    let policy = json!({"spec": {"rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/docs/sa/a", "spiffe://cluster.local/ns/docs/sa/b"]}},
                  {"source": {"notPrincipals": ["cluster.local/ns/*/sa/c"], "namespaces": ["Docs"]}}]},
    ]}});
    let found = findings(&policy, &default_mesh());
    let fields: Vec<&str> = found
        .iter()
        .map(|f| f[2..].split(": ").next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].from[0].source.principals[1]",
            "spec.rules[0].from[1].source.notPrincipals[0]",
            "spec.rules[0].from[1].source.namespaces[0]",
        ]
    );
}

#[test]
fn warnings_fit_one_kubectl_line() {
    let mesh = spire_mesh();
    let policy = with_source(json!({"principals": ["other.example/ns/shop/sa/checkout"]}));
    let text = policy.to_string();
    let view: AuthorizationPolicy = decode(&text).unwrap();
    for finding in validate(&view, &mesh) {
        assert!(!finding.is_error());
        assert!(
            finding.to_string().chars().count() <= crate::policy::MAX_WARNING_CHARS,
            "{finding}"
        );
    }
}

#[test]
fn wrong_types_are_decode_errors_naming_the_field() {
    let err = decode::<AuthorizationPolicy>(
        r#"{"spec":{"rules":[{"from":[{"source":{"principals":"x"}}]}]}}"#,
    )
    .unwrap_err();
    assert_eq!(err.path, "spec.rules[0].from[0].source.principals");
    let err = decode::<AuthorizationPolicy>(r#"{"spec":{"rules":[[]]}}"#).unwrap_err();
    assert_eq!(err.path, "spec.rules[0]");
}

#[test]
fn principals_match_as_istio_matches_them() {
    let mesh = spire_mesh();
    let me = "democluster.internal/ns/shop/sa/checkout";
    let cases = [
        ("*", true),
        ("democluster.internal/ns/shop/sa/checkout", true),
        // `cluster.local` and an alias stand for the trust domain.
        ("cluster.local/ns/shop/sa/checkout", true),
        ("old-cluster.internal/ns/shop/sa/checkout", true),
        ("cluster.local/ns/shop/*", true),
        ("*/sa/checkout", true),
        ("*/ns/shop/sa/cart", false),
        // A typo of the trust domain, a foreign one, the scheme, a `*` inside: never.
        ("democluster.intenral/ns/shop/sa/checkout", false),
        ("other.example/ns/shop/sa/checkout", false),
        ("spiffe://democluster.internal/ns/shop/sa/checkout", false),
        ("democluster.internal/ns/*/sa/checkout", false),
        ("cluster.local/ns/shop/sa/cart", false),
    ];
    for (pattern, want) in cases {
        assert_eq!(principal_matches(pattern, me, &mesh), want, "{pattern}");
    }
    for (pattern, want) in [
        ("*", true),
        ("shop", true),
        ("sh*", true),
        ("*op", true),
        ("s*p", false),
        ("other", false),
    ] {
        assert_eq!(namespace_matches(pattern, "shop"), want, "{pattern}");
    }
}
