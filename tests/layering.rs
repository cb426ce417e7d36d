//! The layering of `src/`: no two files import each other, directly or around a circle. Each
//! file is a module; an edge is a `crate::`, `super::` or `self::` path in its non-test code
//! that names another module (or an item of it). A module's own submodules (declared with
//! `mod`, used by plain name) are its parts, not imports, and are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `src/run/relay.rs` -> `["run", "relay"]`; `mod.rs`, `lib.rs` and `main.rs` name their folder.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code before its `#[cfg(test)]` module, without comment lines (a path in prose is no
/// import).
fn non_test(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path starting with `crate::`, `super::` or `self::` in `code`, with braces expanded
/// one level (`crate::a::{b, c::D}` gives `crate::a::b` and `crate::a::c::D`).
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < code.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| rest.starts_with(p));
        if !starts || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < code.len() && (is_ident(bytes[end]) || code[end..].starts_with("::")) {
            end += if code[end..].starts_with("::") { 2 } else { 1 };
        }
        let base = code[i..end].trim_end_matches("::").to_string();
        if code[end..].starts_with('{') {
            let close = code[end..].find('}').map_or(code.len(), |c| end + c);
            for item in code[end + 1..close].split(',') {
                let item = item.split(" as ").next().unwrap_or("").trim();
                let item = item.split("::{").next().unwrap_or("").trim();
                if item == "self" {
                    found.push(base.clone());
                } else if !item.is_empty() {
                    found.push(format!("{base}::{item}"));
                }
            }
            i = close;
        } else {
            found.push(base);
            i = end;
        }
    }
    found
}

/// The module a path from `module` refers to: its longest prefix that is a known module.
fn target(module: &[String], path: &str, modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match *segments.first()? {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    segments.remove(0);
    while segments.first() == Some(&"super") {
        base.pop();
        segments.remove(0);
    }
    (0..=segments.len()).rev().find_map(|n| {
        let mut candidate = base.clone();
        candidate.extend(segments[..n].iter().map(|s| s.to_string()));
        modules.contains(&candidate).then_some(candidate)
    })
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let name = |m: &[String]| {
        if m.is_empty() {
            "crate".to_string()
        } else {
            m.join("::")
        }
    };
    let mut edges = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let targets: BTreeSet<String> = paths(&non_test(&text))
            .iter()
            .filter_map(|p| target(&module, p, &modules))
            // A module and its own parts (parent or child) are one unit.
            .filter(|t| !t.starts_with(&module) && !module.starts_with(t))
            .map(|t| name(&t))
            .collect();
        edges.insert(name(&module), targets);
    }
    edges
}

/// A circle of imports through `start`, if any (depth-first over `edges`).
fn circle_through(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_string());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_two_files_of_src_import_each_other_directly_or_in_a_circle() {
    let edges = graph();
    assert!(edges.len() > 40, "too few modules found: {edges:?}");
    // The check itself sees imports: the lifecycle uses the engine.
    assert!(edges["run"].contains("engine"), "{:?}", edges["run"]);
    let circles: Vec<String> = edges
        .keys()
        .filter_map(|m| circle_through(m, &edges))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_path_reader_expands_braces_and_skips_other_paths() {
    let code = "use super::{a, b::C as D, self};\nuse crate::x::Y;\nlet z = other::crate::q;";
    assert_eq!(
        paths(code),
        ["super::a", "super::b::C", "super", "crate::x::Y"]
    );
}
