use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use mesh_admission::cli::{Cli, Command, LogFormat};
use mesh_admission::{certs, commands, controller, server};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: glibc keeps the high-water mark of its per-thread arenas
/// (a rejected 8 MiB chunked body leaves RSS several MiB higher for good), and mimalloc returns
/// freed pages to the OS and allocates the small, short-lived buffers of a review faster. Its
/// documented `MIMALLOC_PURGE_DELAY=0` (set by the image, the chart and `hack/run-local.sh`; mimalloc
/// reads it when the process loads) returns them at once rather than 10 ms later.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Transparent huge pages would back mimalloc's 2 MiB-aligned segments with whole huge pages
    // on first touch: twice the resident memory (18 MiB idle instead of 9) for no measurable speed.
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("warning: cannot disable transparent huge pages: {error}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(args) => run_certs(&args),
        Command::WebhookConfig(args) => run_webhook_config(&args),
        Command::Review(args) => return commands::review(&args),
        Command::Render(args) => return commands::render(&args),
        Command::Audit(args) => return commands::audit(&args),
        Command::Graph(args) => return commands::graph(&args),
        Command::Controller(args) => {
            init_tracing(args.log_format, &args.log_level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(controller::run(args)))
        }
        Command::Serve(args) => {
            init_tracing(args.log_format, &args.log_level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(server::run(args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, every cause joined: this is what a user sees in `kubectl logs` or a terminal.
            // `writeln!` rather than `eprintln!`: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "mesh-admission: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_certs(args: &mesh_admission::cli::CertsArgs) -> anyhow::Result<()> {
    let generated = certs::generate(&certs::CertOptions {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        out: args.out.clone(),
        days: args.days,
    })?;
    let ca = if generated.reused_ca { "reused" } else { "new" };
    println!(
        "CA ({ca}):   {}  {}",
        generated.ca_cert.display(),
        generated.ca_key.display()
    );
    println!(
        "serving:    {}  {}",
        generated.tls_cert.display(),
        generated.tls_key.display()
    );
    Ok(())
}

fn run_webhook_config(args: &mesh_admission::cli::WebhookConfigArgs) -> anyhow::Result<()> {
    print!("{}", commands::webhook_config(args)?);
    Ok(())
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or `kubectl logs` would get escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr is a pipe nobody reads any more) is dropped.
        // The default reports it with `eprintln!`, which panics on that same stderr: in the
        // signal task that panic left SIGTERM unanswered, on the main thread it ended the server.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
