//! The whole request body is fuzzer bytes: the envelope decoding (JSON, AdmissionReview shape, uid,
//! operation, kind) and, once the fuzzer has learnt the envelope, the policy rules behind it. Both
//! endpoints see every input. See `fuzz_support::check_review` for the invariants.
#![no_main]

use fuzz_support::{CONFIG, check_review};
use libfuzzer_sys::fuzz_target;
use mesh_admission::admission::Endpoint;

fuzz_target!(|data: &[u8]| {
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        check_review(endpoint, data, &CONFIG);
    }
});
