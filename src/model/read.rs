//! The model from manifests (`render` and the other offline commands): each object of a kind of the
//! model, read as its type; what cannot be read is a [`ReadProblem`], and the rest of the input is
//! still read. The result depends on the set of inputs only, never on their order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{KindVisitor, Model, ObjectRef, ReadIssue, ReadProblem, Stored, with_type};
use crate::policy::kinds::{self, Kind};
use crate::policy::object::DecodeError;

/// The namespace of a namespaced object that names none, as kubectl assumes without a context.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Model {
    /// The model of `inputs` (objects of other kinds are ignored).
    pub fn from_manifests<'v>(inputs: impl IntoIterator<Item = &'v Value>) -> Model {
        let mut model = Model::default();
        let mut seen: BTreeMap<ObjectRef, (&'static Kind, &'v Value)> = BTreeMap::new();
        let mut duplicates = BTreeSet::new();
        for value in inputs {
            let (Some(api_version), Some(kind)) =
                (value["apiVersion"].as_str(), value["kind"].as_str())
            else {
                continue;
            };
            let group = api_version.split_once('/').map_or("", |(group, _)| group);
            let Some(kind) = kinds::find(group, kind).filter(|k| k.model.is_some()) else {
                continue;
            };
            let name = value["metadata"]["name"].as_str().unwrap_or("");
            let subject = ObjectRef::of(kind, namespace_of(kind, value), name);
            if name.is_empty() {
                let issue = ReadIssue::Unreadable("metadata.name: missing or empty".into());
                model.problems.push(ReadProblem {
                    subject,
                    kind,
                    issue,
                });
                continue;
            }
            match seen.get(&subject) {
                Some((_, earlier)) if *earlier != value => {
                    duplicates.insert(subject);
                }
                Some(_) => {}
                None => {
                    seen.insert(subject, (kind, value));
                }
            }
        }
        for (subject, (kind, value)) in seen {
            if duplicates.contains(&subject) {
                let issue = ReadIssue::Duplicate;
                model.problems.push(ReadProblem {
                    subject,
                    kind,
                    issue,
                });
                continue;
            }
            let reader = Reader {
                value,
                namespace: &subject.namespace,
                model: &mut model,
            };
            if let Some(Err(message)) = with_type(kind, reader) {
                let issue = ReadIssue::Unreadable(message);
                model.problems.push(ReadProblem {
                    subject,
                    kind,
                    issue,
                });
            }
        }
        model
    }
}

/// The namespace an object of `kind` is in: none when cluster-scoped, `default` when unnamed.
fn namespace_of<'v>(kind: &Kind, value: &'v Value) -> &'v str {
    if kind.is_cluster_scoped() {
        return "";
    }
    value["metadata"]["namespace"]
        .as_str()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Reads one manifest as the type its kind is held as, into the model.
struct Reader<'a> {
    value: &'a Value,
    namespace: &'a str,
    model: &'a mut Model,
}

impl KindVisitor for Reader<'_> {
    type Output = Result<(), String>;

    fn visit<T: Stored>(self, kind: &'static Kind) -> Result<(), String> {
        let mut object: T = read(self.value)?;
        object.trim();
        // Where kubectl would put it, so that the model names it as the cluster would.
        kube::Resource::meta_mut(&mut object).namespace =
            Some(self.namespace.to_owned()).filter(|n| !n.is_empty());
        self.model.add(kind, Arc::new(object));
        Ok(())
    }
}

/// Reads `value` as `T`, naming the field that does not fit.
fn read<'v, T: Deserialize<'v>>(value: &'v Value) -> Result<T, String> {
    // Tracking the path costs on every field; only a failed read needs it, so read again then.
    if let Ok(decoded) = T::deserialize(value) {
        return Ok(decoded);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        DecodeError {
            path: if path == "." { "(object)".into() } else { path },
            message: e.into_inner().to_string(),
        }
        .to_string()
    })
}
