//! The Kubernetes REST API over one HTTP/2 connection with the admin token, as client-go talks to
//! it: many requests in flight on one connection, no process per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::client::{Client, H2, client_config, full, tls_connect_to};
use crate::control_plane::ControlPlane;

/// How long one API request may take before [`ApiClient`] reports it failed.
const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A two-worker tokio runtime for the async clients ([`ApiClient`]) of the tests and benchmarks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub struct ApiClient {
    connection: Client,
    base: String,
    token: String,
}

impl ApiClient {
    /// Connects to `cp`'s apiserver (TLS verified against its CA, ALPN h2); the connection is driven
    /// by a task of the current tokio runtime.
    pub async fn connect(cp: &ControlPlane) -> ApiClient {
        let connector = TlsConnector::from(Arc::new(client_config(cp.ca_file(), &[H2], None)));
        let addr: SocketAddr = cp.url().strip_prefix("https://").unwrap().parse().unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tls_connect_to(addr, name, &connector, Duration::from_secs(5))
            .await
            .unwrap_or_else(|(_, message)| panic!("{message}"));
        let connection = Client::over(tls)
            .await
            .unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e}"));
        assert!(
            connection.another_stream().is_some(),
            "{addr} did not choose HTTP/2"
        );
        ApiClient {
            connection,
            base: cp.url().to_owned(),
            token: cp.admin_token().to_owned(),
        }
    }

    /// `POST path` with `object` as JSON: the status code and the JSON the apiserver answered (the
    /// stored object, or a Status), or why there was no answer within [`API_REQUEST_TIMEOUT`].
    pub async fn post(
        &self,
        path: &str,
        object: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        self.send("POST", path, "application/json", Some(object))
            .await
    }

    /// `PATCH path` with `patch` as a JSON merge patch; as [`ApiClient::post`].
    pub async fn merge_patch(
        &self,
        path: &str,
        patch: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), String> {
        self.send("PATCH", path, "application/merge-patch+json", Some(patch))
            .await
    }

    /// `GET path` (an object or a list); as [`ApiClient::post`].
    pub async fn get(&self, path: &str) -> Result<(u16, serde_json::Value), String> {
        self.send("GET", path, "application/json", None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        object: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(full(Bytes::from(
                object.map(ToString::to_string).unwrap_or_default(),
            )))
            .unwrap();
        let exchange = async {
            // A stream of its own on the shared HTTP/2 connection.
            let mut stream = self.connection.another_stream().expect("HTTP/2");
            let response = stream
                .send(request)
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?
                .to_bytes();
            let json = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "{method} {path}: {status} with no JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            })?;
            Ok((status, json))
        };
        tokio::time::timeout(API_REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{method} {path}: no answer within {API_REQUEST_TIMEOUT:?}"
                ))
            })
    }
}
