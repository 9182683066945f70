//! mesh-admission: a Kubernetes admission webhook that makes an Istio + SPIRE mesh safe by default.
//!
//! `policy` is the pure core (objects in, patches or verdicts out); `admission` turns AdmissionReview
//! bytes into reply bytes with it; `server`, `certs` and `cli` are the shell around them.

pub mod admission;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod controller;
pub mod graph;
pub mod live_audit;
pub mod manifests;
pub mod match_conditions;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod review;
pub mod server;
pub mod signals;
pub mod webhook_config;
