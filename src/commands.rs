//! The offline commands' I/O: read files, print results, choose exit codes. The work itself is in
//! `review`, `policy::render` and `webhook_config`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit::{self, AuditFinding, report};
use crate::cli::{
    AuditArgs, AuditOutput, GraphArgs, GraphOutput, RenderArgs, RenderOutput, ReviewArgs,
    ReviewOutput, WebhookConfigArgs,
};
use crate::config::Config;
use crate::graph::{self, Decision, Topology};
use crate::manifests::Manifests;
use crate::model::Model;
use crate::policy::finding::Severity;
use crate::policy::render::{self, MeshObject};
use crate::review::{self, ObjectReview, Subject};
use crate::webhook_config::{WebhookOptions, render_yaml};

/// `webhook-config`: both configurations as YAML.
pub fn webhook_config(args: &WebhookConfigArgs) -> anyhow::Result<String> {
    let config = Config::load(args.config.as_deref())?;
    let ca_bundle = std::fs::read(&args.ca_bundle)
        .with_context(|| format!("cannot read the CA bundle {}", args.ca_bundle.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&ca_bundle).contains("-----BEGIN CERTIFICATE-----"),
        "{} holds no PEM certificate",
        args.ca_bundle.display()
    );
    let options = WebhookOptions {
        ca_bundle,
        failure_policy: args.failure_policy.as_str().into(),
        url: args.url.clone(),
        ..WebhookOptions::new(&args.service, &args.namespace, &config)
    };
    Ok(render_yaml(&options)?)
}

/// `review`: exit 0 when everything is admitted, 1 when something is denied, 2 on unreadable input
/// or no objects. Objects are read, reviewed and printed one document at a time, so memory is
/// bounded by the largest document, not the input.
pub fn review(args: &ReviewArgs) -> ExitCode {
    let name = display_name(&args.file);
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mesh-admission: {error:#}");
            return ExitCode::from(2);
        }
    };
    let files = match input_files(&args.file) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("mesh-admission: cannot read {name}: {error}");
            return ExitCode::from(2);
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut denied = false;
    let mut objects = 0;
    for file in &files {
        let name = display_name(file);
        let input = match open(file) {
            Ok(input) => input,
            Err(error) => {
                let _ = out.flush();
                eprintln!("mesh-admission: cannot read {name}: {error}");
                return ExitCode::from(2);
            }
        };
        for document in Manifests::new(input) {
            let subject = match document {
                Ok(document) => Subject::from_document(document).map_err(anyhow::Error::new),
                Err(error) => Err(anyhow::Error::new(error)),
            };
            let subject = match subject {
                Ok(subject) => subject,
                Err(error) => {
                    let _ = out.flush();
                    eprintln!("mesh-admission: {name}: {error:#}");
                    return ExitCode::from(2);
                }
            };
            objects += 1;
            let uid = format!("review-{objects}");
            let result = review::review_subject(&subject, &args.namespace, &config, &uid);
            for warning in &result.warnings {
                eprintln!("Warning: {}: {warning}", describe(&result));
            }
            if let Some(message) = &result.denial {
                denied = true;
                eprintln!("denied: {}: {message}", describe(&result));
            }
            if let Err(error) = print_result(&mut out, args.output, objects - 1, &result) {
                eprintln!("mesh-admission: cannot write output: {error}");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(error) = out.flush() {
        eprintln!("mesh-admission: cannot write output: {error}");
        return ExitCode::from(2);
    }
    if objects == 0 && !args.allow_empty {
        eprintln!("mesh-admission: no objects in {name} (pass --allow-empty to accept that)");
        return ExitCode::from(2);
    }
    if denied {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The files `-f` names: `-` (standard input), a file, or a directory's `*.yaml`, `*.yml` and
/// `*.json` files, sorted by name and without descending into subdirectories, as `kubectl apply -f
/// DIR` reads a directory. Other files in a directory (a README, a kustomization's patches in
/// another format) are not manifests and are skipped.
pub fn input_files(arg: &str) -> std::io::Result<Vec<String>> {
    if arg == "-" || !Path::new(arg).is_dir() {
        return Ok(vec![arg.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(arg)? {
        let path = entry?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if is_manifest && path.is_file() {
            files.push(path.to_string_lossy().into_owned());
        }
    }
    files.sort();
    Ok(files)
}

fn open(file: &str) -> std::io::Result<Box<dyn BufRead>> {
    Ok(if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(BufReader::new(File::open(file)?))
    })
}

fn display_name(file: &str) -> &str {
    if file == "-" { "<stdin>" } else { file }
}

/// `Kind namespace/name`, as kubectl names objects.
fn describe(r: &ObjectReview) -> String {
    match (r.namespace.as_str(), r.name.as_str()) {
        ("", name) => format!("{} {name}", r.kind),
        (ns, name) => format!("{} {ns}/{name}", r.kind),
    }
}

fn print_result(
    out: &mut impl Write,
    output: ReviewOutput,
    index: usize,
    r: &ObjectReview,
) -> anyhow::Result<()> {
    match output {
        ReviewOutput::Object => {
            if index > 0 {
                writeln!(out, "---")?;
            }
            write!(out, "{}", yaml_serde::to_string(&r.mutated)?)?;
        }
        // A denied object will not be stored, so it has no patch; the message says why.
        ReviewOutput::Patch => {
            let line = match &r.denial {
                None => serde_json::json!({
                    "kind": r.kind, "namespace": r.namespace, "name": r.name,
                    "allowed": true, "patch": r.patch,
                }),
                Some(message) => serde_json::json!({
                    "kind": r.kind, "namespace": r.namespace, "name": r.name,
                    "allowed": false, "message": message,
                }),
            };
            writeln!(out, "{line}")?;
        }
        ReviewOutput::Review => {
            let line = serde_json::json!({
                "kind": r.kind, "namespace": r.namespace, "name": r.name,
                "mutate": r.mutate_reply, "validate": r.validate_reply,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// `render`: exit 0 when everything was generated, 1 when some input was refused, 2 on unreadable
/// input or configuration, or no objects. Every problem goes to stderr, one line each.
pub fn render(args: &RenderArgs) -> ExitCode {
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mesh-admission: {error:#}");
            return ExitCode::from(2);
        }
    };
    let Some(inputs) = read_inputs(&args.files, args.allow_empty) else {
        return ExitCode::from(2);
    };
    let rendered = render::render(&Model::from_manifests(&inputs), &config);
    for problem in &rendered.problems {
        match problem.issue.severity() {
            Severity::Error => eprintln!("error: {problem}"),
            Severity::Warning => eprintln!("Warning: {problem}"),
        }
    }
    if let Err(code) = print_text(render_text(&rendered.objects, args.output), "objects") {
        return code;
    }
    if rendered.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The generated objects as `render` prints them: a YAML stream (one document each, `---`
/// between) or one JSON `List`. The objects come sorted, and their maps print in a fixed order,
/// so the same objects always give the same bytes.
pub fn render_text(objects: &[MeshObject], output: RenderOutput) -> anyhow::Result<String> {
    Ok(match output {
        RenderOutput::Yaml => {
            let mut text = String::new();
            for (i, object) in objects.iter().enumerate() {
                if i > 0 {
                    text.push_str("---\n");
                }
                text.push_str(&yaml_serde::to_string(object)?);
            }
            text
        }
        RenderOutput::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": objects,
            });
            let mut text = serde_json::to_string_pretty(&list)?;
            text.push('\n');
            text
        }
    })
}

/// Every object of the files `-f` names (standard input without any), in order; `None` (exit 2)
/// when something cannot be read, each reason on stderr, or when there are no objects and
/// `allow_empty` is not set.
fn read_inputs(files: &[String], allow_empty: bool) -> Option<Vec<serde_json::Value>> {
    let files = if files.is_empty() {
        vec!["-".to_owned()]
    } else {
        files.to_vec()
    };
    let mut inputs = Vec::new();
    for arg in &files {
        let expanded = match input_files(arg) {
            Ok(expanded) => expanded,
            Err(error) => {
                eprintln!("mesh-admission: cannot read {}: {error}", display_name(arg));
                return None;
            }
        };
        for file in &expanded {
            let name = display_name(file);
            let reader = match open(file) {
                Ok(reader) => reader,
                Err(error) => {
                    eprintln!("mesh-admission: cannot read {name}: {error}");
                    return None;
                }
            };
            for document in Manifests::new(reader) {
                match document {
                    Ok(object) => inputs.push(object),
                    Err(error) => {
                        eprintln!(
                            "mesh-admission: {name}: {error:#}",
                            error = anyhow::Error::new(error)
                        );
                        return None;
                    }
                }
            }
        }
    }
    if inputs.is_empty() && !allow_empty {
        eprintln!(
            "mesh-admission: no objects in {} (pass --allow-empty to accept that)",
            files
                .iter()
                .map(|f| display_name(f))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return None;
    }
    Some(inputs)
}

/// `audit`: exit 0 when no error is found (warnings alone leave it 0), 1 when one is, 2 on
/// unreadable input or configuration, or no objects.
pub fn audit(args: &AuditArgs) -> ExitCode {
    let config = match Config::load(args.input.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mesh-admission: {error:#}");
            return ExitCode::from(2);
        }
    };
    let findings = if args.input.cluster {
        match cluster_audit(&config) {
            Ok(findings) => findings,
            Err(error) => {
                eprintln!("mesh-admission: {error:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        let Some(inputs) = read_inputs(&args.input.files, args.input.allow_empty) else {
            return ExitCode::from(2);
        };
        audit::audit_manifests(&inputs, &config)
    };
    if let Err(code) = print_text(audit_text(&findings, args.output, now()), "findings") {
        return code;
    }
    if audit::has_errors(&findings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Offline every finding is first seen now: what the controller stamps on its first pass.
fn now() -> report::Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    report::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// The findings as `audit` prints them.
pub fn audit_text(
    findings: &[AuditFinding],
    output: AuditOutput,
    seen: report::Timestamp,
) -> anyhow::Result<String> {
    Ok(match output {
        AuditOutput::Json => {
            let mut text = serde_json::to_string_pretty(findings)?;
            text.push('\n');
            text
        }
        AuditOutput::Reports => {
            let mut text = String::new();
            for (i, object) in report::reports(findings, &|_| seen).iter().enumerate() {
                if i > 0 {
                    text.push_str("---\n");
                }
                text.push_str(&yaml_serde::to_string(object)?);
            }
            text
        }
        AuditOutput::Table => audit_table(findings),
    })
}

/// One block per namespace (cluster-scoped objects first), one line per finding, then the counts.
fn audit_table(findings: &[AuditFinding]) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let mut namespace = None;
    for f in findings {
        if namespace != Some(f.object.namespace.as_str()) {
            namespace = Some(f.object.namespace.as_str());
            let heading = match f.object.namespace.as_str() {
                "" => "cluster-scoped".to_owned(),
                ns => format!("namespace {ns}"),
            };
            let _ = writeln!(text, "{}{heading}", if text.is_empty() { "" } else { "\n" });
        }
        let _ = writeln!(
            text,
            "  {:<7}  {:<36}  {}: {}",
            f.level.as_str(),
            f.rule,
            f.object,
            f.message
        );
    }
    let errors = findings.iter().filter(|f| f.is_error()).count();
    let _ = writeln!(
        text,
        "{}{errors} errors, {} warnings",
        if text.is_empty() { "" } else { "\n" },
        findings.len() - errors
    );
    text
}

/// `audit --cluster`, on a runtime of its own.
fn cluster_audit(config: &Config) -> anyhow::Result<Vec<AuditFinding>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("no Kubernetes API: set KUBECONFIG or run in a cluster: {e}")
        })?;
        let (findings, not_served) = crate::live_audit::findings(&client, config).await?;
        for missing in &not_served {
            eprintln!(
                "Warning: {} is not served, not audited: {}",
                missing.kind, missing.reason
            );
        }
        Ok(findings)
    })
}

/// The model `graph` reads from manifests: with `render`'s objects unless `no_generated`. An object
/// the model cannot read is an error: leaving a policy out would change the verdicts unseen.
fn graph_model(
    files: &[String],
    config: &Config,
    no_generated: bool,
    allow_empty: bool,
) -> Result<Model, String> {
    // read_inputs has said why on stderr.
    let inputs = read_inputs(files, allow_empty).ok_or_else(String::new)?;
    let model = Model::from_manifests(&inputs);
    if !model.problems.is_empty() {
        let lines: Vec<String> = model
            .problems
            .iter()
            .map(|p| match &p.issue {
                crate::model::ReadIssue::Unreadable(why) => {
                    format!("{}: cannot be read: {why}", p.subject)
                }
                crate::model::ReadIssue::Duplicate => format!(
                    "{}: is in the input more than once with different content",
                    p.subject
                ),
            })
            .collect();
        return Err(lines.join("\nmesh-admission: "));
    }
    Ok(if no_generated {
        model
    } else {
        graph::with_generated(&model, config)
    })
}

/// The model of the live cluster (`--cluster`), read once through the kubeconfig kubectl would use:
/// with `render`'s objects unless `no_generated`. Kinds the cluster does not serve are named on
/// stderr.
fn cluster_model(config: &Config, no_generated: bool) -> Result<Model, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let read = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("cannot reach the cluster: {e}"))?;
        crate::model::cluster::read(&client, None)
            .await
            .map_err(|e| format!("cannot read the cluster: {e}"))
    })?;
    for missing in &read.not_served {
        eprintln!(
            "note: {} is not served by the cluster, left out: {}",
            missing.kind, missing.reason
        );
    }
    Ok(if no_generated {
        read.model
    } else {
        graph::with_generated(&read.model, config)
    })
}

/// `SRC` and `DST[:PORT]` of `--explain`.
fn explain_ends(topology: &Topology<'_>, ends: &[String]) -> Result<Vec<Decision>, String> {
    let [src, dst] = ends else {
        return Err("--explain takes SRC and DST[:PORT]".into());
    };
    let (dst, port) = match dst.rsplit_once(':') {
        Some((name, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("--explain: {port:?} is not a port number"))?;
            (name, Some(port))
        }
        None => (dst.as_str(), None),
    };
    let find = |name: &str| {
        topology.node(name).ok_or_else(|| {
            format!("--explain: no workload {name:?} (workloads are named namespace/name; `outside` is any other client)")
        })
    };
    let (from, to) = (find(src)?, find(dst)?);
    let ports: Vec<u16> = match port {
        Some(port) => vec![port],
        None => topology.nodes[to].ports.iter().map(|p| p.port).collect(),
    };
    if ports.is_empty() {
        return Err(format!(
            "--explain: {dst} declares no TCP port; name one as {dst}:PORT"
        ));
    }
    Ok(ports
        .into_iter()
        .map(|port| topology.decide(from, to, port, true))
        .collect())
}

/// `graph`: exit 0, or 1 when `--diff` finds a connection more open, 2 on unreadable input.
pub fn graph(args: &GraphArgs) -> ExitCode {
    let fail = |message: &str| {
        if !message.is_empty() {
            eprintln!("mesh-admission: {message}");
        }
        ExitCode::from(2)
    };
    let config = match Config::load(args.input.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return fail(&format!("{error:#}")),
    };
    let model = if args.input.cluster {
        cluster_model(&config, args.no_generated)
    } else {
        graph_model(
            &args.input.files,
            &config,
            args.no_generated,
            args.input.allow_empty,
        )
    };
    let model = match model {
        Ok(model) => model,
        Err(message) => return fail(&message),
    };
    let topology = Topology::new(&model, &config);
    let mut code = ExitCode::SUCCESS;
    let text = if let Some(ends) = &args.explain {
        let decisions = match explain_ends(&topology, ends) {
            Ok(decisions) => decisions,
            Err(message) => return fail(&message),
        };
        match args.output {
            GraphOutput::Json => json_text(&decisions),
            _ => Ok(graph::output::explain(
                &decisions,
                &topology.not_evaluated(),
            )),
        }
    } else {
        let head = topology
            .graph()
            .filtered(args.from.as_deref(), args.to.as_deref());
        if args.diff.is_empty() {
            match args.output {
                GraphOutput::Table => {
                    let mut out = BufWriter::new(std::io::stdout().lock());
                    return match graph::output::table(&head, &mut out).and_then(|()| out.flush()) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(error) => fail(&format!("cannot write output: {error}")),
                    };
                }
                // The largest output (hundreds of MB for thousands of workloads): written as it is
                // made rather than held whole.
                GraphOutput::Json => return print_json(&head),
                GraphOutput::Dot => Ok(graph::picture::dot(&head)),
                GraphOutput::Svg => Ok(graph::picture::svg(&head)),
                GraphOutput::Html => Ok(graph::picture::html(&head, &|c| match (
                    topology.node(&c.from),
                    topology.node(&c.to),
                ) {
                    (Some(src), Some(dst)) => {
                        graph::output::explain(&[topology.decide(src, dst, c.port, true)], &[])
                    }
                    _ => String::new(),
                })),
            }
        } else {
            // The base is read with the same configuration, so only the inputs differ.
            let base_model = match graph_model(&args.diff, &config, args.no_generated, true) {
                Ok(model) => model,
                Err(message) => return fail(&message),
            };
            let base = Topology::new(&base_model, &config)
                .graph()
                .filtered(args.from.as_deref(), args.to.as_deref());
            let changes = graph::diff(&base, &head);
            if changes.more_open() {
                code = ExitCode::from(1);
            }
            match args.output {
                GraphOutput::Json => json_text(&changes),
                _ => Ok(graph::output::changes(&changes)),
            }
        }
    };
    match print_text(text, "graph") {
        Ok(()) => code,
        Err(code) => code,
    }
}

/// Writes the printed `text` (of `what`) to stdout; when it could not be made or written, says
/// why and gives exit 2.
fn print_text(text: anyhow::Result<String>, what: &str) -> Result<(), ExitCode> {
    let text = text.map_err(|error| {
        eprintln!("mesh-admission: cannot print the {what}: {error:#}");
        ExitCode::from(2)
    })?;
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    written.map_err(|error| {
        eprintln!("mesh-admission: cannot write output: {error}");
        ExitCode::from(2)
    })
}

/// Writes `value` as pretty JSON to stdout: exit 0, or 2 when it cannot be written.
fn print_json(value: &impl serde::Serialize) -> ExitCode {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mesh-admission: cannot write output: {error}");
            ExitCode::from(2)
        }
    }
}

fn json_text(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}
