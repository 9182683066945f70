//! How objects are named across the model, `render`'s problems and the controller's Events.

use std::fmt;

use crate::policy::kinds::Kind;

/// An object: group (`""` for core), kind, namespace (`""` when cluster scoped) and name. Ordered,
/// so that every result is sorted the same whatever the input order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(group: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// An object of a kind of the kinds table.
    pub fn of(kind: &Kind, namespace: &str, name: &str) -> Self {
        ObjectRef::new(kind.group, kind.kind, namespace, name)
    }

    /// The Namespace `name`, which owns the objects shared by a namespace.
    pub fn namespace(name: &str) -> Self {
        ObjectRef::new("", "Namespace", "", name)
    }
}

/// `Kind namespace/name` (`Kind name` when cluster scoped), as kubectl names objects.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}
