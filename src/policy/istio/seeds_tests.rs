//! The seeds' own Istio objects (`../shared/seeds`, read where they are) pass every rule of DESIGN.md
//! section 10, in a mesh with the default trust domain and in the SPIRE seed's
//! (`democluster.internal`): `cluster.local` in a principal means "this mesh" in both.
//!
//! The seeds are Markdown: their YAML blocks are read as written. Some are `spec:` fragments without
//! `kind` (istio-authz-routing.md); those are taken for the kind their fields belong to. A `...` line
//! that elides the rest of a list is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use testkit::fixtures::code_blocks;

use crate::config::Config;
use crate::policy::validate::validate;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds")
}

/// `(group, kind)` of a document: its own, or for a `spec:` fragment the kind its fields belong to.
fn kind_of(doc: &Value) -> Option<(String, String)> {
    if let Some(kind) = doc["kind"].as_str() {
        let api_version = doc["apiVersion"].as_str().unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        return Some((group.to_owned(), kind.to_owned()));
    }
    let spec = doc.get("spec")?;
    if spec.get("rules").is_some() || spec.get("action").is_some() {
        Some(("security.istio.io".into(), "AuthorizationPolicy".into()))
    } else if spec.get("http").is_some() || spec.get("hosts").is_some() {
        Some(("networking.istio.io".into(), "VirtualService".into()))
    } else {
        None
    }
}

#[test]
fn the_seeds_istio_objects_pass_in_either_trust_domain() {
    let default = Config::default();
    let mut spire = Config::default();
    spire.mesh.trust_domain = "democluster.internal".into();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for seed in [
        "kubestock-istio-mtls.md",
        "istio-authz-routing.md",
        "istio-spire-sidecar-injection.md",
    ] {
        let path = seeds_dir().join(seed);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for block in code_blocks(&text) {
            for document in yaml_serde::Deserializer::from_str(&block) {
                // Shell snippets and directory trees are not YAML objects.
                let Ok(doc) = Value::deserialize(document) else {
                    break;
                };
                let Some((group, kind)) = kind_of(&doc) else {
                    continue;
                };
                if !group.ends_with(".istio.io") {
                    continue;
                }
                *counts.entry(kind.clone()).or_default() += 1;
                for cfg in [&default, &spire] {
                    let found = validate(&group, &kind, &doc.to_string(), cfg)
                        .unwrap_or_else(|e| panic!("{seed}: {kind}: {e}"));
                    assert!(
                        found.is_empty(),
                        "{seed}: {kind} (trust domain {}): {found:?}\n{doc:#}",
                        cfg.mesh.trust_domain
                    );
                }
            }
        }
    }
    let counts: Vec<(&str, usize)> = counts.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        counts,
        [
            ("AuthorizationPolicy", 2),
            ("DestinationRule", 1),
            ("Gateway", 1),
            ("PeerAuthentication", 3),
            ("VirtualService", 2),
        ]
    );
}
