//! HTTP routes: the admission endpoints on the TLS port, probes and metrics on the admin port.
//! No policy here: handlers pass bytes to `admission::review` and account for the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admission::{self, Endpoint, Outcome, ResultClass};
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Cancelled on the first shutdown signal: `/readyz` fails from then on, so endpoints drain.
    pub shutting_down: CancellationToken,
}

/// The TLS port: `/mutate`, `/validate`, `/healthz`, `/readyz`.
pub fn webhook_router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let routes = Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(limit));
    with_probes(routes, state)
}

/// The plain-HTTP admin port: `/healthz`, `/readyz`, `/metrics`.
pub fn admin_router(state: AppState) -> Router {
    with_probes(Router::new().route("/metrics", get(metrics)), state)
}

/// What both ports share: the probes, JSON answers for unknown paths and methods, and a 500 for a
/// handler that panics.
fn with_probes(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

async fn mutate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    review(Endpoint::Mutate, &state, body)
}

async fn validate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    review(Endpoint::Validate, &state, body)
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutting_down.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let headers = [(header::CONTENT_TYPE, content_type)];
    (headers, state.metrics.encode()).into_response()
}

/// Every error answer of both ports: `{"error": "..."}` on one line, so clients parse one shape.
pub(super) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked; answered 500");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Decides one review, or answers a body that could not be read (over the limit: 413; cut off:
/// 400). Each review gets a span carrying its uid, kind, namespace and name; the span is at debug
/// level so that, at the default level, a review that logs nothing costs no formatting: denials and
/// errors carry the same facts on their own events.
fn review(endpoint: Endpoint, state: &AppState, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let count_error =
        || (state.metrics).count_request(endpoint, "other", "unknown", ResultClass::Error);
    let outcome = match body {
        Err(rejection) => {
            let message = match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => format!(
                    "request body larger than the limit of {} bytes",
                    state.config.max_body_bytes
                ),
                _ => rejection.body_text(),
            };
            tracing::warn!(endpoint = endpoint.as_str(), %message, "request body could not be read");
            count_error();
            // Not observed in the duration histogram: nothing was reviewed.
            return json_error(rejection.status(), &message);
        }
        Ok(body) => admission::review(endpoint, &body, &state.config),
    };
    let response = match outcome {
        Err(error) => {
            tracing::warn!(endpoint = endpoint.as_str(), %error, "request body is not an AdmissionReview");
            count_error();
            json_error(StatusCode::BAD_REQUEST, &error.to_string())
        }
        Ok(outcome) => {
            let result = outcome.result();
            let span = tracing::debug_span!(
                "review",
                endpoint = endpoint.as_str(),
                uid = %outcome.uid,
                kind = %outcome.kind,
                operation = outcome.operation,
                namespace = %outcome.namespace,
                // Not `name`: JSON logs write the span's own name under that key too, and JSON
                // readers keep only the last of two equal keys.
                object_name = %outcome.name,
                result = result.as_str(),
            );
            let _entered = span.enter();
            let Outcome {
                uid,
                kind,
                namespace,
                name,
                ..
            } = &outcome;
            match &outcome.decision {
                admission::Decision::Denied { message, .. } if result == ResultClass::Error => {
                    tracing::warn!(%uid, %kind, %namespace, %name, %message, "object could not be decoded");
                }
                admission::Decision::Denied { message, .. } => {
                    tracing::info!(%uid, %kind, %namespace, %name, %message, "denied");
                }
                _ => tracing::debug!(dry_run = outcome.dry_run, "reviewed"),
            }
            state
                .metrics
                .count_request(endpoint, &outcome.kind, outcome.operation, result);
            let headers = [(header::CONTENT_TYPE, "application/json")];
            (headers, outcome.to_json()).into_response()
        }
    };
    state
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}
