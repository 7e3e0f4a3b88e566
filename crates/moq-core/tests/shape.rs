//! The shape of the workspace's library code (docs/contributing.md, "Code shape"): no import
//! circle between module files, no library file over 600 lines and no library function over
//! 80 lines, outside tests. It reads the sources of every library crate (`crates/*/src`,
//! `kernels-cubecl/src`, `examples/src`), of the examples' binaries (`examples/src/bin`) and of
//! the benchmarks (`benches/benches`), and names each offender; a justified exception goes in
//! [`ALLOWED`] with its reason.
//!
//! A circle is read from the code's paths (`use crate::…`, `use super::…` and paths written
//! in expressions), not from doc links; a module's use of its parent or children is structure,
//! not a circle. Functions are found as rustfmt writes them: from the line of `fn` to the
//! first line at the same indentation that closes the brace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// Exceptions, each `(file, function or "" for the file, lines, reason)`. They are debt: an
/// entry must not grow past its length here, and the list only shrinks (a fixed entry must go).
#[rustfmt::skip]
const ALLOWED: &[(&str, &str, usize, &str)] = &[
    // Each is listed with its length when the test was written, so it cannot grow and no new
    // one can join it. The two GPU matmul kernels (issue 30 allows two kernel functions): each
    // is one `#[cube]` program whose launch takes every buffer and size as an argument (16 and
    // 13 of them, 18 and 15 lines of signature), and whose register tile, unrolled loops and
    // shared-memory staging are read together to see what stays in registers; cubecl would
    // inline helpers, but a helper would hide which values are comptime and which per unit.
    ("kernels-cubecl/src/matmul.rs", "gemv_kernel", 106, "one #[cube] GEMV program: 16 launch arguments, a register accumulator per column vector and its k-split"),
    ("kernels-cubecl/src/matmul.rs", "tiled_kernel", 133, "one #[cube] tiled program: a 64×64 tile staged in shared memory, 4×4 register outputs per unit"),
];

/// Import circles still to break (issue 30), each `(crate source root, its sorted modules)`.
#[rustfmt::skip]
const ALLOWED_CIRCLES: &[(&str, &str)] = &[];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The crate source roots whose modules may not import each other in a circle, relative to
/// the workspace: the libraries and the examples' binaries of more than one file (a
/// binary is a crate of its own, so `examples/src` stops at `bin`).
fn roots() -> Vec<String> {
    let mut roots: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| format!("crates/{}/src", e.unwrap().file_name().to_string_lossy()))
        .collect();
    roots.extend(["kernels-cubecl/src".into(), "examples/src".into()]);
    for entry in std::fs::read_dir(workspace().join("examples/src/bin")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            roots.push(format!(
                "examples/src/bin/{}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    roots.sort();
    roots
}

/// Every source tree whose files and functions have a length limit: the crates' roots, the
/// examples' single-file binaries among them, and the benchmarks.
fn length_roots() -> Vec<String> {
    let mut roots = roots();
    roots.retain(|r| !r.starts_with("examples/src/bin/"));
    roots.extend(["examples/src/bin".into(), "benches/benches".into()]);
    roots
}

/// Every `.rs` file under `root` (relative to the workspace); `examples/src` stops at `bin`,
/// whose binaries are crates of their own.
fn sources(root: &str) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{rel}/{name}");
            if entry.file_type().unwrap().is_dir() {
                if rel != "examples/src/bin" {
                    walk(&entry.path(), &rel, out);
                }
            } else if name.ends_with(".rs") {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace().join(root), root, &mut out);
    out.sort();
    out
}

/// The file's lines before its test module (`#[cfg(test)]` at the top level); none for a test
/// module in a file of its own (`tests.rs`, declared `#[cfg(test)] mod tests;`).
fn library_lines(file: &str) -> Vec<String> {
    if file.ends_with("/tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(workspace().join(file)).unwrap();
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .map(str::to_string)
        .collect()
}

/// `(name, lines)` of every function with a body in `lines`.
fn functions(lines: &[String]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(name) = fn_name(trimmed) else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        // A declaration without a body ends with `;` before any `{`.
        let body_start = lines[i..]
            .iter()
            .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'));
        let Some(start) = body_start.map(|d| i + d) else {
            continue;
        };
        if lines[start].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[start..].iter().position(|l| l.starts_with(&close)) {
            out.push((name, start + end - i + 1));
        }
    }
    out
}

/// The name of the function declared on this (trimmed) line, if it declares one.
fn fn_name(line: &str) -> Option<String> {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    rest = rest.strip_prefix("extern \"C\" ").unwrap_or(rest);
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn no_library_file_or_function_is_too_long() {
    let mut offenders = Vec::new();
    let mut seen = BTreeSet::new();
    for root in length_roots() {
        for file in sources(&root) {
            let lines = library_lines(&file);
            let mut check = |what: &str, len: usize, max: usize| {
                let allowed = ALLOWED.iter().find(|a| a.0 == file && a.1 == what);
                if let Some(a) = allowed {
                    seen.insert((a.0, a.1));
                }
                match allowed {
                    Some(a) if len <= a.2 => {}
                    Some(a) => offenders.push(format!(
                        "{file} {what}: {len} lines, grew past its allowed {} ({})",
                        a.2, a.3
                    )),
                    None if len > max => {
                        let what = if what.is_empty() { "(the file)" } else { what };
                        offenders.push(format!("{file} {what}: {len} lines, over {max}"));
                    }
                    None => {}
                }
            };
            check("", lines.len(), MAX_FILE_LINES);
            for (name, len) in functions(&lines) {
                check(&name, len, MAX_FN_LINES);
            }
        }
    }
    for a in ALLOWED {
        if !seen.contains(&(a.0, a.1)) {
            offenders.push(format!(
                "{} {}: allowed but not found: remove it from ALLOWED",
                a.0, a.1
            ));
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// The module path of `file` under `root` (`a/b.rs` and `a/b/mod.rs` are `a::b`).
fn module_of(root: &str, file: &str) -> Vec<String> {
    let rel = file[root.len() + 1..].trim_end_matches(".rs");
    let mut path: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

/// The crate-relative paths a file's code names: its `use` trees, expanded, and the
/// `crate::…`/`super::…` paths in its expressions. Comments (doc links among them) are not
/// code.
fn named_paths(lines: &[String], module: &[String]) -> Vec<Vec<String>> {
    let code: String = lines
        .iter()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + 4..];
        let end = tail.find(';').unwrap_or(tail.len());
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            let tree: String = tail[..end].chars().filter(|c| !c.is_whitespace()).collect();
            paths.extend(expand(&tree));
        }
        rest = &tail[end..];
    }
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") {
            paths.push(word.to_string());
        }
    }
    paths.iter().filter_map(|p| resolve(p, module)).collect()
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// A path named in `module` as a path from the crate root, when it starts at the crate.
fn resolve(path: &str, module: &[String]) -> Option<Vec<String>> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let mut base: Vec<String> = match segments.next()? {
        "crate" => Vec::new(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        "self" => module.to_vec(),
        _ => return None,
    };
    let mut segments = segments.peekable();
    while segments.peek() == Some(&"super") {
        segments.next();
        base.pop();
    }
    base.extend(segments.map(str::to_string));
    Some(base)
}

/// The circles (strongly connected components of two or more modules) of `edges`.
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    // Two modules are in one circle when each reaches the other.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<_, _> = edges.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut found = BTreeSet::new();
    for (m, r) in &reached {
        let mut circle: Vec<String> = r
            .iter()
            .filter(|n| reached[*n].contains(m))
            .map(|n| n.join("::"))
            .collect();
        circle.sort();
        circle.dedup();
        if circle.len() > 1 {
            found.insert(circle);
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_import_circle_between_module_files() {
    let mut offenders = Vec::new();
    for root in roots() {
        let files = sources(&root);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&root, f)).collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for file in &files {
            let module = module_of(&root, file);
            for path in named_paths(&library_lines(file), &module) {
                // The module file the path lands in: its longest prefix that is one.
                let Some(target) = (0..=path.len())
                    .rev()
                    .map(|k| path[..k].to_vec())
                    .find(|p| modules.contains(p))
                else {
                    continue;
                };
                let nested = target.starts_with(&module) || module.starts_with(&target);
                if !nested {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
            edges.entry(module).or_default();
        }
        let found: Vec<String> = circles(&edges).iter().map(|c| c.join(", ")).collect();
        for circle in &found {
            if !ALLOWED_CIRCLES.contains(&(root.as_str(), circle.as_str())) {
                offenders.push(format!("{root}: {circle} import each other"));
            }
        }
        for (_, circle) in ALLOWED_CIRCLES.iter().filter(|a| a.0 == root) {
            if !found.iter().any(|f| f == circle) {
                offenders.push(format!(
                    "{root}: {circle}: allowed but not found: remove it from ALLOWED_CIRCLES"
                ));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn the_readers_find_what_they_look_for() {
    let lines: Vec<String> = [
        "pub fn short() {",
        "    body();",
        "}",
        "impl A {",
        "    pub(crate) async fn long(",
        "        x: u32,",
        "    ) -> u32 {",
        "        x",
        "    }",
        "    fn declared(&self);",
        "}",
    ]
    .map(str::to_string)
    .to_vec();
    assert_eq!(
        functions(&lines),
        [("short".to_string(), 3), ("long".to_string(), 5)]
    );
    assert_eq!(
        expand("crate::{a::X,b::{c,d}}"),
        ["crate::a::X", "crate::b::c", "crate::b::d"]
    );
    let module = ["q".to_string(), "apply".to_string()];
    assert_eq!(
        resolve("super::grid::G", &module).unwrap(),
        ["q", "grid", "G"]
    );
    assert_eq!(resolve("crate::layout", &module).unwrap(), ["layout"]);
    assert_eq!(resolve("std::fmt", &module), None);
    let code = [
        "use crate::{pack::P, layout};",
        "// crate::doc::Link",
        "let x = super::y::f();",
    ]
    .map(str::to_string);
    let named = named_paths(&code, &module);
    assert!(named.contains(&vec!["pack".to_string(), "P".to_string()]));
    assert!(named.contains(&vec!["q".to_string(), "y".to_string(), "f".to_string()]));
    assert!(!named.iter().any(|p| p.first().is_some_and(|s| s == "doc")));
}
