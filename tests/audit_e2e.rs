//! The reports `audit --output reports` prints (the controller's, DESIGN.md section 13) against the
//! OpenReports CRDs (`../shared/crds/openreports.io_*.yaml`, v0.2.1) in a real kube-apiserver:
//! created with strict field validation, so that a field the schema does not know is refused, not
//! silently pruned, and read back unchanged.

use mesh_admission::audit::report::{self, Timestamp};
use mesh_admission::audit::{AuditFinding, Level, Subject};
use mesh_admission::manifests::parse_objects;
use mesh_admission::policy::kinds;
use serde_json::Value;
use testkit::{ControlPlane, shared_crds};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/audit/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Creates the objects of `yaml` (server-side strict validation) and returns them as stored.
fn create(cp: &ControlPlane, yaml: &str) -> Vec<Value> {
    cp.kubectl_stdin_ok(["create", "--validate=strict", "-f", "-"], yaml);
    parse_objects(yaml)
        .unwrap()
        .iter()
        .map(|r| {
            let kind = r["kind"].as_str().unwrap().to_lowercase() + "s.openreports.io";
            let name = r["metadata"]["name"].as_str().unwrap();
            match r["metadata"]["namespace"].as_str() {
                Some(ns) => cp.get_json([kind.as_str(), "-n", ns, name]),
                None => cp.get_json([kind.as_str(), name]),
            }
        })
        .collect()
}

/// What the API stored must be what was sent: nothing pruned, nothing refused.
fn assert_stored_as_sent(sent: &str, stored: &[Value]) {
    let sent = parse_objects(sent).unwrap();
    assert_eq!(sent.len(), stored.len());
    for (sent, stored) in sent.iter().zip(stored) {
        for field in ["apiVersion", "kind", "summary", "results"] {
            assert_eq!(
                sent[field], stored[field],
                "{field} of {}",
                sent["metadata"]
            );
        }
        assert_eq!(sent["metadata"]["labels"], stored["metadata"]["labels"]);
    }
}

#[test]
fn reports_pass_the_openreports_schema_and_are_stored_as_printed() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    cp.kubectl_stdin_ok(
        ["create", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n",
    );

    // The worked example's findings: a ClusterReport (the ClusterSPIFFEID) and shop's Report.
    let (code, printed, stderr) = testkit::run_command(
        "audit",
        &[
            "-f",
            &fixture("shop.yaml"),
            "-f",
            &fixture("clusterspiffeid-wrong-form.yaml"),
            "-o",
            "reports",
        ],
        "",
    );
    assert_eq!(code, 1, "{stderr}");
    let stored = create(&cp, &printed);
    assert_stored_as_sent(&printed, &stored);
    assert_eq!(stored[0]["kind"], "ClusterReport");
    assert_eq!(stored[1]["metadata"]["namespace"], "shop");

    // 2,500 findings with long messages in one namespace: split reports, each under 256 KiB.
    let findings: Vec<AuditFinding> = (0..2500)
        .map(|i| {
            let subject = Subject::new(&kinds::DEPLOYMENT, "big", &format!("web-{i:04}"));
            AuditFinding::new(
                "spire-registration-missing",
                if i % 2 == 0 {
                    Level::Error
                } else {
                    Level::Warning
                },
                subject,
                format!("{} {}", "x".repeat(180), i),
            )
        })
        .collect();
    let seen = Timestamp {
        seconds: 1_765_000_000,
        nanos: 5,
    };
    let reports = report::reports(&findings, &|_| seen);
    assert!(reports.len() >= 3, "{}", reports.len());
    let mut yaml = String::new();
    for (i, r) in reports.iter().enumerate() {
        let json = serde_json::to_vec(r).unwrap();
        assert!(
            json.len() < 256 * 1024,
            "{} is {} bytes",
            r.id(),
            json.len()
        );
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&yaml_serde::to_string(r).unwrap());
    }
    let stored = create(&cp, &yaml);
    assert_stored_as_sent(&yaml, &stored);
    let total: u64 = stored
        .iter()
        .map(|r| r["summary"]["fail"].as_u64().unwrap() + r["summary"]["warn"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2500);
    let names: Vec<&str> = stored
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..3],
        ["mesh-admission", "mesh-admission-2", "mesh-admission-3"]
    );
}

/// ClusterSPIFFEIDs at `/validate` through kubectl: one meant for the mesh with a form Istio refuses
/// is refused with the webhook's message; SPIRE's own demo ID outside the mesh and Istio's sample are
/// stored.
#[test]
fn cluster_spiffe_ids_meant_for_the_mesh_are_refused_others_stored() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let webhook = testkit::Webhook::start_with(&cp, &testkit::WebhookOptions::default());
    webhook.register(&cp, "Fail");
    let wrong = std::fs::read_to_string(fixture("clusterspiffeid-wrong-form.yaml")).unwrap();
    cp.assert_refused(
        &["apply", "-f", "-"],
        &wrong,
        "spec.spiffeIDTemplate: gives \".PodMeta.Name\" as the service account, Istio needs \
         \"{{ .PodSpec.ServiceAccountName }}\" or a literal one (value \"spiffe://{{ .TrustDomain }}/ns/\
         {{ .PodMeta.Namespace }}/sa/{{ .PodMeta.Name }}\")",
        &["get", "clusterspiffeids.spire.spiffe.io", "by-pod-name"],
    );
    let corpus = format!("{}/../shared/corpus", env!("CARGO_MANIFEST_DIR"));
    for (file, name) in [
        (
            "spire-controller-manager/demo/config/greeter-server-id.yaml",
            "greeter-server",
        ),
        (
            "istio-samples/security/spire/clusterspiffeid.yaml",
            "example",
        ),
    ] {
        let output = cp.kubectl(["apply", "-f", &format!("{corpus}/{file}")]);
        assert!(output.status.success(), "{file}: {}", cp.report(&output));
        assert!(
            output.stderr.is_empty(),
            "{file}: no warning expected: {}",
            cp.report(&output)
        );
        let stored = cp.get_json(["clusterspiffeids.spire.spiffe.io", name]);
        assert_eq!(stored["metadata"]["name"], name);
    }
}

/// `audit --cluster` reads what is stored (here with no webhook installed, as when it was away) and
/// finds what `audit` finds in the same objects as files.
#[test]
fn audit_of_the_cluster_finds_what_audit_of_the_files_finds() {
    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let release = "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: web
  namespace: shop
  annotations:
    servicemesh.bigbang.dev/expose: web
    servicemesh.bigbang.dev/host: web
    servicemesh.bigbang.dev/port: 80a
spec:
  interval: 5m
  chart: {spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}}
";
    let release_file = cp.logs().join("helmrelease.yaml");
    std::fs::write(&release_file, release).unwrap();
    let sample = format!(
        "{}/../shared/corpus/istio-samples/security/spire/clusterspiffeid.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let files = [
        fixture("shop.yaml"),
        sample,
        release_file.display().to_string(),
    ];
    cp.kubectl_ok(["create", "namespace", "shop"]);
    for file in &files {
        cp.kubectl_ok(["create", "-f", file.as_str()]);
    }
    let json = |args: &[&str]| -> (i32, Vec<(String, String, String)>) {
        let output = std::process::Command::new(testkit::mesh_admission())
            .arg("audit")
            .args(args)
            .args(["-o", "json"])
            .env("KUBECONFIG", cp.kubeconfig())
            .output()
            .unwrap();
        let findings: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", cp.report(&output)));
        let rows = findings
            .iter()
            .map(|f| {
                let text = |k: &str| f[k].as_str().unwrap().to_owned();
                (text("rule"), text("object"), text("message"))
            })
            .collect();
        (output.status.code().unwrap_or(-1), rows)
    };
    let (code, live) = json(&["--cluster"]);
    let rules: Vec<(&str, &str)> = live
        .iter()
        .map(|(r, o, _)| (r.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("spire-registration-missing", "Deployment/shop/web"),
            (
                "metadata.annotations[servicemesh.bigbang.dev/port]",
                "HelmRelease/shop/web"
            ),
            (
                "selector-matches-nothing",
                "PeerAuthentication/shop/api-permissive"
            ),
        ]
    );
    assert_eq!(code, 1);
    assert_eq!(
        live[1].2,
        "metadata.annotations[servicemesh.bigbang.dev/port]: must be a port number 1-65535 (value \"80a\")"
    );
    let file_args: Vec<&str> = files.iter().flat_map(|f| ["-f", f.as_str()]).collect();
    let (offline_code, offline) = json(&file_args);
    assert_eq!((offline_code, offline), (code, live));
}

/// The controller's reports (DESIGN.md section 13) through the real apiserver: a bad object stored
/// while the webhook is away appears in its namespace's Report; the report changes when it is
/// fixed and disappears when the namespace has nothing left; a steady cluster gets no report write
/// in 60 s (the apiserver's own request counters).
#[test]
fn the_controller_writes_reports_only_on_change_and_deletes_empty_ones() {
    use std::time::Duration;
    use testkit::controller::apiserver_requests;
    use testkit::{Controller, ControllerOptions, wait_for};

    let cp = ControlPlane::start();
    cp.apply_crds(&shared_crds());
    let sample = format!(
        "{}/../shared/corpus/istio-samples/security/spire/clusterspiffeid.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    cp.kubectl_ok(["create", "namespace", "shop"]);
    cp.kubectl_ok(["create", "-f", &fixture("shop.yaml")]);
    cp.kubectl_ok(["create", "-f", &sample]);
    let _controller = Controller::start_with(
        &cp,
        &ControllerOptions {
            args: vec!["--report-interval".into(), "1s".into()],
            ..ControllerOptions::default()
        },
    );
    let rules = |cp: &ControlPlane| -> Option<Vec<String>> {
        let out = cp.kubectl([
            "get",
            "reports.openreports.io",
            "-n",
            "shop",
            "mesh-admission",
            "-o",
            "json",
        ]);
        if !out.status.success() {
            return None;
        }
        let report: Value = serde_json::from_slice(&out.stdout).ok()?;
        let results = report["results"].as_array()?;
        Some(
            results
                .iter()
                .map(|r| r["rule"].as_str().unwrap_or("").to_owned())
                .collect(),
        )
    };
    let limit = Duration::from_secs(30);
    let every = Duration::from_millis(500);
    // Found: the label mismatch, and the leftover PeerAuthentication.
    let found = wait_for("shop's report", limit, every, || rules(&cp));
    assert_eq!(
        found,
        ["spire-registration-missing", "selector-matches-nothing"]
    );
    let report = cp.get_json(["reports.openreports.io", "-n", "shop", "mesh-admission"]);
    assert_eq!(report["summary"]["fail"], 1);
    assert_eq!(report["results"][0]["resources"][0]["name"], "web");
    assert!(
        report["results"][0]["resources"][0]["uid"].is_string(),
        "{report}"
    );

    // Fixed: the ClusterSPIFFEID selects the label the webhook gives.
    // `replace`: an apply would merge the old selector key into the new one.
    cp.kubectl_ok(["replace", "-f", &fixture("clusterspiffeid-mesh.yaml")]);
    wait_for("the fix in the report", limit, every, || {
        rules(&cp).filter(|r| r == &["selector-matches-nothing"])
    });

    // A steady cluster: no report write in 60 s, though the controller audits every second.
    let report_writes = |cp: &ControlPlane| -> f64 {
        apiserver_requests(cp)
            .iter()
            .filter(|(series, _)| {
                let (verb, resource) = series.split_once(' ').unwrap_or_default();
                resource.ends_with("reports") && !matches!(verb, "GET" | "LIST" | "WATCH")
            })
            .map(|(_, n)| n)
            .sum()
    };
    let before = report_writes(&cp);
    assert!(before >= 2.0, "the report writes are counted: {before}");
    let lists_before = apiserver_requests(&cp)
        .get("LIST reports")
        .copied()
        .unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(60));
    assert_eq!(
        report_writes(&cp),
        before,
        "report writes in 60 s of steady state"
    );
    let lists = apiserver_requests(&cp)
        .get("LIST reports")
        .copied()
        .unwrap_or(0.0);
    assert!(
        lists > lists_before + 10.0,
        "the controller kept auditing: {lists_before} → {lists}"
    );

    // Nothing left in shop: its report is deleted.
    cp.kubectl_ok([
        "delete",
        "peerauthentications.security.istio.io",
        "-n",
        "shop",
        "api-permissive",
    ]);
    wait_for("shop's report deleted", limit, every, || {
        rules(&cp).is_none().then_some(())
    });
}
