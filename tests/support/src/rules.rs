//! DESIGN.md section 4 as checks on a mutated object, shared by the apiserver-flow suite and the
//! property tests.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use mesh_admission::config::Config;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Paths that k8s-openapi does not know in `value` (the object's unknown fields).
fn unknown_fields<T: DeserializeOwned>(value: &Value) -> Result<BTreeSet<String>, String> {
    let mut unknown = BTreeSet::new();
    serde_ignored::deserialize(value.clone(), |path| {
        unknown.insert(path.to_string());
    })
    .map(|_: T| unknown)
    .map_err(|e| e.to_string())
}

fn check_typed<T: DeserializeOwned>(before: &Value, after: &Value, what: &str) {
    // A corpus object that k8s-openapi cannot read at all (an old API shape) is not ours to judge; the
    // patched object must not be any worse.
    let Ok(before) = unknown_fields::<T>(before) else {
        return;
    };
    let after = unknown_fields::<T>(after)
        .unwrap_or_else(|e| panic!("{what}: mutated object no longer decodes: {e}"));
    let introduced: Vec<&String> = after.difference(&before).collect();
    assert!(
        introduced.is_empty(),
        "{what}: the patch introduced unknown fields {introduced:?}"
    );
}

/// DESIGN.md section 4 on a mutated Pod.
pub fn check_pod(original: &Value, pod: &Value, namespace: &str, cfg: &Config, what: &str) {
    check_typed::<Pod>(original, pod, what);
    // No volume the patch wrote has two sources (the apiserver refuses them); none at all is legal, as
    // the apiserver defaults it to emptyDir. Volumes the user sent unchanged are theirs.
    let sent = original["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for volume in pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| !sent.contains(v))
    {
        let sources = volume
            .as_object()
            .map_or(0, |v| v.keys().filter(|k| *k != "name").count());
        assert!(
            sources <= 1,
            "{what}: volume with {sources} sources: {volume}"
        );
    }
    let label = |k: &str| pod["metadata"]["labels"][k].as_str().map(str::to_owned);
    let inject = label("sidecar.istio.io/inject").or_else(|| {
        pod["metadata"]["annotations"]["sidecar.istio.io/inject"]
            .as_str()
            .map(str::to_owned)
    });
    let untouched = cfg.is_excluded_namespace(namespace)
        || pod["spec"]["hostNetwork"] == true
        || inject
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if untouched {
        assert_eq!(pod, original, "{what}: must be untouched");
        return;
    }
    assert!(
        label("sidecar.istio.io/inject").is_some(),
        "{what}: no inject label"
    );
    let identity =
        label(&cfg.spire_identity_label).unwrap_or_else(|| panic!("{what}: no identity label"));
    if identity.eq_ignore_ascii_case("false") {
        return;
    }
    let templates = pod["metadata"]["annotations"]["inject.istio.io/templates"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no templates"));
    let names: Vec<&str> = templates.split(',').collect();
    let spire = if names.contains(&"gateway") {
        "spire-gw"
    } else {
        "spire"
    };
    assert!(names.contains(&spire), "{what}: {templates}");
    let sockets: Vec<&Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == "workload-socket")
        .collect();
    assert_eq!(sockets.len(), 1, "{what}");
    assert_eq!(
        sockets[0]["csi"],
        serde_json::json!({"driver": "csi.spiffe.io", "readOnly": true}),
        "{what}"
    );
}

pub fn check_namespace(original: &Value, ns: &Value, cfg: &Config, what: &str) {
    check_typed::<Namespace>(original, ns, what);
    let name = ns["metadata"]["name"].as_str().unwrap_or("");
    let labels = &original["metadata"]["labels"];
    if cfg.is_excluded_namespace(name)
        || labels.get("istio-injection").is_some()
        || labels.get("istio.io/rev").is_some()
    {
        assert_eq!(ns, original, "{what}: must be untouched");
    } else {
        assert_eq!(
            ns["metadata"]["labels"]["istio-injection"], "enabled",
            "{what}"
        );
    }
}
