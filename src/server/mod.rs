//! The shell: the HTTPS admission port and the plain-HTTP admin port, certificate reloading, and the
//! shutdown sequence of DESIGN.md section 3.

mod body;
pub mod listener;
pub mod routes;
pub mod tls;
mod unvectored;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::certs;
use crate::certs::load::TlsError;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::metrics::Metrics;
use listener::ServeOptions;
use routes::{AppState, admin_router, webhook_router};
use tls::{CertificateResolver, ReloadEvent};

/// `mesh-admission serve`: runs until SIGTERM/SIGINT has drained the server.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(limit) = args.max_body_bytes {
        anyhow::ensure!(limit > 0, "--max-body-bytes must be greater than 0");
        config.max_body_bytes = limit;
    }

    if args.dev_certs {
        let dir = args.tls_cert.parent().unwrap_or(Path::new("."));
        if certs::ensure_dev_certs(dir)? {
            tracing::info!(dir = %dir.display(), "generated development certificates");
        }
    }
    let resolver =
        CertificateResolver::from_files(&args.tls_cert, &args.tls_key).map_err(|error| {
            let hint = match error {
                TlsError::Read { .. } if !args.dev_certs => {
                    " (generate one with `mesh-admission certs`, or start with --dev-certs to have \
                 development certificates generated)"
                }
                _ => "",
            };
            anyhow::Error::new(error).context(format!("cannot load the serving certificate{hint}"))
        })?;
    let resolver = Arc::new(resolver);
    let tls_config = tls::server_config(resolver.clone(), args.client_ca.as_deref())?;

    let webhook_listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    // Installed before announcing the address, so a signal never finds the default (fatal) handler.
    let signals =
        crate::signals::spawn_signal_handler().context("cannot install signal handlers")?;
    tracing::info!(
        addr = %webhook_listener.local_addr()?,
        admin_addr = %admin_listener.local_addr()?,
        "listening"
    );

    let metrics = Arc::new(Metrics::new());
    let state = AppState {
        config: Arc::new(config),
        metrics: metrics.clone(),
        // Readiness fails the moment the first signal arrives, so endpoints stop sending new work.
        shutting_down: signals.shutdown.clone(),
    };
    let stop_admin = CancellationToken::new();
    let reloader = tls::spawn_reloader(
        resolver,
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.cert_reload_interval,
        move |event| {
            match event {
                ReloadEvent::Reloaded => metrics.tls_reloads.inc(),
                ReloadEvent::Failed(_) => metrics.tls_reload_errors.inc(),
            };
        },
        stop_admin.clone(),
    );
    let options = ServeOptions {
        request_deadline: args.request_timeout,
        shutdown_grace: args.shutdown_grace,
        ..ServeOptions::default()
    };
    let admin = tokio::spawn(listener::serve(
        admin_listener,
        None,
        admin_router(state.clone()),
        ServeOptions {
            shutdown_grace: Duration::ZERO,
            ..options
        },
        stop_admin.clone().cancelled_owned(),
    ));
    let serving = async {
        let served = listener::serve(
            webhook_listener,
            Some(tls_config),
            webhook_router(state),
            options,
            signals.shutdown.clone().cancelled_owned(),
        )
        .await;
        // The admin port outlives the drain so probes keep answering 503 until the very end.
        stop_admin.cancel();
        let _ = admin.await;
        let _ = reloader.await;
        served
    };
    tokio::select! {
        served = serving => served?,
        // Not waiting for the drain: `main` exits with status 1.
        aborted = signals.aborted() => return Err(aborted.into()),
    };
    Ok(())
}
