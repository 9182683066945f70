//! The fixtures of this checkout that several suites read.

use std::path::PathBuf;

use crate::process::checkout;

/// The golden cases of `render`: the folders of `tests/fixtures/render`, each with its
/// `input.yaml` (and a `config.yaml` where the case needs one), sorted.
pub fn render_cases() -> Vec<PathBuf> {
    let dir = checkout().join("tests/fixtures/render");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The value of `# KEY: value` in the comment block that opens a case file (`tests/fixtures/istio`).
pub fn header<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let prefix = format!("# {key}: ");
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::trim)
}
