//! The pure policy core: objects in, patches or verdicts out. No I/O anywhere below this module.

pub mod contrast;
pub mod decide;
pub mod finding;
pub mod helmrelease;
pub mod istio;
pub mod kinds;
pub mod namespace;
pub mod object;
pub mod patch;
pub mod plan;
pub mod pod;
pub mod podtemplate;
pub mod render;
pub mod spire;
pub mod syntax;
pub mod validate;

use json_patch::PatchOperation;

pub use decide::{Decision, Endpoint};

/// What a mutation rule decided for one object: the JSON Patch (empty when nothing changes) and
/// warnings for the requesting user.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mutation {
    pub patch: Vec<PatchOperation>,
    pub warnings: Vec<String>,
}

impl Mutation {
    pub fn is_unchanged(&self) -> bool {
        self.patch.is_empty()
    }
}

/// The most a warning may hold: the apiserver truncates or drops longer ones.
pub const MAX_WARNING_CHARS: usize = 120;

/// Shortens a warning to what kubectl will show, on one line.
pub fn warning(text: impl Into<String>) -> String {
    let mut text: String = text.into().replace(['\n', '\r'], " ");
    if text.chars().count() > MAX_WARNING_CHARS {
        text = text.chars().take(MAX_WARNING_CHARS - 1).collect();
        text.push('…');
    }
    text
}
