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

/// The fenced code blocks of a Markdown text, such as the seeds (`...` lines, which elide the rest
/// of a list, dropped).
pub fn code_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(lines) => blocks.push(lines.join("\n")),
                None => current = Some(Vec::new()),
            }
        } else if let Some(lines) = &mut current
            && line.trim() != "..."
        {
            lines.push(line);
        }
    }
    blocks
}
