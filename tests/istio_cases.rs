//! The case table of `hack/istioctl-compare.sh` (tests/fixtures/istio/cases/): objects that are wrong in
//! the ways DESIGN.md section 10 lists, and controls written as the seeds write them. Each file says
//! in its header what mesh-admission must answer (`# expect: deny | warn | admit`) and, with
//! `# mesh: spire`, that it is read in the SPIRE seed's trust domain (`democluster.internal`).
//!
//! The script compares the same files with `istioctl validate` and `istioctl analyze`; this test keeps
//! our column of that table true on every run, through `review`, the server's own code.

use std::path::Path;

use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use mesh_admission::policy::validate::validate;
use mesh_admission::review::review_object;
use testkit::fixtures::header;

/// The SPIRE seed's mesh, as the script passes it to `mesh-admission review --config`.
pub const SPIRE_CONFIG: &str = "mesh:\n  trustDomain: democluster.internal\n";

#[test]
fn every_case_gets_the_answer_its_header_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let spire = Config::from_yaml(SPIRE_CONFIG).unwrap();
    let default = Config::default();
    let mut counts = std::collections::BTreeMap::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let text = std::fs::read_to_string(path).unwrap();
        let expect = header(&text, "expect").unwrap_or_else(|| panic!("{name}: no # expect:"));
        assert!(header(&text, "case").is_some(), "{name}: no # case:");
        let cfg = match header(&text, "mesh") {
            Some("spire") => &spire,
            None => &default,
            Some(other) => panic!("{name}: unknown mesh {other:?}"),
        };
        let objects = parse_objects(&text).unwrap();
        assert_eq!(objects.len(), 1, "{name}: one object per case");
        let review = review_object(&objects[0], "docs", cfg, "case");
        let got = match (&review.denial, review.warnings.is_empty()) {
            (Some(_), _) => "deny",
            (None, false) => "warn",
            (None, true) => "admit",
        };
        assert_eq!(
            got, expect,
            "{name}: denial {:?}, warnings {:?}",
            review.denial, review.warnings
        );
        // Only the rule the case is about speaks: a denied case has its one error and nothing else, a
        // warned one only warnings.
        let object = &objects[0];
        let group = object["apiVersion"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let kind = object["kind"].as_str().unwrap();
        let findings = validate(group, kind, &object.to_string(), cfg).unwrap();
        let errors = findings.iter().filter(|f| f.is_error()).count();
        let fits = match expect {
            "deny" => errors == 1 && findings.len() == 1,
            "warn" => errors == 0 && !findings.is_empty(),
            _ => findings.is_empty(),
        };
        assert!(fits, "{name}: {findings:?}");
        *counts.entry(expect.to_owned()).or_insert(0) += 1;
    }
    // The table the README reports: at least 14 wrong objects, and the controls.
    assert!(counts["deny"] + counts["warn"] >= 14, "{counts:?}");
    assert!(counts["admit"] >= 3, "{counts:?}");
}
