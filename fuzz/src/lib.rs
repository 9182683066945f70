//! Shared oracles for the fuzz targets: what must hold for every AdmissionReview the library answers.
//!
//! Every check panics with a message that names the broken invariant, so a libFuzzer crash report is
//! enough to tell what went wrong.

use std::sync::LazyLock;

use base64::Engine;
use mesh_admission::admission::{self, Decision, Endpoint, Outcome, ReviewError};
use mesh_admission::config::Config;
use mesh_admission::policy::{MAX_WARNING_CHARS, kinds};
use serde_json::Value;

/// The embedded default configuration, built once.
pub static CONFIG: LazyLock<Config> = LazyLock::new(Config::default);

/// The kinds the review targets wrap objects in, (group, version, kind): every kind of the kinds
/// table, plus an older HelmRelease version and a kind no rule reads.
pub static KINDS: LazyLock<Vec<(&'static str, &'static str, &'static str)>> =
    LazyLock::new(|| {
        let mut list: Vec<_> = kinds::KINDS
            .iter()
            .map(|k| {
                let version = match k.versions {
                    ["*", ..] | [] => "v2",
                    [newest, ..] => newest,
                };
                (k.group, version, k.kind)
            })
            .collect();
        list.extend([
            ("helm.toolkit.fluxcd.io", "v2beta1", "HelmRelease"),
            ("", "v1", "ConfigMap"),
        ]);
        list
    });

/// Namespaces a request may name: ordinary ones, none, and excluded ones.
pub const NAMESPACES: [&str; 6] = [
    "apps",
    "payments",
    "",
    "kube-system",
    "istio-system",
    "mesh-system",
];

/// Operations, CREATE most often since it is the one that mutates Pods.
pub const OPERATIONS: [&str; 4] = ["CREATE", "CREATE", "UPDATE", "DELETE"];

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() > 4000 {
        format!("{}…", text.chars().take(4000).collect::<String>())
    } else {
        text.into_owned()
    }
}

/// Reviews `body` at `endpoint` and checks every invariant of the reply. Returns the outcome.
///
/// - the same body gives the same answer (the code is pure);
/// - a body that parses as JSON is never reported as "not JSON";
/// - the reply parses, is an AdmissionReview with the request's apiVersion and echoes `request.uid`;
/// - warnings are single lines of at most 120 characters;
/// - denials carry status 400 BadRequest or 422 Invalid and never a patch;
/// - `/validate` never patches;
/// - a patch is base64 of a non-empty JSON Patch that applies to `request.object` as sent, and reviewing
///   the patched object again yields no patch (idempotency) and is not denied.
pub fn check_review(endpoint: Endpoint, body: &[u8], cfg: &Config) -> Option<Outcome> {
    let result = admission::review(endpoint, body, cfg);
    let again = admission::review(endpoint, body, cfg);
    assert_eq!(result, again, "review is not deterministic");
    let body_value: Option<Value> = serde_json::from_slice(body).ok();

    let outcome = match result {
        Err(ReviewError::NotJson(message)) => {
            assert!(
                body_value.is_none(),
                "valid JSON reported as not JSON: {message}\nbody: {}",
                show(body)
            );
            return None;
        }
        Err(_) => return None,
        Ok(outcome) => outcome,
    };

    if let Some(body_value) = &body_value {
        check_key_order(endpoint, body, body_value, &outcome, cfg);
    }

    let reply_bytes = outcome.to_json();
    let reply: Value = serde_json::from_slice(&reply_bytes).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON: {e}\nreply: {}",
            String::from_utf8_lossy(&reply_bytes)
        )
    });
    assert_eq!(reply["kind"], "AdmissionReview", "reply kind: {reply}");
    assert_eq!(
        reply["apiVersion"].as_str(),
        Some(outcome.api_version.as_str()),
        "reply apiVersion: {reply}"
    );
    let response = &reply["response"];
    assert_eq!(
        response["uid"].as_str(),
        Some(outcome.uid.as_str()),
        "reply uid differs from outcome uid: {reply}"
    );
    if let Some(body_value) = &body_value {
        assert_eq!(
            response["uid"],
            body_value["request"]["uid"],
            "response.uid does not echo request.uid\nbody: {}\nreply: {reply}",
            show(body)
        );
    }
    let allowed = response["allowed"]
        .as_bool()
        .unwrap_or_else(|| panic!("response.allowed is not a bool: {reply}"));
    if let Some(warnings) = response.get("warnings") {
        let warnings = warnings
            .as_array()
            .unwrap_or_else(|| panic!("warnings not a list: {reply}"));
        assert!(!warnings.is_empty(), "empty warnings list sent: {reply}");
        for w in warnings {
            let w = w
                .as_str()
                .unwrap_or_else(|| panic!("warning not a string: {reply}"));
            assert!(
                w.chars().count() <= MAX_WARNING_CHARS,
                "warning over {MAX_WARNING_CHARS} characters: {w:?}"
            );
            assert!(!w.contains(['\n', '\r']), "warning with a newline: {w:?}");
        }
    }

    let denial = match &outcome.decision {
        Decision::Denied { message, .. } => Some((422, "Invalid", message)),
        Decision::BadRequest { message } => Some((400, "BadRequest", message)),
        Decision::Allowed { .. } => None,
    };
    if let Some((code, reason, message)) = denial {
        assert!(!allowed, "denied decision sent as allowed: {reply}");
        assert_eq!(response["status"]["reason"], reason, "status.reason: {reply}");
        assert!(!message.is_empty(), "denial without a message");
        assert_eq!(response["status"]["code"], code, "status.code: {reply}");
        assert!(
            response.get("patch").is_none() && response.get("patchType").is_none(),
            "denial with a patch: {reply}"
        );
    }
    match &outcome.decision {
        Decision::Denied { .. } | Decision::BadRequest { .. } => {}
        Decision::Allowed { patch, .. } => {
            assert!(allowed, "allowed decision sent as denied: {reply}");
            assert_eq!(
                response.get("patch").is_some(),
                !patch.is_empty(),
                "patch present iff the decision has one: {reply}"
            );
            assert_eq!(
                response.get("patchType").is_some(),
                response.get("patch").is_some(),
                "patchType iff patch: {reply}"
            );
        }
    }

    if let Some(encoded) = response.get("patch") {
        assert_eq!(
            endpoint,
            Endpoint::Mutate,
            "/validate sent a patch: {reply}"
        );
        assert_eq!(response["patchType"], "JSONPatch", "patchType: {reply}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("patch is a string"))
            .unwrap_or_else(|e| panic!("patch is not base64: {e}: {reply}"));
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "patch is not a JSON Patch: {e}: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert!(!ops.0.is_empty(), "empty patch sent");
        // The object as sent; a body whose numbers serde_json::Value cannot hold (1e400) is skipped.
        if let Some(mut body_value) = body_value {
            let object = &mut body_value["request"]["object"];
            let before = object.clone();
            json_patch::patch(object, &ops).unwrap_or_else(|e| {
                panic!(
                    "patch does not apply to the object as sent: {e}\nobject: {before}\npatch: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            let after = object.clone();
            let second_body = serde_json::to_vec(&body_value).expect("serializes");
            let second = admission::review(endpoint, &second_body, cfg)
                .unwrap_or_else(|e| panic!("patched review is rejected: {e}\nobject: {after}"));
            match &second.decision {
                Decision::Allowed { patch, .. } => assert!(
                    patch.is_empty(),
                    "not idempotent: a second pass patches again\nobject: {before}\nfirst patch: {}\npatched: {after}\nsecond patch: {}",
                    String::from_utf8_lossy(&bytes),
                    serde_json::to_string(patch).unwrap_or_default()
                ),
                Decision::Denied { message, .. } | Decision::BadRequest { message } => panic!(
                    "the patched object is denied: {message}\nobject: {before}\npatched: {after}"
                ),
            }
        }
    }
    Some(outcome)
}

/// `body_value` written back with `request.object` first or last among the request's keys (the other keys
/// sorted, so `kind` and `operation` come before a last `object`).
fn with_object(body_value: &Value, object_first: bool) -> Option<String> {
    let Value::Object(top) = body_value else {
        return None;
    };
    let Some(Value::Object(request)) = top.get("request") else {
        return None;
    };
    let object = request.get("object")?;
    let mut out = String::from("{");
    let mut first = true;
    let mut push = |out: &mut String, key: &str, value: &str| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("a string"));
        out.push(':');
        out.push_str(value);
    };
    for (key, value) in top {
        if key != "request" {
            push(&mut out, key, &value.to_string());
            continue;
        }
        let mut inner = String::from("{");
        let mut fields: Vec<(String, String)> = request
            .iter()
            .filter(|(k, _)| *k != "object")
            .map(|(k, v)| (serde_json::to_string(k).expect("a string"), v.to_string()))
            .collect();
        let object = ("\"object\"".to_owned(), object.to_string());
        if object_first {
            fields.insert(0, object);
        } else {
            fields.push(object);
        }
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        inner.push_str(&fields.join(","));
        inner.push('}');
        push(&mut out, key, &inner);
    }
    out.push('}');
    Some(out)
}

/// True when some JSON object in `text` names a key twice (serde_json::Value keeps the last one, so a
/// rewritten body would not be the same review).
pub fn has_duplicate_keys(text: &[u8]) -> bool {
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Walk;
    impl<'de> serde::de::DeserializeSeed<'de> for Walk {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Walk)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !keys.insert(key) {
                    return Err(de::Error::custom("duplicate key"));
                }
                map.next_value_seed(Walk)?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    serde::de::DeserializeSeed::deserialize(Walk, &mut de)
        .err()
        .is_some_and(|e| e.to_string().starts_with("duplicate key"))
}

/// The outcome with the text of a 400 denial blanked: that text quotes the offending value, and a body
/// rewritten through serde_json::Value spells numbers differently (`1e2` → `100.0`).
fn masked(outcome: &Outcome) -> Outcome {
    let mut o = outcome.clone();
    if let Decision::BadRequest { message } = &mut o.decision {
        message.clear();
    }
    o
}

/// Key order does not matter (the envelope decoder types the object in the same pass only when `kind`
/// and `operation` come first, and falls back otherwise): the review rewritten with `object` last and
/// with `object` first give the same outcome, and the same as the body as sent (unless that has
/// duplicate keys, which a rewrite cannot keep).
fn check_key_order(
    endpoint: Endpoint,
    body: &[u8],
    body_value: &Value,
    outcome: &Outcome,
    cfg: &Config,
) {
    let (Some(last), Some(first)) = (
        with_object(body_value, false),
        with_object(body_value, true),
    ) else {
        return;
    };
    let review_of = |text: &str| {
        admission::review(endpoint, text.as_bytes(), cfg)
            .unwrap_or_else(|e| panic!("a rewritten review is rejected: {e}\nrewritten: {text}"))
    };
    let (with_last, with_first) = (review_of(&last), review_of(&first));
    assert_eq!(
        with_last, with_first,
        "key order changed the answer\nobject last: {last}\nobject first: {first}"
    );
    if !has_duplicate_keys(body) {
        assert_eq!(
            masked(&with_last),
            masked(outcome),
            "the body as sent and rewritten with object last are answered differently\nbody: {}\nrewritten: {last}",
            show(body)
        );
    }
}

/// Runs `mesh-admission review`'s per-object path (mutation, then validation of the result) and checks
/// that its patch applied and that a second pass over its output changes nothing.
pub fn check_cli_review(object: &Value, namespace: &str, cfg: &Config) {
    let first = mesh_admission::review::review_object(object, namespace, cfg, "fuzz-uid");
    if let Some(denial) = &first.denial {
        assert!(
            !denial.contains("internal error"),
            "review_object: {denial}\nobject: {object}"
        );
    }
    if first.patch.is_empty() {
        assert_eq!(&first.mutated, object, "no patch but the object changed");
        return;
    }
    let mut replayed = object.clone();
    json_patch::patch(&mut replayed, &first.patch).expect("review_object's patch applies");
    assert_eq!(replayed, first.mutated, "patch and mutated object disagree");
    let second = mesh_admission::review::review_object(&first.mutated, namespace, cfg, "fuzz-uid");
    assert!(
        second.patch.is_empty(),
        "review_object not idempotent\nobject: {object}\nmutated: {}\nsecond patch: {}",
        first.mutated,
        serde_json::to_string(&second.patch).unwrap_or_default()
    );
}

/// An AdmissionReview around `object_json` (inserted verbatim, so it must be JSON), as kube-apiserver
/// sends it.
#[allow(clippy::too_many_arguments)]
pub fn envelope(
    group: &str,
    version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    operation: &str,
    dry_run: bool,
    object_json: &str,
) -> String {
    let resource = format!("{}s", kind.to_lowercase());
    let request = serde_json::json!({
        "uid": "0f6e2a4c-fuzz-4c1f-9d55-2a2f0e6a9b01",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "namespace": namespace,
        "name": name,
        "operation": operation,
        "userInfo": {"username": "fuzz"},
        "dryRun": dry_run,
        "object": "@OBJECT@",
    });
    let text = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    })
    .to_string();
    text.replacen("\"@OBJECT@\"", object_json, 1)
}

/// 1-65535, ASCII digits, no leading zero: the targets' own oracle, written apart from the library's
/// parser so that the two can disagree.
pub fn port_ok(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) || text.len() > 5 {
        return None;
    }
    let n: u32 = text.parse().ok()?;
    (1..=65535).contains(&n).then_some(n as u16)
}
