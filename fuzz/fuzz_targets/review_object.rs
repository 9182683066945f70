//! A valid AdmissionReview envelope around fuzzer bytes as `request.object`, so that every execution
//! reaches the policy rules. Input layout:
//!
//! - byte 0: bits 0-3 the low bits of the kind (`fuzz_support::KINDS`: every kind of the kinds table,
//!   an older HelmRelease version and a kind no rule reads), bits 4-5 the operation (CREATE, CREATE,
//!   UPDATE, DELETE), bit 6 dryRun, bit 7 an empty request name;
//! - byte 1: bits 0-3 the request namespace (`fuzz_support::NAMESPACES`, including "" and excluded
//!   ones), bits 4-7 the high bits of the kind (the table outgrew 16 kinds with the Istio ones; seeds
//!   written before have 0 there and keep their kind);
//! - the rest: the object, JSON text (inputs that are not JSON are skipped).
//!
//! Both endpoints review it (`check_review`), and `mesh-admission review`'s per-object path runs on it
//! too with the header's apiVersion and kind (`check_cli_review`).
#![no_main]

use fuzz_support::{
    CONFIG, KINDS, NAMESPACES, OPERATIONS, check_cli_review, check_review, envelope,
};
use libfuzzer_sys::fuzz_target;
use mesh_admission::admission::Endpoint;
use serde_json::Value;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let [header, ns, object @ ..] = data else {
        return;
    };
    let Ok(object) = std::str::from_utf8(object) else {
        return;
    };
    if serde_json::from_str::<&RawValue>(object).is_err() {
        return;
    }
    let kind_index = usize::from(header & 0x0f) | (usize::from(ns >> 4) << 4);
    let (group, version, kind) = KINDS[kind_index % KINDS.len()];
    let operation = OPERATIONS[usize::from((header >> 4) & 0x03)];
    let dry_run = header & 0x40 != 0;
    let name = if header & 0x80 != 0 { "" } else { "fuzz-name" };
    let namespace = NAMESPACES[usize::from(ns & 0x0f) % NAMESPACES.len()];
    let body = envelope(
        group, version, kind, namespace, name, operation, dry_run, object,
    );
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let outcome = check_review(endpoint, body.as_bytes(), &CONFIG);
        assert!(
            outcome.is_some(),
            "a well-formed envelope was rejected as not an AdmissionReview: {body}"
        );
    }
    // The offline `review` command, on objects it would read (a mapping with apiVersion and kind).
    if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(object) {
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind.into()));
        check_cli_review(&Value::Object(map), namespace, &CONFIG);
    }
});
