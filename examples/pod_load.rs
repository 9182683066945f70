//! A pod-creation load client for kube-apiserver, sending the way client-go does: a few HTTP/2
//! connections over TLS, many requests in flight on each, a bearer token.
//!
//! ```text
//! cargo run --release --example pod_load -- --url https://127.0.0.1:6443 --ca ca.crt \
//!     --token-file token --namespace bench --pod pod.json --count 1000 --in-flight 16
//! ```
//!
//! It POSTs `--pod` (a Pod as JSON, normally with `generateName`) `--count` times to
//! `/api/v1/namespaces/NS/pods`, keeping `--in-flight` requests under way over `--connections`
//! HTTP/2 connections, and prints one JSON object on stdout: pods created (status 201), failures by
//! reason (`status_409`, `timeout`, `connect_refused`, ...), the elapsed time from the first request
//! to the last reply, pods per second, and the latency of the create calls from their send (p50,
//! p90, p99, max, mean, in ms).
//!
//! The engine is the test harness's `load` module (`tests/support/src/load/`), shared with `loadgen`
//! and the soak test and documented there: connections are opened before the clock starts, so the
//! run measures pod creations, not handshakes; a closed connection is opened again for the requests
//! after it; only a request the apiserver never saw (hyper handed it back unsent, or HTTP/2 refused
//! it before processing) is retried, once, as Go's transport does, and counted in `retried_unsent`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use testkit::load::{self, Plan, PodCreations, Report, Target, parse_duration, pods_target};

/// Beyond this a run is not a benchmark of this tool's kind.
const MAX_COUNT: u64 = 10_000_000;
const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Parser)]
#[command(about = "Pod-creation load for kube-apiserver over HTTP/2, as client-go sends it")]
struct Args {
    /// The apiserver's base URL, `https://HOST:PORT`.
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) that signed the apiserver's serving certificate.
    #[arg(long)]
    ca: PathBuf,
    /// File holding the bearer token (a file, not an argument, so it stays out of `ps`).
    #[arg(long)]
    token_file: PathBuf,
    /// Namespace the pods are created in.
    #[arg(long)]
    namespace: String,
    /// The Pod to create, as JSON; give it `metadata.generateName` so every copy gets a new name.
    #[arg(long)]
    pod: PathBuf,
    /// Pods to create.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Requests under way at any time, spread over the connections.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Pods per second, open-loop (request `i` due at `i / rate`, its latency counted from then, at
    /// most `--in-flight` under way), as clients create objects; 0 sends the next request as soon
    /// as a reply is in, which saturates the apiserver.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// A request without a complete reply after this long fails as `timeout` (seconds, or with a
    /// unit: `500ms`, `2m`); also the limit of each connection's handshakes.
    #[arg(long, default_value = "30", value_parser = parse_duration)]
    timeout: Duration,
    /// No request starts after this long from the first one.
    #[arg(long, default_value = "600", value_parser = parse_duration)]
    max_duration: Duration,
}

/// Where and what to send, from the arguments.
fn target(args: &Args) -> Result<(Target, PodCreations), String> {
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| format!("{}: {e}", args.token_file.display()))?;
    let target = pods_target(&args.url, &args.ca, &token, &args.namespace, args.timeout)
        .map_err(|e| format!("--url {}, --ca, --token-file: {e}", args.url))?;
    let pod = std::fs::read(&args.pod).map_err(|e| format!("{}: {e}", args.pod.display()))?;
    let pods = PodCreations::new(pod).map_err(|e| format!("{}: {e}", args.pod.display()))?;
    Ok((target, pods))
}

/// The report: every figure bench_e2e reads, and the reasons of whatever failed.
fn report(args: &Args, outcome: &Report) -> Value {
    let stats = &outcome.stats;
    let sent = stats.ok + stats.failed() + stats.unreached();
    // Not created, whether the apiserver answered otherwise or was never reached.
    let mut failed = stats.failures.clone();
    for (reason, count) in &stats.not_reached {
        *failed.entry(reason.clone()).or_default() += count;
    }
    if outcome.lost_lanes > 0 {
        failed.insert("lost_lanes".to_owned(), outcome.lost_lanes as u64);
    }
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let latency = stats.service.summary_ms();
    json!({
        "count": args.count,
        "sent": sent,
        "created": stats.outcome("created"),
        "failed": failed,
        "not_sent": args.count.saturating_sub(sent),
        "connections": args.connections,
        "in_flight": args.in_flight,
        "rate": args.rate,
        "overdue_unsent": outcome.overdue_unsent,
        "reconnects": stats.connections_opened.saturating_sub(args.connections as u64),
        "retried_unsent": stats.retried_unsent,
        "lost_lanes": outcome.lost_lanes,
        "elapsed_s": (seconds * 1e3).round() / 1e3,
        "pods_per_s": (stats.outcome("created") as f64 / seconds * 10.0).round() / 10.0,
        "latency_ms": {
            "p50": latency["p50"],
            "p90": latency["p90"],
            "p99": latency["p99"],
            "max": latency["max"],
            "mean": latency["mean"],
        },
        "error_samples": stats.samples,
    })
}

async fn run(args: Args) -> Result<Value, String> {
    let (target, pods) = target(&args)?;
    let plan = Plan {
        connections: args.connections,
        in_flight: args.in_flight,
        rate: args.rate,
        duration: args.max_duration,
        max_requests: args.count,
    };
    let outcome = load::run(target, plan, Arc::new(pods)).await?;
    Ok(report(&args, &outcome))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(1..=MAX_COUNT).contains(&args.count)
        || !(1..=MAX_IN_FLIGHT).contains(&args.in_flight)
        || !(1..=args.in_flight).contains(&args.connections)
        || !(0.0..=1e6).contains(&args.rate)
    {
        eprintln!(
            "pod_load: --count must be 1 to {MAX_COUNT}, --in-flight 1 to {MAX_IN_FLIGHT}, \
             --connections 1 to --in-flight, --rate 0 to 1000000"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pod_load: starting the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pod_load: {error}");
            ExitCode::from(2)
        }
    }
}
