//! `mesh-admission audit` as users run it: the binary, its outputs and its exit codes (DESIGN.md
//! sections 2 and 13), on the worked example of docs/audit.md.

use mesh_admission::audit::report::ReportObject;
use mesh_admission::manifests::parse_objects;
use serde_json::Value;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/audit/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Istio's own SPIRE sample, from the shared corpus.
fn istio_sample() -> String {
    format!(
        "{}/../shared/corpus/istio-samples/security/spire/clusterspiffeid.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn audit(args: &[&str], stdin: &str) -> (i32, String, String) {
    testkit::run_command("audit", args, stdin)
}

#[test]
fn the_spire_label_mismatch_is_found_fixed_and_gone() {
    // Found: Istio's sample selects spiffe.io/spire-managed-identity, the pods carry
    // spire-managed-identity.
    let shop = fixture("shop.yaml");
    let (code, stdout, stderr) = audit(&["-f", &shop, "-f", &istio_sample()], "");
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "namespace shop\n  \
         error    spire-registration-missing            Deployment/shop/web: no ClusterSPIFFEID selects its pods: \
         istio-proxy never gets a SPIRE identity and never becomes Ready; ClusterSPIFFEID//example selects \
         spiffe.io/spire-managed-identity=true, its pods carry spire-managed-identity=true (spireIdentityLabel \
         and the ClusterSPIFFEID must agree)\n  \
         warning  selector-matches-nothing              PeerAuthentication/shop/api-permissive: \
         spec.selector.matchLabels: selects no workload of namespace \"shop\": the policy applies to nothing\n\
         \n1 errors, 1 warnings\n"
    );
    // Fixed: the sample selecting the label the webhook gives. The warning alone leaves exit 0.
    let (code, stdout, _) = audit(
        &["-f", &shop, "-f", &fixture("clusterspiffeid-mesh.yaml")],
        "",
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("spire-registration-missing"), "{stdout}");
    assert!(stdout.ends_with("\n0 errors, 1 warnings\n"), "{stdout}");
}

#[test]
fn json_lists_rule_level_object_message() {
    let shop = fixture("shop.yaml");
    let (code, stdout, _) = audit(
        &[
            "-f",
            &shop,
            "-f",
            &fixture("clusterspiffeid-wrong-form.yaml"),
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(code, 1, "{stdout}");
    let findings: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let rows: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| {
            assert_eq!(f.as_object().unwrap().len(), 4, "{f}");
            (
                f["rule"].as_str().unwrap(),
                f["level"].as_str().unwrap(),
                f["object"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("spire-id-format", "error", "ClusterSPIFFEID//by-pod-name"),
            (
                "selector-matches-nothing",
                "warning",
                "PeerAuthentication/shop/api-permissive"
            ),
        ]
    );
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.spiffeIDTemplate: gives \".PodMeta.Name\" as the service account")
    );
}

#[test]
fn reports_are_the_openreports_objects_of_the_findings() {
    let shop = fixture("shop.yaml");
    let wrong = fixture("clusterspiffeid-wrong-form.yaml");
    let (code, stdout, _) = audit(&["-f", &shop, "-f", &wrong, "-o", "reports"], "");
    assert_eq!(code, 1);
    let printed = parse_objects(&stdout).unwrap();
    let kinds: Vec<(&str, &str, &str)> = printed
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["metadata"]["namespace"].as_str().unwrap_or(""),
                r["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ClusterReport", "", "mesh-admission"),
            ("Report", "shop", "mesh-admission")
        ]
    );
    // Exactly what the pure function makes of the same findings, timestamps aside.
    let mut inputs = parse_objects(&std::fs::read_to_string(&shop).unwrap()).unwrap();
    inputs.extend(parse_objects(&std::fs::read_to_string(&wrong).unwrap()).unwrap());
    let cfg = mesh_admission::config::Config::default();
    let findings = mesh_admission::audit::audit_manifests(&inputs, &cfg);
    let stamp = printed[0]["results"][0]["timestamp"].clone();
    let seen = mesh_admission::audit::report::Timestamp {
        seconds: stamp["seconds"].as_i64().unwrap(),
        nanos: 0,
    };
    let expected: Vec<ReportObject> = mesh_admission::audit::report::reports(&findings, &|_| seen);
    let expected: Vec<Value> = expected
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(printed, expected);
    let shop_report = &printed[1];
    assert_eq!(shop_report["summary"]["warn"], 1);
    assert_eq!(shop_report["results"][0]["result"], "warn");
    assert_eq!(shop_report["results"][0]["policy"], "mesh-admission");
}

#[test]
fn exit_codes() {
    let cases: Vec<(&str, Vec<String>, &str, i32, &str)> = vec![
        (
            "nothing found",
            vec![],
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
            0,
            "0 errors, 0 warnings",
        ),
        (
            "unreadable YAML",
            vec![],
            "kind: [\n",
            2,
            "mesh-admission: <stdin>:",
        ),
        ("no objects", vec![], "", 2, "no objects in <stdin>"),
        (
            "no objects, allowed",
            vec!["--allow-empty".into()],
            "",
            0,
            "0 errors, 0 warnings",
        ),
        (
            "missing file",
            vec!["-f".into(), "/nonexistent.yaml".into()],
            "",
            2,
            "cannot read /nonexistent.yaml",
        ),
        (
            "bad configuration",
            vec!["--config".into(), fixture("shop.yaml")],
            "",
            2,
            "mesh-admission: ",
        ),
        (
            "an error",
            vec!["-f".into(), fixture("shop.yaml")],
            "",
            1,
            "1 errors",
        ),
    ];
    for (case, args, stdin, want, text) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = audit(&args, stdin);
        assert_eq!(code, want, "{case}: {stdout}{stderr}");
        assert!(
            stdout.contains(text) || stderr.contains(text),
            "{case}: {stdout}{stderr}"
        );
    }
}

#[test]
fn help_names_the_outputs_and_exit_codes() {
    let (code, stdout, _) = audit(&["--help"], "");
    assert_eq!(code, 0);
    for text in [
        "table",
        "json",
        "reports",
        "--config",
        "--filename",
        "spire-registration-missing",
        "2  unreadable",
    ] {
        assert!(stdout.contains(text), "{text}: {stdout}");
    }
}
