//! A small load client for the admission webhook, speaking TLS like kube-apiserver does.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8443 --ca certs/ca.crt \
//!     --body hack/samples/pod.json --path '/mutate?timeout=5s' --protocol h1 \
//!     --connections 25 --rate 2000 --duration 20s [--max-requests N] [--json]
//! ```
//!
//! Every request carries a fresh `request.uid` and every reply is checked as the apiserver checks
//! it; the engine (outcome classes, open-loop pacing and coordinated omission, HdrHistogram
//! latencies) is the test harness's `load` module (`tests/support/src/load/`), shared with
//! `pod_load` and the soak test and documented there. The send lag (due time to send: the client's
//! own delay) is reported beside the latency and the service time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use testkit::Protocol;
use testkit::load::{self, BodyTemplate, Plan, Report, Reviews, Target, parse_duration};

#[derive(Debug, Parser)]
#[command(about = "Load client for mesh-admission: fresh uids, apiserver-style reply checks")]
struct Args {
    /// Address of the webhook's TLS port.
    #[arg(long)]
    addr: SocketAddr,
    /// CA certificate (PEM) the server certificate is verified against.
    #[arg(long)]
    ca: PathBuf,
    /// Name verified in the server certificate (and sent as SNI and Host).
    #[arg(long, default_value = "mesh-admission.mesh-system.svc")]
    server_name: String,
    /// AdmissionReview JSON file; its `request.uid` is replaced for every request.
    #[arg(long)]
    body: PathBuf,
    /// Request path, e.g. `/mutate` or `/validate?timeout=5s`.
    #[arg(long, default_value = "/mutate")]
    path: String,
    /// HTTP/1.1 (`h1`: one request at a time per connection, keep-alive) or HTTP/2 (`h2`).
    #[arg(long, default_value = "h1")]
    protocol: Protocol,
    /// Connections kept open.
    #[arg(long, default_value_t = 25)]
    connections: usize,
    /// Concurrent streams per HTTP/2 connection (HTTP/1.1 always has one).
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Requests per second over all connections; 0 sends as fast as the connections allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to send, e.g. `20s`, `500ms`, `10m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// A request without a complete reply after this long fails as `timeout`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// TCP connect + TLS + HTTP handshake limit.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Print one JSON object on stdout (the text report goes to stderr).
    #[arg(long)]
    json: bool,
}

fn report(args: &Args, outcome: &Report) -> (String, Value) {
    let (stats, overdue) = (&outcome.stats, outcome.overdue_unsent);
    let failed = stats.failed();
    let unreached = stats.unreached();
    let requests = stats.ok + failed + unreached;
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let throughput = outcome.throughput();
    let latency = stats.latency.summary_ms();
    let service = stats.service.summary_ms();
    let send_lag = stats.send_lag.summary_ms();
    let value = json!({
        "protocol": args.protocol.as_str(),
        "addr": args.addr.to_string(),
        "path": args.path,
        "connections": args.connections,
        "streams": streams(args),
        "target_rate": args.rate,
        "elapsed_s": (seconds * 1000.0).round() / 1000.0,
        "requests": requests,
        "ok": stats.ok,
        "failed": failed,
        "failures": stats.failures,
        "not_reached": unreached,
        "not_reached_reasons": stats.not_reached,
        "retried_unsent": stats.retried_unsent,
        "overdue_unsent": overdue,
        "connections_opened": stats.connections_opened,
        "allowed": stats.outcome("allowed"),
        "denied": stats.outcome("denied"),
        "patched": stats.outcome("patched"),
        "throughput": (throughput * 10.0).round() / 10.0,
        "latency_ms": latency,
        "service_ms": service,
        "send_lag_ms": send_lag,
        "error_samples": stats.samples,
    });
    let mut text = String::new();
    let rate = if args.rate > 0.0 {
        format!("{}/s open-loop", args.rate)
    } else {
        "saturating".to_string()
    };
    text.push_str(&format!(
        "loadgen {} {}{}: {} connections{}, {rate}, {:.1}s\n",
        args.protocol.as_str(),
        args.addr,
        args.path,
        args.connections,
        if args.protocol == Protocol::Http2 {
            format!(" x {} streams", args.streams)
        } else {
            String::new()
        },
        seconds,
    ));
    text.push_str(&format!(
        "  requests {requests}: ok {} (allowed {}, denied {}, patched {}), failed {failed}, not reached {unreached}; \
         retried unsent {}, overdue unsent {overdue}, connections opened {}\n",
        stats.ok,
        stats.outcome("allowed"),
        stats.outcome("denied"),
        stats.outcome("patched"),
        stats.retried_unsent,
        stats.connections_opened
    ));
    text.push_str(&format!("  throughput {throughput:.1} ok/s\n"));
    for (name, summary) in [
        ("latency from due time", &latency),
        ("service time from send", &service),
        ("send lag (due to send)", &send_lag),
    ] {
        text.push_str(&format!(
            "  {name} (ms): p50 {} p90 {} p99 {} p99.9 {} max {} mean {}\n",
            summary["p50"],
            summary["p90"],
            summary["p99"],
            summary["p999"],
            summary["max"],
            summary["mean"]
        ));
    }
    for (label, map) in [
        ("failed", &stats.failures),
        ("not reached", &stats.not_reached),
    ] {
        for (reason, count) in map {
            text.push_str(&format!("  {label}: {reason} x{count}\n"));
        }
    }
    for (reason, messages) in &stats.samples {
        for message in messages {
            text.push_str(&format!("  sample {reason}: {message}\n"));
        }
    }
    (text, value)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.connections == 0 || streams(&args) == 0 {
        eprintln!("loadgen: --connections and --streams must be at least 1");
        return std::process::ExitCode::from(2);
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        eprintln!("loadgen: --rate must be a non-negative number");
        return std::process::ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Requests in flight on each connection: HTTP/1.1 carries one at a time.
fn streams(args: &Args) -> usize {
    match args.protocol {
        Protocol::Http1 => 1,
        Protocol::Http2 => args.streams,
    }
}

async fn run(args: Args) -> Result<(), String> {
    let target = Target {
        addr: args.addr,
        server_name: args.server_name.clone(),
        authority: args.server_name.clone(),
        protocol: args.protocol,
        connector: load::tls_connector(&args.ca, args.protocol)?,
        path: args.path.clone(),
        headers: Vec::new(),
        connect_timeout: args.connect_timeout,
        request_timeout: args.timeout,
    };
    let plan = Plan {
        connections: args.connections,
        in_flight: args.connections * streams(&args),
        rate: args.rate,
        duration: args.duration,
        max_requests: args.max_requests,
    };
    let run_id = match args.protocol {
        Protocol::Http1 => 0,
        Protocol::Http2 => 1,
    };
    let reviews = Arc::new(Reviews::new(BodyTemplate::load(&args.body)?, run_id));
    let outcome = load::run(target, plan, reviews).await?;
    let (text, mut value) = report(&args, &outcome);
    value["lost_lanes"] = json!(outcome.lost_lanes);
    if args.json {
        eprint!("{text}");
        println!("{value}");
    } else {
        print!("{text}");
    }
    if outcome.lost_lanes > 0 {
        return Err(format!("{} lanes did not finish", outcome.lost_lanes));
    }
    Ok(())
}
