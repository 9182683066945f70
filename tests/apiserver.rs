//! The admission flow as kube-apiserver drives it, over every object we can find: our fixtures and,
//! when present, the shared corpus of real public manifests (`../shared/corpus`, or
//! `MESH_ADMISSION_CORPUS`).
//!
//! For each object the client sends AdmissionReview v1 with a fresh uid over verified TLS (HTTP/2 and
//! HTTP/1.1 alternately), applies the apiserver's checks to the reply, applies the patch, checks the
//! result against DESIGN.md sections 4 and 5, decodes Pods and Namespaces into k8s-openapi types to see
//! that the patch introduced no unknown field and no volume with two sources, and re-sends the result as
//! a reinvocation, which must produce no patch.

use std::path::{Path, PathBuf};

use mesh_admission::config::Config;
use mesh_admission::manifests::parse_objects;
use mesh_admission::review::{is_workload, mutation_target};
use serde_json::Value;
use testkit::rules::{check_namespace, check_pod};
use testkit::{Client, Protocol, Server, generate_certs, patch_of, review_for, temp_dir};

fn corpus_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MESH_ADMISSION_CORPUS") {
        return Some(PathBuf::from(dir));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared").join("corpus"))
        .find(|p| p.is_dir())
}

fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        // `render`'s golden cases (inputs, a configuration, expected output) are tests/render.rs's:
        // not admission fixtures.
        if path.ends_with("tests/fixtures/render") {
            continue;
        }
        if path.is_dir() {
            manifest_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    files: usize,
    unreadable_files: usize,
    objects: usize,
    pods: usize,
    namespaces: usize,
    patched: usize,
    denied: usize,
    warned: usize,
}

async fn check_file(path: &Path, clients: &mut [Client; 2], cfg: &Config, tally: &mut Tally) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Ok(objects) = parse_objects(&text) else {
        // Not every file of a repository is a manifest (kustomize configs with other shapes, say).
        tally.unreadable_files += 1;
        return;
    };
    tally.files += 1;
    for (index, object) in objects.iter().enumerate() {
        let what = format!(
            "{} #{index} ({} {})",
            path.display(),
            object["kind"],
            object["metadata"]["name"]
        );
        let client = &mut clients[tally.objects % 2];
        tally.objects += 1;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();

        let mut admitted = object.clone();
        if let Some(target) = mutation_target(object) {
            let mut target = target;
            target["metadata"]["namespace"] = Value::String(namespace.clone());
            if target["metadata"].as_object().is_some_and(|m| m.len() == 1)
                && object.get("metadata").is_none()
            {
                target.as_object_mut().map(|o| o.remove("metadata"));
            }
            let reply = client
                .review("mutate", &review_for(&target, "CREATE"))
                .await;
            assert_eq!(reply["response"]["allowed"], true, "{what}: {reply}");
            let patch = patch_of(&reply);
            let mut mutated = target.clone();
            json_patch::patch(&mut mutated, &patch)
                .unwrap_or_else(|e| panic!("{what}: patch does not apply: {e}"));
            if !patch.is_empty() {
                tally.patched += 1;
            }
            match target["kind"].as_str() {
                Some("Pod") => {
                    tally.pods += 1;
                    check_pod(&target, &mutated, &namespace, cfg, &what);
                }
                Some("Namespace") => {
                    tally.namespaces += 1;
                    check_namespace(&target, &mutated, cfg, &what);
                }
                _ => assert!(
                    patch.is_empty(),
                    "{what}: only Pods and Namespaces are mutated"
                ),
            }
            // Reinvocation after other webhooks: nothing more to do.
            let again = client
                .review("mutate", &review_for(&mutated, "CREATE"))
                .await;
            assert!(
                again["response"].get("patch").is_none(),
                "{what}: reinvocation patched again: {again}"
            );
            if !is_workload(object) {
                admitted = mutated;
            }
        }
        // Validation sees what mutation produced (workloads as written).
        let reply = client
            .review("validate", &review_for(&admitted, "CREATE"))
            .await;
        if reply["response"]["allowed"] == false {
            tally.denied += 1;
            assert_eq!(reply["response"]["status"]["code"], 422, "{what}: {reply}");
            println!("denied: {what}: {}", reply["response"]["status"]["message"]);
        }
        if reply["response"].get("warnings").is_some() {
            tally.warned += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_and_corpus_object_through_the_apiserver_flow() {
    let dir = temp_dir("apiserver-flow");
    generate_certs(&dir);
    let server = Server::start(&dir, &[]);
    let ca = dir.join("ca.crt");
    let mut clients = [
        Client::connect(server.addr, &ca, Protocol::Http2)
            .await
            .unwrap(),
        Client::connect(server.addr, &ca, Protocol::Http1)
            .await
            .unwrap(),
    ];
    let cfg = Config::default();

    let mut fixtures = Vec::new();
    manifest_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut fixtures,
    );
    let mut tally = Tally::default();
    for path in &fixtures {
        check_file(path, &mut clients, &cfg, &mut tally).await;
    }
    println!("fixtures: {tally:?}");
    // The graph fixtures bring a Namespace each for their verdicts; every one is seen here.
    assert!(
        tally.objects >= 15 && tally.pods >= 5 && tally.namespaces >= 3,
        "{tally:?}"
    );
    assert_eq!(tally.unreadable_files, 0);

    let Some(corpus) = corpus_dir() else {
        println!("corpus: not found (../shared/corpus); fixtures only");
        return;
    };
    let mut files = Vec::new();
    manifest_files(&corpus, &mut files);
    let mut tally = Tally::default();
    for path in &files {
        check_file(path, &mut clients, &cfg, &mut tally).await;
    }
    println!("corpus {}: {tally:?}", corpus.display());
    assert!(
        tally.objects > 0,
        "the corpus folder exists but no object was checked"
    );
    assert!(tally.pods > 0 && tally.patched > 0, "{tally:?}");
}
