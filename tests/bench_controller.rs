//! The scale benchmark of `mesh-admission controller` (issue 17) against the real kube-apiserver;
//! `hack/bench-controller.sh` runs it (it is `#[ignore]`d, so the test command does not).
//!
//! 1. `BENCH_CONTROLLER_RELEASES` (2,000) HelmReleases, each with its Service, across
//!    `BENCH_CONTROLLER_NAMESPACES` (40) namespaces are created before the controller starts.
//! 2. The controller (the release build, default debounce and parallelism) starts; the clock runs
//!    from its start until every object `render` gives for the cluster is present with the rendered
//!    spec. Its peak RSS (`VmHWM`) and the apiserver's requests (`apiserver_request_total`, less the
//!    benchmark's own polling) are reported, per HelmRelease.
//! 3. `BENCH_CONTROLLER_EDITS` (100) HelmReleases get a new `host` annotation at once; the clock
//!    runs from the first edit until every object `render` gives for the edited cluster is there.
//!
//! Figures are printed and written to `BENCH_CONTROLLER_OUT` (`target/bench-controller`) as
//! `results.md` and `results.json`. The targets (60 s, 64 MiB, 10 s) are reported, not asserted;
//! the benchmark fails only when the controller does not converge at all within `GIVE_UP`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use testkit::controller::{Controller, ControllerOptions, apiserver_requests};
use testkit::procfs::status_kib;
use testkit::{ApiClient, ControlPlane, mesh_admission_stdin, runtime, shared_crds};

/// API requests the benchmark keeps in flight while it creates and edits (one HTTP/2 connection).
const IN_FLIGHT: usize = 32;
/// How often the benchmark lists the generated objects while it waits.
const POLL: Duration = Duration::from_millis(250);
/// The benchmark fails when the controller has not converged after this long.
const GIVE_UP: Duration = Duration::from_secs(300);
/// The label every generated object carries (DESIGN.md section 9).
const MANAGED: &str = "app.kubernetes.io%2Fmanaged-by%3Dmesh-admission";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn release_name(n: usize) -> String {
    format!("app{n:04}")
}

fn namespace_of(n: usize, namespaces: usize) -> String {
    format!("team{:02}", n % namespaces)
}

fn helm_release(namespace: &str, name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace, "annotations": {
            "servicemesh.bigbang.dev/expose": name,
            "servicemesh.bigbang.dev/host": host,
            "servicemesh.bigbang.dev/port": "8080",
            "servicemesh.bigbang.dev/mtlsMode": "STRICT",
        }},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": name,
            "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}},
    })
}

fn service(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
    })
}

/// Sends every `(path, body)` as a POST (or, with `patch`, a merge PATCH), `IN_FLIGHT` at a time;
/// any answer but 2xx fails the benchmark.
async fn send_all(api: &ApiClient, requests: Vec<(String, Value)>, patch: bool) {
    let mut answers = futures_util::stream::iter(requests)
        .map(|(path, body)| async move {
            let answer = if patch {
                api.merge_patch(&path, &body).await
            } else {
                api.post(&path, &body).await
            };
            (path, answer)
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some((path, answer)) = answers.next().await {
        match answer {
            Ok((code, _)) if (200..300).contains(&code) => {}
            Ok((code, status)) => panic!("{path}: {code} {status}"),
            Err(e) => panic!("{e}"),
        }
    }
}

/// `(apiVersion, kind, namespace, name)` of an object.
type Key = (String, String, String, String);

fn key(object: &Value) -> Key {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&object["apiVersion"]),
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

/// What `mesh-admission <args> -o json -f -` prints for `inputs` (a List on its standard input).
fn command_json(args: &[&str], inputs: &[Value]) -> Value {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": inputs}).to_string();
    let mut args = args.to_vec();
    args.extend(["-o", "json", "-f", "-"]);
    let output = mesh_admission_stdin(&args, &list);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The objects `mesh-admission render` gives for `inputs`.
fn rendered(inputs: &[Value]) -> Vec<Value> {
    let rendered = command_json(&["render"], inputs);
    rendered["items"].as_array().cloned().unwrap_or_default()
}

/// What `mesh-admission render` gives for `inputs`: each object's spec by key.
fn render(inputs: &[Value]) -> BTreeMap<Key, Value> {
    rendered(inputs)
        .into_iter()
        .map(|object| (key(&object), object["spec"].clone()))
        .collect()
}

/// The REST path listing every `kind` object of `api_version` that we manage.
fn list_path(api_version: &str, kind: &str) -> String {
    let plural = testkit::scale::plural(kind);
    let prefix = if api_version.contains('/') {
        "/apis"
    } else {
        "/api"
    };
    format!("{prefix}/{api_version}/{plural}?labelSelector={MANAGED}")
}

/// How many of the `expected` generated objects are there with their spec (one LIST per kind,
/// each counted in `lists`, the benchmark's own requests).
async fn generated_present(
    api: &ApiClient,
    expected: &BTreeMap<Key, Value>,
    lists: &mut BTreeMap<String, f64>,
) -> usize {
    let kinds: BTreeSet<(String, String)> = expected
        .keys()
        .map(|(v, k, _, _)| (v.clone(), k.clone()))
        .collect();
    let mut present = 0;
    for (api_version, kind) in &kinds {
        let path = list_path(api_version, kind);
        let (code, list) = api.get(&path).await.unwrap_or_else(|e| panic!("{e}"));
        // 429 "storage is (re)initializing": a CRD's watch cache is still filling (this
        // poll is counted, and the next one asks again).
        assert!(code == 200 || code == 429, "{path}: {code} {list}");
        let resource = path
            .rsplit_once('/')
            .and_then(|(_, rest)| rest.split_once('?'))
            .map_or_else(String::new, |(plural, _)| plural.to_owned());
        *lists.entry(format!("LIST {resource}")).or_default() += 1.0;
        for item in list["items"].as_array().into_iter().flatten() {
            // Lists leave apiVersion and kind out of their items.
            let (_, _, namespace, name) = key(item);
            let k = (api_version.clone(), kind.clone(), namespace, name);
            if expected.get(&k) == Some(&item["spec"]) {
                present += 1;
            }
        }
    }
    present
}

/// Lists the generated kinds until every expected object is there with its spec; returns the time
/// it took and how many LIST requests of each resource the benchmark itself sent.
async fn converge(
    api: &ApiClient,
    expected: &BTreeMap<Key, Value>,
    what: &str,
) -> (Duration, BTreeMap<String, f64>) {
    let started = Instant::now();
    let mut lists = BTreeMap::<String, f64>::new();
    loop {
        let present = generated_present(api, expected, &mut lists).await;
        if present == expected.len() {
            return (started.elapsed(), lists);
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "{what}: {present} of {} objects after {GIVE_UP:?}",
            expected.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `VmHWM` and `VmRSS` of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let mib = |field| status_kib(pid, field).map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    (mib("VmHWM"), mib("VmRSS"))
}

/// `after - before - ours`, leaving out what the apiserver does on its own (Leases renewed by
/// itself and by leader election are listed apart).
fn requests_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    ours: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(series, n)| {
            let d = n
                - before.get(series).copied().unwrap_or(0.0)
                - ours.get(series).copied().unwrap_or(0.0);
            (series.clone(), d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// The `fields` of the controller's JSON log lines whose message is `message`.
fn logged<'a>(log: &'a str, message: &'a str) -> impl Iterator<Item = Value> + 'a {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|mut line| line["fields"].take())
        .filter(move |fields| fields["message"] == message)
}

/// When the controller's JSON log says it applied its last object.
fn last_applied_at(log: &str) -> Option<std::time::SystemTime> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "applied")
        .filter_map(|line| humantime::parse_rfc3339(line["timestamp"].as_str()?).ok())
        .max()
}

/// How often the controller's JSON log says it applied each object.
fn applied(log: &str) -> BTreeMap<String, usize> {
    let mut applied = BTreeMap::<String, usize>::new();
    for fields in logged(log, "applied") {
        let text = |f: &str| fields[f].as_str().unwrap_or_default().to_owned();
        let object = format!("{} {}/{}", text("kind"), text("namespace"), text("name"));
        *applied.entry(object).or_default() += 1;
    }
    applied
}

/// The writes the controller's JSON log says failed (each is retried by a later reconcile).
fn failed_writes(log: &str) -> Vec<String> {
    logged(log, "write failed")
        .map(|fields| fields["error"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `none`, or how many and which.
fn counted(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        format!("{}: {}", items.len(), items.join("; "))
    }
}

/// The controller build under test, with its default debounce and parallelism, not waiting for
/// readiness (the clock runs from its start).
fn start_controller(cp: &ControlPlane, binary: &std::path::Path) -> Controller {
    Controller::start_with(
        cp,
        &ControllerOptions {
            identity: "bench".into(),
            wait_ready: false,
            debounce: "200ms".into(),
            binary: Some(binary.to_owned()),
            ..ControllerOptions::default()
        },
    )
}

/// A heading and a table of `(figure, value, target)` rows.
fn table(title: &str, rows: &[(&str, String, &str)]) -> String {
    let mut report = format!("# {title}\n\n| figure | value | target |\n|---|---|---|\n");
    for (figure, value, target) in rows {
        let _ = writeln!(report, "| {figure} | {value} | {target} |");
    }
    report
}

/// A list of request counts under `title`.
fn requests_section(report: &mut String, title: &str, requests: &BTreeMap<String, f64>) {
    let _ = writeln!(report, "\n{title}:\n");
    for (series, n) in requests {
        let _ = writeln!(report, "- {series}: {n}");
    }
}

/// Prints the report and writes it as `NAME.md`, the figures as `NAME.json`, into `out`.
fn save(out: &std::path::Path, name: &str, report: &str, json: &Value) {
    eprintln!("{report}");
    std::fs::write(out.join(format!("{name}.md")), report).unwrap();
    let text = serde_json::to_string_pretty(json).unwrap();
    std::fs::write(out.join(format!("{name}.json")), text).unwrap();
}

fn release_binary() -> PathBuf {
    std::env::var_os("BENCH_CONTROLLER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/mesh-admission"),
        PathBuf::from,
    )
}

/// What each benchmark starts with: where its results go, the controller build it runs, a control
/// plane with the shared CRDs, and one API connection to it.
struct Bench {
    out: PathBuf,
    binary: PathBuf,
    cp: ControlPlane,
    runtime: tokio::runtime::Runtime,
    api: ApiClient,
}

impl Bench {
    fn start() -> Bench {
        let out = std::env::var_os("BENCH_CONTROLLER_OUT").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-controller"),
            PathBuf::from,
        );
        let binary = release_binary();
        assert!(
            binary.is_file(),
            "{} is missing: cargo build --release",
            binary.display()
        );
        let cp = ControlPlane::start();
        cp.apply_crds(&shared_crds());
        let runtime = runtime();
        let api = runtime.block_on(ApiClient::connect(&cp));
        Bench {
            out,
            binary,
            cp,
            runtime,
            api,
        }
    }
}

#[test]
#[ignore = "benchmark: run by hack/bench-controller.sh"]
fn controller_at_scale() {
    let releases = setting("BENCH_CONTROLLER_RELEASES", 2000);
    let namespaces = setting("BENCH_CONTROLLER_NAMESPACES", 40).max(1);
    let edits = setting("BENCH_CONTROLLER_EDITS", 100).min(releases);
    let Bench {
        out,
        binary,
        cp,
        runtime,
        api,
    } = Bench::start();

    // 1. The cluster before the controller starts.
    let created = Instant::now();
    let mut inputs: Vec<Value> = (0..namespaces)
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": namespace_of(n, namespaces)}})
        })
        .collect();
    let namespace_posts = inputs
        .iter()
        .map(|ns| ("/api/v1/namespaces".to_owned(), ns.clone()))
        .collect();
    runtime.block_on(send_all(&api, namespace_posts, false));
    let mut posts = Vec::new();
    for n in 0..releases {
        let (namespace, name) = (namespace_of(n, namespaces), release_name(n));
        let svc = service(&namespace, &name);
        let hr = helm_release(&namespace, &name, &format!("{name}.apps"));
        posts.push((
            format!("/api/v1/namespaces/{namespace}/services"),
            svc.clone(),
        ));
        posts.push((
            format!("/apis/helm.toolkit.fluxcd.io/v2/namespaces/{namespace}/helmreleases"),
            hr.clone(),
        ));
        inputs.extend([svc, hr]);
    }
    runtime.block_on(send_all(&api, posts, false));
    let expected = render(&inputs);
    let by_kind: BTreeMap<&str, usize> = expected.keys().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(k.1.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "bench-controller: {releases} HelmReleases and Services in {namespaces} namespaces created in {:.1?}; render gives {} objects {by_kind:?}",
        created.elapsed(),
        expected.len()
    );

    // 2. The controller starts.
    let before = apiserver_requests(&cp);
    let started = Instant::now();
    let controller = start_controller(&cp, &binary);
    let (_, polled) = runtime.block_on(converge(&api, &expected, "initial sync"));
    let converged = started.elapsed();
    let (peak_rss, rss) = memory(controller.pid());
    // Let the last Events and the first resync-free moments pass before the counters are read.
    std::thread::sleep(Duration::from_secs(2));
    let initial = requests_between(&before, &apiserver_requests(&cp), &polled);
    let initial_log = controller.log();
    let twice: Vec<String> = applied(&initial_log)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(object, n)| format!("{object} ×{n}"))
        .collect();
    let failed = failed_writes(&initial_log);

    // 3. Edits.
    let step = (releases / edits.max(1)).max(1);
    let edited: Vec<usize> = (0..releases).step_by(step).take(edits).collect();
    let mut edited_inputs = inputs.clone();
    let mut patches = Vec::new();
    for &n in &edited {
        let (namespace, name) = (namespace_of(n, namespaces), release_name(n));
        let host = format!("{name}-edited.apps");
        let index = inputs
            .iter()
            .position(|o| o["kind"] == "HelmRelease" && o["metadata"]["name"] == name.as_str())
            .unwrap();
        edited_inputs[index] = helm_release(&namespace, &name, &host);
        patches.push((
            format!("/apis/helm.toolkit.fluxcd.io/v2/namespaces/{namespace}/helmreleases/{name}"),
            json!({"metadata": {"annotations": {"servicemesh.bigbang.dev/host": host}}}),
        ));
    }
    let expected_after = render(&edited_inputs);
    let changed = expected_after
        .iter()
        .filter(|(k, spec)| expected.get(*k) != Some(*spec))
        .count();
    assert!(
        changed >= edited.len(),
        "the edits change only {changed} rendered objects"
    );
    let before_edits = apiserver_requests(&cp);
    let edit_started = Instant::now();
    let edit_started_at = std::time::SystemTime::now();
    runtime.block_on(send_all(&api, patches, true));
    let (_, polled_edits) = runtime.block_on(converge(&api, &expected_after, "after the edits"));
    let edits_reflected = edit_started.elapsed();
    let (peak_rss_end, _) = memory(controller.pid());
    std::thread::sleep(Duration::from_secs(2));
    let mut ours_edits = polled_edits;
    *ours_edits.entry("PATCH helmreleases".into()).or_default() += edited.len() as f64;
    let edit_requests = requests_between(&before_edits, &apiserver_requests(&cp), &ours_edits);
    let final_log = controller.log();
    let applied_by_edits =
        applied(&final_log).values().sum::<usize>() - applied(&initial_log).values().sum::<usize>();
    // The polls above list every generated object, which takes a second or more at this scale: the
    // controller's own log says when its last write of the edits was done, to the millisecond.
    let edits_written = last_applied_at(&final_log)
        .and_then(|at| at.duration_since(edit_started_at).ok())
        .unwrap_or_else(|| panic!("the controller's log shows no write after the edits began"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("controller.log"), controller.log()).unwrap();
    drop(controller);

    // Report.
    let per_release = |requests: &BTreeMap<String, f64>| {
        requests
            .iter()
            .filter(|(series, _)| !series.ends_with(" leases"))
            .map(|(_, n)| n)
            .sum::<f64>()
            / releases as f64
    };
    let edits_row = format!("{} annotation edits reflected", edited.len());
    let mut report = table(
        &format!(
            "mesh-admission controller at scale ({releases} HelmReleases + Services, {namespaces} namespaces, {} objects to generate)",
            expected.len()
        ),
        &[
            (
                "start to every object present",
                format!("{:.1} s", converged.as_secs_f64()),
                "60 s",
            ),
            (
                "peak RSS (VmHWM) after the initial sync / after the edits",
                format!("{peak_rss:.1} / {peak_rss_end:.1} MiB (RSS now {rss:.1})"),
                "64 MiB",
            ),
            (
                "API requests per HelmRelease, initial sync (Leases apart)",
                format!("{:.2}", per_release(&initial)),
                "",
            ),
            (
                &edits_row,
                format!(
                    "{:.1} s ({changed} objects changed, {applied_by_edits} applied)",
                    edits_reflected.as_secs_f64()
                ),
                "10 s",
            ),
            (
                "… of which until the controller's last write (its log)",
                format!("{:.2} s", edits_written.as_secs_f64()),
                "",
            ),
            (
                "objects applied more than once in the initial sync",
                counted(&twice),
                "none",
            ),
            (
                "writes that failed in the initial sync (retried)",
                counted(&failed),
                "",
            ),
        ],
    );
    requests_section(
        &mut report,
        "Requests of the initial sync (apiserver_request_total, less the benchmark's own LISTs)",
        &initial,
    );
    requests_section(&mut report, "Requests of the edits", &edit_requests);
    let json = json!({
        "releases": releases, "namespaces": namespaces, "objects": expected.len(),
        "converged_seconds": converged.as_secs_f64(),
        "peak_rss_mib": peak_rss, "peak_rss_after_edits_mib": peak_rss_end,
        "initial_requests": initial, "requests_per_release": per_release(&initial),
        "edits": edited.len(), "edits_seconds": edits_reflected.as_secs_f64(),
        "edits_written_seconds": edits_written.as_secs_f64(),
        "edit_requests": edit_requests, "applied_more_than_once": twice,
        "applied_by_edits": applied_by_edits, "failed_writes": failed,
    });
    save(&out, "results", &report, &json);
}

/// One finding as `audit -o json` lists it and a report's result holds it:
/// `(rule, level, "Kind/namespace/name", message)`.
type Finding = (String, String, String, String);

/// The findings `mesh-admission audit` gives for `inputs`, sorted.
fn audit_findings(inputs: &[Value]) -> Vec<Finding> {
    let findings = command_json(&["audit"], inputs);
    let mut out: Vec<Finding> = findings
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (text("rule"), text("level"), text("object"), text("message"))
        })
        .collect();
    out.sort();
    out
}

/// How many report objects `mesh-admission audit --output reports` prints for `inputs`.
fn printed_reports(inputs: &[Value]) -> usize {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": inputs}).to_string();
    let output = mesh_admission_stdin(&["audit", "--output", "reports", "-f", "-"], &list);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| *line == "kind: Report" || *line == "kind: ClusterReport")
        .count()
}

/// The controller's stored reports: their findings (sorted), how many objects, the largest's size
/// as the apiserver serves it (JSON bytes).
struct StoredReports {
    findings: Vec<Finding>,
    objects: usize,
    largest: usize,
}

/// Lists our `ClusterReport`s and `Report`s (one request each, counted in `lists`).
async fn stored_reports(api: &ApiClient, lists: &mut BTreeMap<String, f64>) -> StoredReports {
    let mut stored = StoredReports {
        findings: Vec::new(),
        objects: 0,
        largest: 0,
    };
    for plural in ["clusterreports", "reports"] {
        let path = format!("/apis/openreports.io/v1alpha1/{plural}?labelSelector={MANAGED}");
        let (code, list) = api.get(&path).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(code == 200 || code == 429, "{path}: {code} {list}");
        *lists.entry(format!("LIST {plural}")).or_default() += 1.0;
        for item in list["items"].as_array().into_iter().flatten() {
            stored.objects += 1;
            stored.largest = stored
                .largest
                .max(serde_json::to_vec(item).map_or(0, |v| v.len()));
            for result in item["results"].as_array().into_iter().flatten() {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                let level = match result["result"].as_str() {
                    Some("fail") => "error",
                    Some("warn") => "warning",
                    other => panic!("a result neither fail nor warn: {other:?}"),
                };
                let resource = &result["resources"][0];
                let object = format!(
                    "{}/{}/{}",
                    text(&resource["kind"]),
                    text(&resource["namespace"]),
                    text(&resource["name"])
                );
                stored.findings.push((
                    text(&result["rule"]),
                    level.to_owned(),
                    object,
                    text(&result["message"]),
                ));
            }
        }
    }
    stored.findings.sort();
    stored
}

/// The first `n` of `a` not in `b` (both sorted), for a failure message.
fn missing_from(a: &[Finding], b: &[Finding], n: usize) -> Vec<String> {
    a.iter()
        .filter(|f| b.binary_search(f).is_err())
        .take(n)
        .map(|f| format!("{f:?}"))
        .collect()
}

/// The controller's OpenReports at scale (DESIGN.md section 13): `testkit::scale::mesh` (10,000
/// objects in 200 namespaces: workload templates, Services, HelmReleases, Istio objects,
/// ClusterSPIFFEIDs; the objects of `benches/audit.rs`) exist before the controller starts.
///
/// The clock runs from its start until the stored reports hold exactly the findings of
/// `mesh-admission audit` on the same objects and on what `render` generates from them (the
/// controller writes those too), and until every generated object is present. Then
/// `BENCH_REPORTS_STEADY_SECONDS` (30) of steady state, whose report writes are counted (from the
/// apiserver's metrics). Reported: the times, the report objects (count, largest), the controller's
/// peak RSS (`VmHWM`) over all of it. Targets (60 s, 200 objects, 256 KiB, 128 MiB) are reported,
/// not asserted.
#[test]
#[ignore = "benchmark: run by hack/bench-controller.sh --reports"]
fn reports_at_scale() {
    let namespaces = setting("BENCH_REPORTS_NAMESPACES", 200).max(1);
    let steady = Duration::from_secs(setting("BENCH_REPORTS_STEADY_SECONDS", 30) as u64);
    let Bench {
        out,
        binary,
        cp,
        runtime,
        api,
    } = Bench::start();

    // 1. The cluster before the controller starts: the namespaces, then everything in them.
    let created = Instant::now();
    let inputs = testkit::scale::mesh(namespaces);
    let (namespace_objects, rest): (Vec<&Value>, Vec<&Value>) =
        inputs.iter().partition(|o| o["kind"] == "Namespace");
    for batch in [namespace_objects, rest] {
        let posts = batch
            .into_iter()
            .map(|o| (testkit::scale::collection_path(o), o.clone()))
            .collect();
        runtime.block_on(send_all(&api, posts, false));
    }
    let generated = rendered(&inputs);
    let expected_generated: BTreeMap<Key, Value> = generated
        .iter()
        .map(|o| (key(o), o["spec"].clone()))
        .collect();
    let mut everything = inputs.clone();
    everything.extend(generated.iter().cloned());
    let expected = audit_findings(&everything);
    let expected_objects = printed_reports(&everything);
    eprintln!(
        "bench-reports: {} objects in {namespaces} namespaces created in {:.1?}; render gives {} objects; audit finds {} findings in {expected_objects} report objects",
        inputs.len(),
        created.elapsed(),
        generated.len(),
        expected.len()
    );

    // 2. The controller starts; the benchmark watches its reports and its generated objects.
    let before = apiserver_requests(&cp);
    let started = Instant::now();
    let controller = start_controller(&cp, &binary);
    let mut polled = BTreeMap::<String, f64>::new();
    let mut reports_at = None;
    let mut reports = None;
    let mut generated_at = None;
    let mut peak_at_reports = f64::NAN;
    while reports_at.is_none() || generated_at.is_none() {
        if reports_at.is_none() {
            let stored = runtime.block_on(stored_reports(&api, &mut polled));
            if stored.findings == expected {
                reports_at = Some(started.elapsed());
                peak_at_reports = memory(controller.pid()).0;
                reports = Some(stored);
            } else if started.elapsed() > GIVE_UP {
                panic!(
                    "the reports hold {} findings, audit finds {}, after {GIVE_UP:?}; missing: {:?}; unexpected: {:?}",
                    stored.findings.len(),
                    expected.len(),
                    missing_from(&expected, &stored.findings, 5),
                    missing_from(&stored.findings, &expected, 5)
                );
            }
        }
        if generated_at.is_none() {
            let present =
                runtime.block_on(generated_present(&api, &expected_generated, &mut polled));
            if present == expected_generated.len() {
                generated_at = Some(started.elapsed());
            } else {
                assert!(
                    started.elapsed() < GIVE_UP,
                    "{present} of {} generated objects after {GIVE_UP:?}",
                    expected_generated.len()
                );
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (reports_at, generated_at) = (
        reports_at.unwrap_or_default(),
        generated_at.unwrap_or_default(),
    );
    let reports = reports.expect("the loop ends with the reports complete");
    let converged = apiserver_requests(&cp);
    let initial = requests_between(&before, &converged, &polled);

    // 3. Steady state: the controller keeps auditing; no report should be written.
    // Counted in whole requests (an empty f64 sum prints as -0).
    let report_writes = |requests: &BTreeMap<String, f64>| -> u64 {
        requests
            .iter()
            .filter(|(series, _)| {
                let (verb, resource) = series.split_once(' ').unwrap_or_default();
                resource.ends_with("reports") && !matches!(verb, "GET" | "LIST" | "WATCH")
            })
            .map(|(_, n)| *n as u64)
            .sum()
    };
    std::thread::sleep(steady);
    let steady_requests = requests_between(&converged, &apiserver_requests(&cp), &BTreeMap::new());
    let (peak_rss, rss) = memory(controller.pid());
    let log = controller.log();
    let audits_logged = logged(&log, "reports written").count();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("reports-controller.log"), &log).unwrap();
    drop(controller);

    let peak_row = format!(
        "controller peak RSS (VmHWM) when the reports were complete / after {} s more",
        steady.as_secs()
    );
    let steady_row = format!("report writes in {} s of steady state", steady.as_secs());
    let mut report = table(
        &format!(
            "mesh-admission controller's OpenReports at scale ({} objects in {namespaces} namespaces, {} generated, {} findings)",
            inputs.len(),
            generated.len(),
            expected.len()
        ),
        &[
            (
                "start to the reports holding every finding",
                format!("{:.1} s", reports_at.as_secs_f64()),
                "60 s",
            ),
            (
                "start to every generated object present",
                format!("{:.1} s", generated_at.as_secs_f64()),
                "",
            ),
            (
                "report objects (as `audit --output reports` prints)",
                format!("{} ({expected_objects})", reports.objects),
                "≤ 200",
            ),
            (
                "largest report object",
                format!("{:.1} KiB", reports.largest as f64 / 1024.0),
                "≤ 256 KiB",
            ),
            (
                &peak_row,
                format!("{peak_at_reports:.1} / {peak_rss:.1} MiB (RSS now {rss:.1})"),
                "≤ 128 MiB",
            ),
            (
                "report writes until complete (audits that wrote)",
                format!("{} ({audits_logged})", report_writes(&initial)),
                "",
            ),
            (
                &steady_row,
                report_writes(&steady_requests).to_string(),
                "0",
            ),
        ],
    );
    requests_section(
        &mut report,
        "Requests until complete (apiserver_request_total, less the benchmark's own LISTs)",
        &initial,
    );
    requests_section(
        &mut report,
        "Requests of the steady state",
        &steady_requests,
    );
    let json = json!({
        "objects": inputs.len(), "namespaces": namespaces, "generated": generated.len(),
        "findings": expected.len(), "reports_seconds": reports_at.as_secs_f64(),
        "generated_seconds": generated_at.as_secs_f64(), "report_objects": reports.objects,
        "printed_report_objects": expected_objects, "largest_report_bytes": reports.largest,
        "peak_rss_at_reports_mib": peak_at_reports, "peak_rss_mib": peak_rss,
        "report_writes": report_writes(&initial), "steady_seconds": steady.as_secs(),
        "steady_report_writes": report_writes(&steady_requests),
        "requests": initial, "steady_requests": steady_requests,
    });
    save(&out, "reports", &report, &json);
}
