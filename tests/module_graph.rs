//! How the source files depend on each other: no two files import each other, directly or round a
//! loop. A file imports another when it names an item of it by path (`use crate::a::b`, `use
//! super::c`, or a path such as `crate::a::b::f()` in its code); declaring a child module (`mod c;`)
//! is not an import. Each path is resolved to the deepest module file it reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// Module path (`["policy", "render"]`) of every `.rs` file under `src/`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            // `main.rs` is the binary's root, not the library's.
            if relative.as_os_str() != "main" {
                files.insert(module, path);
            }
        }
    }
    files
}

/// Every path the production code (what comes before `#[cfg(test)]`) names: `use` trees
/// expanded, and inline `crate::`/`super::`/`self::` paths.
fn paths(code: &str) -> Vec<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or_default();
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let uses = Regex::new(r"(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);").unwrap();
    let renamed = Regex::new(r"\s+as\s+[A-Za-z_0-9]+").unwrap();
    let mut found = Vec::new();
    for capture in uses.captures_iter(&code) {
        let tree = renamed.replace_all(&capture[1], "");
        expand("", &tree.split_whitespace().collect::<String>(), &mut found);
    }
    let rest = uses.replace_all(&code, "");
    let inline = Regex::new(r"\b(?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
    found.extend(inline.find_iter(&rest).map(|m| m.as_str().to_owned()));
    found
}

/// `a::{b, c::{d}}` as `a::b`, `a::c::d`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&head, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&head, &inner[start..], out);
    }
}

/// The module file a path from `module` reaches (the deepest module on it), if any.
fn target(
    module: &[String],
    path: &str,
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    // A file's own module is where `self` starts, and `super` is its parent (a `mod.rs` file's
    // module is its directory's).
    let mut base: Vec<String> = module.to_vec();
    let mut rest = &segments[..];
    match rest.first() {
        Some(&"crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some(&"self") => rest = &rest[1..],
        Some(&"super") => {
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut reached = None;
    let mut current = base.clone();
    if files.contains_key(&current) {
        reached = Some(current.clone());
    }
    for segment in rest {
        current.push((*segment).to_owned());
        if files.contains_key(&current) {
            reached = Some(current.clone());
        } else {
            break;
        }
    }
    reached
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&src);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &files {
        let code = std::fs::read_to_string(file).unwrap();
        for path in paths(&code) {
            if let Some(to) = target(module, &path, &files)
                && &to != module
            {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A loop through `from`, if there is one.
fn loop_through(
    from: &Vec<String>,
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Option<Vec<Vec<String>>> {
    let mut stack = vec![(from.clone(), vec![from.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((at, trail)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == from {
                return Some(trail);
            }
            if seen.insert(next.clone()) {
                let mut longer = trail.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_file_imports_another_that_imports_it_back() {
    let edges = graph();
    assert!(edges.len() > 30, "too few files read: {}", edges.len());
    let loops: Vec<String> = edges
        .keys()
        .filter_map(|module| loop_through(module, &edges))
        .map(|trail| {
            let names: Vec<String> = trail
                .iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect();
            names.join(" -> ")
        })
        .collect();
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn the_checker_finds_imports_in_use_trees_and_code() {
    let code = "use crate::a::{b, c::{d, e as f}};\nfn g() { super::h::i(); } // crate::x::y\n\
        #[cfg(test)]\nmod tests { use super::*; }";
    let found = paths(code);
    assert_eq!(
        found,
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "super::h::i"
        ]
    );
}
