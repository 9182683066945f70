//! The HTTP contract of the admission routes, driven in-process (no sockets): status codes for bad
//! input, and that one bad request does not disturb the next.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use mesh_admission::config::Config;
use mesh_admission::metrics::Metrics;
use mesh_admission::server::routes::{AppState, admin_router, webhook_router};
use serde_json::{Value, json};
use tower::ServiceExt;

fn state() -> AppState {
    AppState {
        config: Arc::new(Config::default()),
        metrics: Arc::new(Metrics::new()),
        shutting_down: tokio_util::sync::CancellationToken::new(),
    }
}

async fn send(
    router: axum::Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

fn namespace_review() -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Namespace"},
            "resource": {"group": "", "version": "v1", "resource": "namespaces"},
            "name": "apps",
            "operation": "CREATE",
            "userInfo": {},
            "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}},
        }
    })
    .to_string()
}

#[tokio::test]
async fn bad_input_gets_the_contract_status_codes() {
    let app = webhook_router(state());
    let cases: Vec<(Method, &str, Vec<u8>, StatusCode)> = vec![
        (
            Method::POST,
            "/mutate",
            b"this is not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/mutate",
            br#"{"kind":"Pod","apiVersion":"v1"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/validate",
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/mutate",
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::PUT,
            "/validate",
            Vec::new(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/mutate",
            vec![b' '; 9 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (Method::POST, "/nowhere", Vec::new(), StatusCode::NOT_FOUND),
    ];
    for (method, uri, body, want) in cases {
        let (status, reply) = send(app.clone(), method.clone(), uri, body).await;
        assert_eq!(status, want, "{method} {uri}");
        // Every error has the same shape: one line of JSON with an "error" string.
        let error: Value = serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("{method} {uri}: {e}: {reply:?}"));
        assert!(
            error["error"].as_str().is_some_and(|e| !e.contains('\n')),
            "{error}"
        );
        assert!(!reply.contains(&b'\n'), "{method} {uri}: {reply:?}");
    }
    // The server is unaffected: a good review right after is answered.
    let (status, reply) = send(app, Method::POST, "/mutate?timeout=5s", namespace_review()).await;
    assert_eq!(status, StatusCode::OK);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["response"]["uid"], "u-1");
    assert_eq!(reply["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read() {
    let cfg = Config {
        max_body_bytes: 64 * 1024,
        ..Config::default()
    };
    let mut st = state();
    st.config = Arc::new(cfg);
    let app = webhook_router(st);
    let mut review = namespace_review();
    // Pad with whitespace, which JSON ignores, up to exactly the limit.
    review.push_str(&" ".repeat(64 * 1024 - review.len()));
    let (status, _) = send(app.clone(), Method::POST, "/mutate", review.clone()).await;
    assert_eq!(status, StatusCode::OK);
    review.push(' ');
    let (status, reply) = send(app, Method::POST, "/mutate", review).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = serde_json::from_slice(&reply).expect("413 bodies are JSON");
    assert_eq!(
        error["error"],
        "request body larger than the limit of 65536 bytes"
    );
}

#[tokio::test]
async fn probes_and_metrics() {
    let st = state();
    let admin = admin_router(st.clone());
    let webhook = webhook_router(st.clone());
    assert_eq!(
        send(admin.clone(), Method::GET, "/healthz", Body::empty())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(admin.clone(), Method::GET, "/readyz", Body::empty())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(webhook.clone(), Method::GET, "/readyz", Body::empty())
            .await
            .0,
        StatusCode::OK
    );

    send(webhook.clone(), Method::POST, "/mutate", namespace_review()).await;
    send(webhook.clone(), Method::POST, "/mutate", "garbage").await;
    let (status, text) = send(admin.clone(), Method::GET, "/metrics", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(r#"mesh_admission_requests_total{endpoint="mutate",kind="Namespace",operation="CREATE",result="patched"} 1"#), "{text}");
    assert!(text.contains(r#"mesh_admission_requests_total{endpoint="mutate",kind="other",operation="unknown",result="error"} 1"#), "{text}");
    assert!(
        text.contains("mesh_admission_request_duration_seconds_count 2"),
        "{text}"
    );

    st.shutting_down.cancel();
    assert_eq!(
        send(admin.clone(), Method::GET, "/readyz", Body::empty())
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(webhook, Method::GET, "/readyz", Body::empty()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(admin, Method::GET, "/healthz", Body::empty()).await.0,
        StatusCode::OK
    );
}
