//! The one harness of mesh-admission's integration tests, examples and benchmarks: real processes,
//! real sockets, real certificates (DESIGN.md section 11).
//!
//! * the processes: [`Server`] (`mesh-admission serve`, the one way the webhook is started),
//!   [`ControlPlane`] (etcd and kube-apiserver as `hack/build-control-plane.sh` builds them, driven
//!   with `kubectl`), [`Webhook`] (a server registered with a control plane), [`Controller`]
//!   (`mesh-admission controller`), and [`bench::NullWebhook`]; each is killed by its PID when it
//!   drops, also when a test panics;
//! * [`certs`]: serving pairs from `mesh-admission certs`, Secret volumes, the apiserver's PKI;
//! * [`client`]: an apiserver-like TLS client and the apiserver's checks on a reply, and
//!   [`ApiClient`], the Kubernetes REST API over one HTTP/2 connection;
//! * [`load`]: the load engine of `examples/loadgen.rs`, `examples/pod_load.rs` and the soak;
//! * [`listener`]: the library's listener in-process, with a test router;
//! * [`rules`]: DESIGN.md section 4 as checks on a mutated object.
//!
//! Every loop here is bounded in count and time; every server binds 127.0.0.1.

pub mod api;
pub mod bench;
pub mod certs;
pub mod client;
pub mod control_plane;
pub mod controller;
pub mod fixtures;
pub mod http;
pub mod istiod;
pub mod listener;
pub mod load;
pub mod metrics;
pub mod pod_traffic;
pub mod process;
pub mod procfs;
pub mod rollout;
pub mod rules;
pub mod scale;
pub mod server;
pub mod webhook;

pub use api::{ApiClient, runtime};
pub use certs::generate_certs;
pub use client::{
    Client, ClientIdentity, H2, HTTP11, Protocol, SERVICE_NAME, Sender, check_reply, client_config,
    connect, file_leaf, patch_of, peer_leaf, review_for, tls_connect,
};
pub use control_plane::ControlPlane;
pub use controller::{Controller, ControllerOptions};
pub use http::admin_get;
pub use process::{
    mesh_admission, mesh_admission_stdin, run_command, shared_crds, temp_dir, wait_for, wait_until,
};
pub use server::Server;
pub use webhook::{Webhook, WebhookOptions};
