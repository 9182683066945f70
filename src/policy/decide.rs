//! The decision for one admission request: which rules apply, and what their result means for the
//! apiserver. `admission` only decodes the request into a [`Request`] and encodes the [`Decision`].

use kube::core::admission::Operation;

use super::finding::{Finding, denial_message};
use super::kinds::{self, Mutator};
use super::object::{self, DecodeError, Namespace, Pod};
use super::{Mutation, namespace, pod, validate};
use crate::config::Config;

/// Which webhook a review was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }

    /// The view to decode for a request to this endpoint, if any: the mutation rules of the kind
    /// for this operation (validation reads its objects from the raw JSON).
    pub fn view(self, group: &str, kind: &str, operation: &Operation) -> Option<Mutator> {
        match self {
            Endpoint::Mutate => kinds::find(group, kind)?.mutator(operation),
            Endpoint::Validate => None,
        }
    }
}

/// What the rules are told about a request.
#[derive(Debug)]
pub struct Request<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub operation: &'a Operation,
    pub sub_resource: Option<&'a str>,
    /// The request's namespace; empty for cluster-scoped objects (and some pods, see `decide`).
    pub namespace: &'a str,
    pub name: Option<&'a str>,
}

/// The request's object, decoded into its view when the envelope could, else raw JSON.
pub enum Object<'a> {
    /// Absent or `null` (DELETE carries none).
    Absent,
    Raw(&'a str),
    Pod(Pod<'a>),
    Namespace(Namespace<'a>),
}

/// The decision for one review.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allowed {
        patch: Vec<json_patch::PatchOperation>,
        warnings: Vec<String>,
    },
    /// Refused by the rules (HTTP 422 `Invalid` in the reply's status).
    Denied {
        message: String,
        warnings: Vec<String>,
    },
    /// The object could not be read as the kind it claims (HTTP 400 `BadRequest`).
    BadRequest { message: String },
}

impl Decision {
    fn unchanged() -> Self {
        Decision::Allowed {
            patch: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The denial message of a refused object, whatever the reason.
    pub fn denial(&self) -> Option<&str> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Denied { message, .. } | Decision::BadRequest { message } => Some(message),
        }
    }
}

/// Decides one request.
pub fn decide(
    endpoint: Endpoint,
    request: &Request<'_>,
    object: Object<'_>,
    cfg: &Config,
) -> Decision {
    let writes = matches!(request.operation, Operation::Create | Operation::Update);
    // DELETE and CONNECT carry no object to change; subresources (status, binding…) are not ours.
    if !writes || request.sub_resource.is_some() {
        return Decision::unchanged();
    }
    let result = match (object, endpoint) {
        (Object::Absent, _) => return Decision::unchanged(),
        (Object::Pod(p), _) => mutate_pod(&p, request, cfg),
        (Object::Namespace(ns), _) => Ok(mutate_namespace(&ns, request, cfg)),
        (Object::Raw(raw), Endpoint::Mutate) => mutate_raw(request, raw, cfg),
        (Object::Raw(raw), Endpoint::Validate) => {
            return match validate::validate(request.group, request.kind, raw, cfg) {
                Ok(findings) => verdict(findings),
                Err(e) => bad_request(request.kind, &e),
            };
        }
    };
    match result {
        Ok(m) => Decision::Allowed {
            patch: m.patch,
            warnings: m.warnings,
        },
        Err(e) => bad_request(request.kind, &e),
    }
}

/// Mutation of an object the envelope kept raw (its kind came after it, or its view did not fit).
fn mutate_raw(request: &Request<'_>, object: &str, cfg: &Config) -> Result<Mutation, DecodeError> {
    match Endpoint::Mutate.view(request.group, request.kind, request.operation) {
        Some(Mutator::Namespace) => Ok(mutate_namespace(&object::decode(object)?, request, cfg)),
        Some(Mutator::Pod) => mutate_pod(&object::decode(object)?, request, cfg),
        None => Ok(Mutation::default()),
    }
}

fn mutate_namespace(ns: &Namespace<'_>, request: &Request<'_>, cfg: &Config) -> Mutation {
    let name = ns
        .metadata
        .as_ref()
        .and_then(|m| m.name.as_deref())
        .or(request.name)
        .unwrap_or("");
    namespace::mutate(ns, name, cfg)
}

fn mutate_pod(p: &Pod<'_>, request: &Request<'_>, cfg: &Config) -> Result<Mutation, DecodeError> {
    // Pods created by controllers carry the namespace only in the request; others only in the object.
    let ns = if request.namespace.is_empty() {
        p.metadata
            .as_ref()
            .and_then(|m| m.namespace.as_deref())
            .unwrap_or("")
    } else {
        request.namespace
    };
    pod::mutate(p, ns, cfg)
}

/// Turns findings into the decision: every error in one message, warnings alongside.
pub fn verdict(findings: Vec<Finding>) -> Decision {
    let warnings = findings
        .iter()
        .filter(|f| !f.is_error())
        .map(Finding::to_warning)
        .collect();
    match denial_message(&findings) {
        None => Decision::Allowed {
            patch: Vec::new(),
            warnings,
        },
        Some(message) => Decision::Denied { message, warnings },
    }
}

fn bad_request(kind: &str, error: &DecodeError) -> Decision {
    Decision::BadRequest {
        message: format!("cannot decode {kind}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::finding::Severity;

    fn request<'a>(kind: &'a str, operation: &'a Operation) -> Request<'a> {
        Request {
            group: "",
            kind,
            operation,
            sub_resource: None,
            namespace: "apps",
            name: Some("x"),
        }
    }

    #[test]
    fn deletes_connects_subresources_and_pod_updates_are_left_alone() {
        let cfg = Config::default();
        let pod = r#"{"metadata":{"name":"x"}}"#;
        for (kind, op) in [
            ("Pod", Operation::Delete),
            ("Pod", Operation::Connect),
            ("Pod", Operation::Update),
            ("Namespace", Operation::Delete),
        ] {
            let decision = decide(
                Endpoint::Mutate,
                &request(kind, &op),
                Object::Raw(pod),
                &cfg,
            );
            assert_eq!(decision, Decision::unchanged(), "{kind} {op:?}");
        }
        let mut status = request("Pod", &Operation::Create);
        status.sub_resource = Some("status");
        let decision = decide(Endpoint::Mutate, &status, Object::Raw(pod), &cfg);
        assert_eq!(decision, Decision::unchanged());
        let create = request("Pod", &Operation::Create);
        let decision = decide(Endpoint::Mutate, &create, Object::Raw(pod), &cfg);
        assert!(matches!(decision, Decision::Allowed { patch, .. } if !patch.is_empty()));
    }

    #[test]
    fn an_object_that_does_not_fit_its_kind_is_a_bad_request() {
        let create = Operation::Create;
        let decision = decide(
            Endpoint::Validate,
            &request("Pod", &create),
            Object::Raw(r#"{"metadata":[]}"#),
            &Config::default(),
        );
        let Decision::BadRequest { message } = decision else {
            panic!("{decision:?}")
        };
        assert!(
            message.starts_with("cannot decode Pod: metadata: invalid type: sequence"),
            "{message}"
        );
    }

    #[test]
    fn findings_become_one_denial_listing_every_error() {
        let finding = |severity, field: &str| match severity {
            Severity::Error => Finding::error(field, "bad"),
            Severity::Warning => Finding::warning(field, "bad"),
        };
        let decision = verdict(vec![
            finding(Severity::Error, "a"),
            finding(Severity::Warning, "w"),
            finding(Severity::Error, "b"),
        ]);
        assert_eq!(
            decision,
            Decision::Denied {
                message: "a: bad; b: bad".into(),
                warnings: vec!["w: bad".into()],
            }
        );
        assert_eq!(
            verdict(vec![finding(Severity::Warning, "w")]),
            Decision::Allowed {
                patch: vec![],
                warnings: vec!["w: bad".into()]
            }
        );
    }
}
