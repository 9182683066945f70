//! The offline commands' I/O: read files, print results, choose exit codes. The work itself is in
//! `review` and `webhook_config`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{ReviewArgs, ReviewOutput, WebhookConfigArgs};
use crate::config::Config;
use crate::review::{self, ObjectReview};
use crate::webhook_config::{WebhookOptions, render_yaml};

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    })
}

/// `webhook-config`: both configurations as YAML.
pub fn webhook_config(args: &WebhookConfigArgs) -> anyhow::Result<String> {
    let config = load_config(args.config.as_deref())?;
    let ca_bundle = std::fs::read(&args.ca_bundle)
        .with_context(|| format!("cannot read the CA bundle {}", args.ca_bundle.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&ca_bundle).contains("-----BEGIN CERTIFICATE-----"),
        "{} holds no PEM certificate",
        args.ca_bundle.display()
    );
    let options = WebhookOptions {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        ca_bundle,
        failure_policy: args.failure_policy.as_str().into(),
        excluded_namespaces: config.excluded_namespaces.clone(),
        injection_label: (
            config.namespace_label.key.clone(),
            config.namespace_label.value.clone(),
        ),
    };
    Ok(render_yaml(&options)?)
}

/// `review`: exit 0 when everything is admitted, 1 when something is denied, 2 on unreadable input.
pub fn review(args: &ReviewArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mesh-admission: {error:#}");
            return ExitCode::from(2);
        }
    };
    let text = match read_input(&args.file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("mesh-admission: {error:#}");
            return ExitCode::from(2);
        }
    };
    let objects = match review::parse_objects(&text) {
        Ok(objects) => objects,
        Err(error) => {
            eprintln!("mesh-admission: {}: {error}", display_name(&args.file));
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut denied = false;
    for (index, object) in objects.iter().enumerate() {
        let uid = format!("review-{}", index + 1);
        let result = review::review_object(object, &args.namespace, &config, &uid);
        for warning in &result.warnings {
            eprintln!("Warning: {}: {warning}", describe(&result));
        }
        if let Some(message) = &result.denial {
            denied = true;
            eprintln!("denied: {}: {message}", describe(&result));
        }
        if let Err(error) = print_result(&mut out, args.output, index, &result) {
            eprintln!("mesh-admission: cannot write output: {error}");
            return ExitCode::from(2);
        }
    }
    if denied {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn display_name(file: &str) -> &str {
    if file == "-" { "<stdin>" } else { file }
}

fn read_input(file: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    }
    Ok(text)
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
            write!(out, "{}", serde_yaml::to_string(&r.mutated)?)?;
        }
        ReviewOutput::Patch => {
            let line = serde_json::json!({
                "kind": r.kind, "namespace": r.namespace, "name": r.name,
                "allowed": r.denial.is_none(), "patch": r.patch,
            });
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
