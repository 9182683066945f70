//! `graph` (DESIGN.md section 12) from the outside: the command's outputs and exit codes, the
//! seeds' and the corpus's manifests, and the pictures: the SVG and the HTML page parsed, and the
//! page loaded in headless Chromium (Debian's `chromium`, which `hack/install-tools.sh` installs).

use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_admission::config::Config;
use mesh_admission::graph::{self, Topology};
use mesh_admission::manifests::parse_objects;
use mesh_admission::model::Model;
use serde_json::Value;
use testkit::fixtures::code_blocks;
use testkit::temp_dir;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

fn run(args: &[&str]) -> (i32, String, String) {
    testkit::run_command("graph", args, "")
}

#[test]
fn the_table_lists_open_connections_then_the_denied_ones_by_layer() {
    let (code, stdout, stderr) = run(&["-f", &fixture("shop.yaml"), "--no-generated"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("FROM"), "{stdout}");
    assert!(
        lines.iter().any(|l| l.starts_with("shop/web")
            && l.contains("shop/db")
            && l.contains("5432")
            && l.contains("allowed")
            && l.contains("mtls")
            && l.contains("AuthorizationPolicy/shop/db-callers")),
        "{stdout}"
    );
    let mtls = stdout.find("denied by mtls").expect("an mtls group");
    let network = stdout
        .find("denied by networkpolicy")
        .expect("a networkpolicy group");
    assert!(network < mtls, "groups in layer order:\n{stdout}");
    assert!(
        stdout[mtls..].contains("legacy/batch -> shop/web:8080"),
        "{stdout}"
    );
}

#[test]
fn generated_objects_are_included_unless_asked_not_to() {
    let with = run(&["-f", &fixture("shop.yaml"), "-o", "json"]);
    let without = run(&["-f", &fixture("shop.yaml"), "-o", "json", "--no-generated"]);
    assert_eq!((with.0, without.0), (0, 0), "{} {}", with.2, without.2);
    // render's allow-egress-istiod isolates the meshed namespace's egress.
    assert!(with.1.contains("NetworkPolicy/shop/allow-egress-istiod"));
    assert!(!without.1.contains("allow-egress-istiod"));
}

#[test]
fn json_has_the_documented_fields() {
    let (code, stdout, stderr) =
        run(&["-f", &fixture("shop.yaml"), "--no-generated", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let graph: Value = serde_json::from_str(&stdout).unwrap();
    let web = graph["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "shop/web")
        .unwrap();
    assert_eq!(web["identity"], "cluster.local/ns/shop/sa/web");
    assert_eq!(web["sidecar"], true);
    let batch = graph["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "legacy/batch")
        .unwrap();
    assert_eq!(batch["sidecar"], false);
    let denied = graph["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == "legacy/batch" && c["to"] == "shop/web")
        .unwrap();
    assert_eq!(denied["port"], 8080);
    assert_eq!(denied["verdict"], "denied");
    assert_eq!(denied["layer"], "mtls");
    assert_eq!(denied["security"], "plaintext");
    assert_eq!(
        denied["by"],
        serde_json::json!(["PeerAuthentication/shop/default"])
    );
}

#[test]
fn explain_prints_every_layer_and_unknown_names_exit_2() {
    let (code, stdout, stderr) = run(&[
        "-f",
        &fixture("shop.yaml"),
        "--no-generated",
        "--explain",
        "legacy/batch",
        "shop/web:8080",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("legacy/batch -> shop/web:8080: denied"),
        "{stdout}"
    );
    for layer in ["networkpolicy", "mtls", "authorization"] {
        assert!(stdout.contains(&format!("  {layer}")), "{layer}:\n{stdout}");
    }
    assert!(
        stdout.contains("accepts STRICT on port 8080: refused"),
        "{stdout}"
    );
    let (code, _, stderr) = run(&[
        "-f",
        &fixture("shop.yaml"),
        "--explain",
        "shop/nope",
        "shop/web",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no workload \"shop/nope\""), "{stderr}");
}

#[test]
fn diff_exits_1_when_a_connection_becomes_more_open() {
    let dir = temp_dir("graph-diff");
    let base = std::fs::read_to_string(fixture("shop.yaml")).unwrap();
    // Dropping the STRICT PeerAuthentication lets the unmeshed batch in.
    let head = base.replace("mtls: {mode: STRICT}", "mtls: {mode: PERMISSIVE}");
    assert_ne!(base, head);
    let (base_file, head_file) = (dir.join("base.yaml"), dir.join("head.yaml"));
    std::fs::write(&base_file, &base).unwrap();
    std::fs::write(&head_file, &head).unwrap();
    let (base_file, head_file) = (base_file.to_str().unwrap(), head_file.to_str().unwrap());
    let (code, stdout, stderr) = run(&["-f", head_file, "--diff", base_file]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("legacy/batch -> shop/web:8080  denied -> allowed (more open"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["-f", base_file, "--diff", head_file]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("allowed -> denied (more closed"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["-f", base_file, "--diff", base_file]);
    assert_eq!((code, stdout.as_str()), (0, "no connection changed\n"));
}

#[test]
fn unreadable_input_exits_2() {
    let dir = temp_dir("graph-unreadable");
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, "kind: [unclosed\n").unwrap();
    let (code, _, stderr) = run(&["-f", broken.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    // A policy the model cannot read would change verdicts unseen: refused too.
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: a}\nspec: {podSelector: [1]}\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["-f", policy.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("NetworkPolicy a/p: cannot be read"),
        "{stderr}"
    );
    let (code, _, _) = run(&["-f", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(code, 2);
}

#[test]
fn from_and_to_keep_the_connections_they_name() {
    let (code, stdout, stderr) = run(&[
        "-f",
        &fixture("shop.yaml"),
        "--no-generated",
        "-o",
        "json",
        "--from",
        "legacy",
        "--to",
        "shop/web",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let graph: Value = serde_json::from_str(&stdout).unwrap();
    let connections = graph["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{stdout}");
    assert_eq!(connections[0]["from"], "legacy/batch");
    let names: Vec<&str> = graph["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["legacy/batch", "shop/web"]);
}

/// The AuthorizationPolicy `spec:` fragments of a seed (the per-service principals of
/// istio-authz-routing.md), as policies of their own.
fn policy_fragments(text: &str, seen: usize) -> Vec<Value> {
    yaml_serde::from_str::<Value>(text)
        .into_iter()
        .filter(|o| o.get("kind").is_none() && o["spec"].get("rules").is_some())
        .enumerate()
        .map(|(i, o)| {
            serde_json::json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("seed-{}", seen + i), "namespace": "docs"},
                "spec": o["spec"],
            })
        })
        .collect()
}

/// Every whole object (with `apiVersion` and `kind`) of a YAML text; other text is skipped.
fn objects_of(text: &str) -> Vec<Value> {
    parse_objects(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.get("apiVersion").is_some() && o.get("kind").is_some())
        .collect()
}

/// The graph of `objects`, with `render`'s objects when `generated`.
fn graph_of(objects: &[Value], config: &Config, generated: bool) -> graph::Graph {
    let model = Model::from_manifests(objects);
    assert!(model.problems.is_empty(), "{:?}", model.problems);
    let model = if generated {
        graph::with_generated(&model, config)
    } else {
        model
    };
    Topology::new(&model, config).graph()
}

/// The objects of a seed: its whole objects and its AuthorizationPolicy fragments.
fn seed_objects(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(shared().join("seeds").join(name)).unwrap();
    let mut objects = Vec::new();
    for block in code_blocks(&text) {
        objects.extend(objects_of(&block));
        objects.extend(policy_fragments(&block, objects.len()));
    }
    objects
}

#[test]
fn the_seeds_objects_run_through() {
    // Each block of each seed alone (a seed may show an object before and after a change).
    let config = Config::from_yaml("mesh: {trustDomain: democluster.internal}").unwrap();
    let mut blocks = 0;
    for entry in std::fs::read_dir(shared().join("seeds")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for block in code_blocks(&text) {
            let mut objects = objects_of(&block);
            objects.extend(policy_fragments(&block, 0));
            blocks += usize::from(!objects.is_empty());
            graph_of(&objects, &config, true);
        }
    }
    assert!(blocks >= 5, "{blocks}");
    // KubeStock's mesh-wide STRICT and the per-service principals of the docs namespace, with
    // workloads for the policies to select.
    let mut objects = seed_objects("kubestock-istio-mtls.md");
    objects.extend(seed_objects("istio-authz-routing.md"));
    let workloads = std::fs::read_to_string(fixture("seed-docs-workloads.yaml")).unwrap();
    objects.extend(parse_objects(&workloads).unwrap());
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        kinds
            .iter()
            .filter(|k| **k == "AuthorizationPolicy")
            .count()
            >= 2,
        "{kinds:?}"
    );
    // As written: render's allow-egress-istiod would isolate the docs namespace's egress.
    let graph = graph_of(&objects, &Config::default(), false);
    let find = |from: &str, to: &str| {
        graph
            .connections
            .iter()
            .find(|c| &*c.from == from && &*c.to == to && c.port == 8080)
            .unwrap_or_else(|| panic!("{from} -> {to}"))
    };
    let bucket = find("docs/bucket-api", "docs/signing-api");
    assert_eq!(bucket.verdict, graph::Verdict::Partial, "{bucket:?}");
    assert!(
        bucket
            .conditions
            .iter()
            .any(|c| c.contains("methods [POST] and paths [/sign]")),
        "{bucket:?}"
    );
    let admin = find("docs/admin", "docs/signing-api");
    assert_eq!(admin.verdict, graph::Verdict::Partial, "{admin:?}");
    assert!(
        admin.conditions.iter().all(|c| !c.contains("/sign")),
        "{admin:?}"
    );
    let admin = find("docs/admin", "docs/identity-api");
    assert_eq!(
        (admin.verdict, admin.layer),
        (graph::Verdict::Denied, Some(graph::Layer::Authorization)),
        "{admin:?}"
    );
    let outside = find("outside", "docs/signing-api");
    assert_eq!(outside.layer, Some(graph::Layer::Mtls), "{outside:?}");
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn the_corpus_istio_samples_run_through() {
    let mut files = Vec::new();
    yaml_files(&shared().join("corpus/istio-samples"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    // File by file: the samples hold variants of the same objects (bookinfo and bookinfo-psa).
    let mut workloads = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let objects = objects_of(&text);
        let graph = graph_of(&objects, &Config::default(), true);
        workloads += graph.workloads.len();
    }
    assert!(workloads > 20, "{workloads}");
    // The command reads the same files too.
    let file = shared().join("corpus/istio-samples/bookinfo/platform/kube/bookinfo.yaml");
    let (code, stdout, stderr) = run(&["-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("default/productpage-v1"), "{stdout}");
}

#[test]
fn dot_names_every_namespace_as_a_cluster() {
    let (code, stdout, stderr) = run(&["-f", &fixture("shop.yaml"), "--no-generated", "-o", "dot"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("digraph mesh {"));
    for namespace in ["shop", "legacy", "istio-system"] {
        assert!(
            stdout.contains(&format!("label=\"{namespace}\"")),
            "{namespace}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(
            "\"legacy/batch\" -> \"shop/web\" [label=\"8080\", color=\"#c62828\", style=dashed]"
        ),
        "{stdout}"
    );
}

/// A drawn edge: source, destination, verdict.
type DrawnEdge = (String, String, String);

/// The SVG's namespaces, nodes and edges, parsed as XML.
fn svg_parts(svg: &str) -> (Vec<String>, Vec<String>, Vec<DrawnEdge>) {
    let document = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let all = |name: &str| -> Vec<String> {
        root.descendants()
            .filter_map(|n| n.attribute(name).map(str::to_owned))
            .collect()
    };
    let (namespaces, nodes) = (all("data-namespace"), all("data-node"));
    let edges = root
        .descendants()
        .filter(|n| n.attribute("data-from").is_some())
        .map(|n| {
            (
                n.attribute("data-from").unwrap().to_owned(),
                n.attribute("data-to").unwrap().to_owned(),
                n.attribute("data-verdict").unwrap().to_owned(),
            )
        })
        .collect();
    (namespaces, nodes, edges)
}

#[test]
fn the_svg_draws_namespaces_nodes_and_coloured_edges() {
    let (code, stdout, stderr) = run(&["-f", &fixture("shop.yaml"), "--no-generated", "-o", "svg"]);
    assert_eq!(code, 0, "{stderr}");
    let (namespaces, nodes, edges) = svg_parts(&stdout);
    assert_eq!(namespaces, ["istio-system", "legacy", "outside", "shop"]);
    assert!(nodes.contains(&"shop/db".to_owned()), "{nodes:?}");
    assert!(
        edges.contains(&("shop/web".into(), "shop/db".into(), "allowed".into())),
        "{edges:?}"
    );
    // Refused by the mesh after the network let it through: drawn, red.
    assert!(
        edges.contains(&("legacy/batch".into(), "shop/web".into(), "denied".into())),
        "{edges:?}"
    );
    // Kept apart by the NetworkPolicies: the background, not drawn.
    assert!(
        !edges
            .iter()
            .any(|(f, t, _)| f == "legacy/batch" && t == "shop/db"),
        "{edges:?}"
    );
    // Laid out: no two namespace boxes overlap.
    let document = roxmltree::Document::parse(&stdout).unwrap();
    let boxes: Vec<(f64, f64, f64, f64)> = document
        .descendants()
        .filter(|n| n.attribute("data-namespace").is_some())
        .map(|g| {
            let rect = g.children().find(|c| c.has_tag_name("rect")).unwrap();
            let number = |a: &str| rect.attribute(a).unwrap().parse::<f64>().unwrap();
            (number("x"), number("y"), number("width"), number("height"))
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart =
                a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
            assert!(apart, "{a:?} overlaps {b:?}");
        }
    }
}

#[test]
fn the_html_page_is_self_contained_with_picture_table_filter_and_explanations() {
    let (code, html, stderr) = run(&["-f", &fixture("shop.yaml"), "--no-generated", "-o", "html"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(html.starts_with("<!DOCTYPE html>"));
    // No network: nothing is loaded from elsewhere.
    for external in ["src=", "href=", "@import", "url(http", "fetch("] {
        assert!(!html.contains(external), "{external}");
    }
    let start = html.find("<svg").unwrap();
    let end = html.find("</svg>").unwrap() + "</svg>".len();
    let (_, nodes, _) = svg_parts(&html[start..end]);
    assert!(nodes.contains(&"shop/web".to_owned()));
    for id in [
        "id=\"filter\"",
        "id=\"verdict\"",
        "id=\"connections\"",
        "id=\"explanation\"",
    ] {
        assert!(html.contains(id), "{id}");
    }
    let open = "<script type=\"application/json\" id=\"data\">";
    let data_start = html.find(open).unwrap() + open.len();
    let data_end = data_start + html[data_start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&html[data_start..data_end]).unwrap();
    let connections = data["connections"].as_array().unwrap();
    let explanations = data["explanations"].as_array().unwrap();
    assert_eq!(connections.len(), explanations.len());
    let index = connections
        .iter()
        .position(|c| c["from"] == "legacy/batch" && c["to"] == "shop/web")
        .unwrap();
    let explanation = explanations[index].as_str().unwrap();
    assert!(
        explanation.contains("accepts STRICT on port 8080: refused"),
        "{explanation}"
    );
}

/// The page in a real browser: headless Chromium runs its script, which must fill the table with
/// every connection and show the explanation a link names.
#[test]
fn the_html_page_runs_in_headless_chromium() {
    let chromium = std::path::Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "{} is missing: run `bash hack/install-tools.sh` as root (apt-get install chromium)",
        chromium.display()
    );
    let (code, html, stderr) = run(&["-f", &fixture("shop.yaml"), "--no-generated", "-o", "html"]);
    assert_eq!(code, 0, "{stderr}");
    let dir = temp_dir("graph-chromium");
    let page = dir.join("graph.html");
    std::fs::write(&page, &html).unwrap();
    let log = dir.join("chromium.log");
    let mut browser = testkit::process::spawn_logged(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(["--virtual-time-budget=5000", "--dump-dom"])
            .arg(format!(
                "file://{}#legacy%2Fbatch->shop%2Fweb:8080",
                page.display()
            )),
        &log,
    );
    let status = browser.wait_exit(std::time::Duration::from_secs(120));
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{output}");
    let dom_start = output.find("<html").expect("the DOM");
    let dom = &output[dom_start..];
    let connections = html.matches("\"from\":").count();
    assert_eq!(
        dom.matches("<tr class=\"row\"").count(),
        connections,
        "{dom}"
    );
    let explanation = &dom[dom.find("id=\"explanation\"").unwrap()..];
    let explanation = &explanation[..explanation.find("</pre>").unwrap()];
    assert!(
        explanation.contains("accepts STRICT on port 8080: refused"),
        "{explanation}"
    );
}
