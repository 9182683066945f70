//! The lexical helpers of `policy::syntax` and the annotation rules built on them, each against an
//! independent reading of DESIGN.md section 5 (every helper runs on every input):
//! - `parse_port`: accepts exactly canonical decimals 1-65535, and gives back the number written;
//! - `check_label`: accepts exactly RFC 1035 / RFC 1123 labels of at most 63 characters;
//! - `parse_go_bool`: exactly Go's twelve spellings;
//! - `closest`: the first known key nearest (case ignored) within 2 edits, or none;
//! - `permissivePorts` on a Pod: one error per empty, malformed or repeated entry (one for an all-blank
//!   value), one warning per distinct port no container declares;
//! - HelmRelease `expose` / `host` / `port` / `mtlsMode`: denied iff the value breaks its rule, and an
//!   unknown `servicemesh.bigbang.dev/` key always denied.
#![no_main]

use fuzz_support::port_ok;
use libfuzzer_sys::fuzz_target;
use mesh_admission::policy::finding::Finding;
use mesh_admission::policy::syntax::{
    LabelKind, check_label, closest, parse_go_bool, parse_port,
};
use mesh_admission::config::Config;
use mesh_admission::policy::validate;
use serde_json::json;

const KNOWN: [&str; 6] = ["expose", "host", "port", "mtlsMode", "permissivePorts", "gateways"];
const DECLARED: [u16; 3] = [80, 443, 8080];

fn label_ok(label: &str, kind: LabelKind) -> bool {
    let b = label.as_bytes();
    let Some((&first, &last)) = b.first().zip(b.last()) else {
        return false;
    };
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && last != b'-'
        && match kind {
            LabelKind::Rfc1035 => first.is_ascii_lowercase(),
            LabelKind::Rfc1123 => first != b'-',
        }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for j in 0..=b.len() {
        d[0][j] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
        }
    }
    d[a.len()][b.len()]
}

fn errors_and_warnings(findings: &[Finding]) -> (usize, usize) {
    let errors = findings.iter().filter(|f| f.is_error()).count();
    (errors, findings.len() - errors)
}

fn check_permissive_ports(value: &str) {
    let mut expected = (0, 0);
    if value.trim().is_empty() {
        expected.0 = 1;
    } else {
        let mut seen = Vec::new();
        for raw in value.split(',') {
            match port_ok(raw.trim()) {
                None => expected.0 += 1,
                Some(p) if seen.contains(&p) => expected.0 += 1,
                Some(p) => {
                    seen.push(p);
                    if !DECLARED.contains(&p) {
                        expected.1 += 1;
                    }
                }
            }
        }
    }
    let pod = json!({
        "metadata": {"annotations": {"servicemesh.bigbang.dev/permissivePorts": value}},
        "spec": {
            "containers": [{"name": "app", "ports": [{"containerPort": 80}, {"containerPort": 443}]}],
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "ports": [{"containerPort": 8080}]},
                {"name": "init", "ports": [{"containerPort": 9090}]}
            ]
        }
    })
    .to_string();
    let findings = validate::validate("", "Pod", &pod, &Config::default()).expect("the pod decodes");
    assert_eq!(
        errors_and_warnings(&findings),
        expected,
        "permissivePorts {value:?}: {findings:?}"
    );
    for f in &findings {
        let _ = f.to_warning();
    }
}

fn check_helm_release(value: &str) {
    let host_ok = !value.is_empty()
        && value.chars().count() <= 253
        && value.split('.').all(|l| label_ok(l, LabelKind::Rfc1123));
    let rules: [(&str, bool); 4] = [
        ("expose", label_ok(value, LabelKind::Rfc1035)),
        ("host", host_ok),
        ("port", port_ok(value).is_some()),
        (
            "mtlsMode",
            ["STRICT", "PERMISSIVE", "DISABLE"].contains(&value),
        ),
    ];
    for (name, ok) in rules {
        let mut annotations = json!({
            "servicemesh.bigbang.dev/expose": "podinfo",
            "servicemesh.bigbang.dev/host": "podinfo.apps",
            "servicemesh.bigbang.dev/port": "9898",
        });
        annotations[format!("servicemesh.bigbang.dev/{name}")] = json!(value);
        let hr = json!({"metadata": {"name": "x", "annotations": annotations}}).to_string();
        let findings = validate::validate("helm.toolkit.fluxcd.io", "HelmRelease", &hr, &Config::default())
            .expect("the HelmRelease decodes");
        let (errors, warnings) = errors_and_warnings(&findings);
        assert_eq!(warnings, 0, "{findings:?}");
        assert_eq!(
            errors == 0,
            ok,
            "HelmRelease {name}={value:?}: {findings:?}"
        );
    }
    // The value as an annotation name under the Big Bang prefix.
    if !KNOWN.contains(&value) {
        let key = format!("servicemesh.bigbang.dev/{value}");
        let hr = json!({"metadata": {"annotations": {key.clone(): "x"}}}).to_string();
        let findings = validate::validate("helm.toolkit.fluxcd.io", "HelmRelease", &hr, &Config::default())
            .expect("the HelmRelease decodes");
        assert!(
            findings
                .iter()
                .any(|f| f.is_error() && f.message.contains("unknown annotation")),
            "unknown key {key:?} not denied: {findings:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text: &str = &text;

    match parse_port(text) {
        Ok(p) => {
            assert_eq!(Some(p), port_ok(text), "parse_port accepted {text:?}");
            assert_eq!(p.to_string(), text, "port {p} written {text:?}");
        }
        Err(e) => {
            assert_eq!(port_ok(text), None, "parse_port refused {text:?}: {e:?}");
            let _ = e.to_string();
        }
    }

    for kind in [LabelKind::Rfc1035, LabelKind::Rfc1123] {
        let r = check_label(text, kind);
        assert_eq!(
            r.is_ok(),
            label_ok(text, kind),
            "check_label({text:?}, {kind:?}) = {r:?}"
        );
        if let Err(e) = r {
            let _ = e.to_string();
        }
    }

    const GO: [(&str, bool); 12] = [
        ("1", true),
        ("t", true),
        ("T", true),
        ("TRUE", true),
        ("true", true),
        ("True", true),
        ("0", false),
        ("f", false),
        ("F", false),
        ("FALSE", false),
        ("false", false),
        ("False", false),
    ];
    let want = GO.iter().find(|(s, _)| *s == text).map(|(_, b)| *b);
    assert_eq!(parse_go_bool(text), want, "parse_go_bool({text:?})");

    // Edit distances stay small: annotation names are at most 63 characters.
    let short: String = text.chars().take(80).collect();
    let lower = short.to_ascii_lowercase();
    let distances: Vec<usize> = KNOWN
        .iter()
        .map(|k| levenshtein(&lower, &k.to_ascii_lowercase()))
        .collect();
    let best = distances.iter().copied().filter(|&d| d <= 2).min();
    let want = best.map(|b| KNOWN[distances.iter().position(|&d| d == b).unwrap()]);
    assert_eq!(closest(&short, &KNOWN), want, "closest({short:?})");

    check_permissive_ports(text);
    check_helm_release(text);
});
