//! Who owns a generated object (DESIGN.md section 9): the label `app.kubernetes.io/managed-by:
//! mesh-admission` says it is ours, the annotation `mesh-admission/owner-ref` names the owner as
//! `GROUP/KIND/NAMESPACE/NAME` (`core` for the core group), and the label `mesh-admission/owner`
//! (16 hex digits of the SHA-256 of that text) finds an owner's objects. Written and read here only.

use super::labels::Labels;
use super::object::Metadata;
use super::reference::ObjectRef;

/// The label every generated object carries, with [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "mesh-admission";
/// The label that finds an owner's objects (for pruning).
pub const OWNER_LABEL: &str = "mesh-admission/owner";
/// The annotation that names the owner in full.
pub const OWNER_ANNOTATION: &str = "mesh-admission/owner-ref";

impl ObjectRef {
    /// `GROUP/KIND/NAMESPACE/NAME`, `core` for the core group: the owner annotation's value.
    pub fn owner_ref(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{group}/{}/{}/{}", self.kind, self.namespace, self.name)
    }

    /// The owner annotation's value read back.
    pub fn parse_owner_ref(text: &str) -> Option<ObjectRef> {
        let mut parts = text.splitn(4, '/');
        let (group, kind, namespace, name) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let group = if group == "core" { "" } else { group };
        Some(ObjectRef::new(group, kind, namespace, name))
    }

    /// The owner label's value: the first 16 hex digits of the SHA-256 of [`ObjectRef::owner_ref`].
    pub fn owner_label(&self) -> String {
        sha256_hex(&self.owner_ref(), 16)
    }
}

/// Whether an object carries our managed-by label: ours to change and to delete.
pub fn is_ours(meta: &Metadata) -> bool {
    meta.label(MANAGED_BY) == Some(MANAGED_BY_VALUE)
}

/// The owner label of one of our objects.
pub fn owner_label_of(meta: &Metadata) -> Option<&str> {
    meta.label(OWNER_LABEL)
}

/// The owner one of our objects names.
pub fn owner_of(meta: &Metadata) -> Option<ObjectRef> {
    meta.annotation(OWNER_ANNOTATION)
        .and_then(ObjectRef::parse_owner_ref)
}

/// The labels and annotations a generated object of `owner` carries.
pub fn marks(owner: &ObjectRef) -> (Labels, Labels) {
    let label = owner.owner_label();
    let labels = Labels::from([
        (MANAGED_BY, MANAGED_BY_VALUE),
        (OWNER_LABEL, label.as_str()),
    ]);
    (
        labels,
        Labels::from([(OWNER_ANNOTATION, owner.owner_ref().as_str())]),
    )
}

/// The first `digits` hex digits of the SHA-256 of `text`.
pub fn sha256_hex(text: &str, digits: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut hex: String = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    hex.truncate(digits);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_refs_read_back_and_marks_are_ours() {
        for owner in [
            ObjectRef::new("helm.toolkit.fluxcd.io", "HelmRelease", "apps", "web"),
            ObjectRef::namespace("apps"),
            ObjectRef::new("apps", "Deployment", "apps", "web"),
            ObjectRef::new("", "Pod", "apps", "web-0"),
        ] {
            assert_eq!(
                ObjectRef::parse_owner_ref(&owner.owner_ref()),
                Some(owner.clone())
            );
            let (labels, annotations) = marks(&owner);
            let meta = Metadata {
                labels,
                annotations,
                ..Metadata::default()
            };
            assert!(is_ours(&meta));
            assert_eq!(owner_of(&meta), Some(owner.clone()));
            assert_eq!(owner_label_of(&meta), Some(owner.owner_label().as_str()));
        }
        assert_eq!(ObjectRef::parse_owner_ref("nonsense"), None);
        assert!(!is_ours(&Metadata::default()));
    }
}
