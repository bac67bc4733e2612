//! The runtime's source files import each other without a circle.
//!
//! A file depends on another when it names an item that file defines: every `crate::…`,
//! `super::…` and `self::…` path in `runtime/src` (outside comments and string literals, inside
//! `use` groups too) is resolved to the file of the deepest module it names, and a name that
//! module only re-exports (`pub use x::Y`) is followed to the file that defines it. A
//! re-export is a facade, not a dependency: `lib.rs` and a folder's `mod.rs` may re-export
//! their children's items without making those children depend on them. The test fails with
//! the circles it finds (strongly connected components of more than one file), so a reader can
//! follow every file's dependencies downward to the leaves.
//!
//! Test code (`#[cfg(test)] mod tests { … }` at the end of a file) is left out: a unit test
//! may use whatever it tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file of `runtime/src` and the module path it defines (`["store", "sled"]` for
/// `store/sled/mod.rs`; `[]` for `lib.rs`).
struct SourceFile {
    module: Vec<String>,
    text: String,
}

fn source_files(root: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read runtime/src") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under root");
                let mut module: Vec<String> = relative
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                    module.pop();
                }
                let text = std::fs::read_to_string(&path).expect("read source file");
                out.push(SourceFile { module, text });
            }
        }
    }
    out
}

/// The text without comments, string and char literals, and the trailing unit-test module.
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || bytes.get(i + 1) == Some(&b'\\') => {
                // A char literal ('x' or an escape); lifetimes ('a) are left alone.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every path that starts at `start` (just after a `crate`, `super` or `self` keyword and its
/// `::`), with `use` groups expanded: `a::{b, c::d}` gives `a::b` and `a::c::d`.
fn paths_at(code: &[u8], start: usize) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut i = start;
    loop {
        while code.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if code.get(i) == Some(&b'{') {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut item_start = i + 1;
            let mut j = i;
            while j < code.len() {
                match code[j] {
                    b'{' => depth += 1,
                    b'}' | b',' if depth == 1 => {
                        for tail in paths_at(code, item_start) {
                            let mut path = segments.clone();
                            path.extend(tail);
                            out.push(path);
                        }
                        item_start = j + 1;
                        if code[j] == b'}' {
                            break;
                        }
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            return out;
        }
        let ident_start = i;
        while code.get(i).copied().is_some_and(is_ident) {
            i += 1;
        }
        if i == ident_start {
            break;
        }
        segments.push(String::from_utf8_lossy(&code[ident_start..i]).into_owned());
        if code.get(i..i + 2) == Some(b"::") {
            i += 2;
        } else {
            break;
        }
    }
    vec![segments]
}

/// A path as written after a keyword (`crate`, `super`, `self`, or none: relative to the
/// file's own module), made absolute.
fn absolute(file: &SourceFile, keyword: &str, path: Vec<String>) -> Vec<String> {
    let mut out = match keyword {
        "crate::" => Vec::new(),
        "super::" => file.module[..file.module.len().saturating_sub(1)].to_vec(),
        _ => file.module.clone(),
    };
    let mut rest = path.into_iter().peekable();
    while rest.peek().is_some_and(|s| s == "super") {
        rest.next();
        out.pop();
    }
    out.extend(rest.filter(|s| s != "self"));
    out
}

/// What one file says: the absolute paths it refers to, and the names it re-exports (`pub use`,
/// `pub(crate) use`) with the absolute paths they stand for.
struct Said {
    references: Vec<Vec<String>>,
    reexports: Vec<(String, Vec<String>)>,
}

fn said(file: &SourceFile) -> Said {
    let mut code = code_only(&file.text);
    let mut reexports = Vec::new();
    // Re-exports first, cut out of the code so that they are not counted as dependencies.
    for opener in ["pub use ", "pub(crate) use ", "pub(super) use "] {
        while let Some(at) = code.find(opener) {
            let end = at + code[at..].find(';').expect("a use statement ends");
            let statement = code[at + opener.len()..end].trim().to_string();
            let (keyword, body) = ["crate::", "super::", "self::"]
                .iter()
                .find_map(|k| statement.strip_prefix(k).map(|rest| (*k, rest)))
                .unwrap_or(("", statement.as_str()));
            for path in paths_at(body.as_bytes(), 0) {
                if let Some(name) = path.last().cloned() {
                    reexports.push((name, absolute(file, keyword, path)));
                }
            }
            code.replace_range(at..=end, "");
        }
    }
    let bytes = code.as_bytes();
    let mut references = Vec::new();
    for keyword in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            if at > 0 && (is_ident(bytes[at - 1]) || bytes[at - 1] == b':') {
                continue;
            }
            for path in paths_at(bytes, at + keyword.len()) {
                references.push(absolute(file, keyword, path));
            }
        }
    }
    Said {
        references,
        reexports,
    }
}

/// Tarjan's strongly connected components of more than one node, plus self-loops.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, node: &'a str) {
        let n = s.index.len();
        s.index.insert(node, n);
        s.low.insert(node, n);
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.edges.get(node).into_iter().flatten() {
            if !s.index.contains_key(next.as_str()) {
                visit(s, next);
                let low = s.low[node].min(s.low[next.as_str()]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next.as_str()) {
                let low = s.low[node].min(s.index[next.as_str()]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                component.push(top.to_string());
                if top == node {
                    break;
                }
            }
            let self_loop = s.edges.get(node).is_some_and(|e| e.contains(node));
            if component.len() > 1 || self_loop {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn no_source_file_of_the_runtime_imports_itself_through_a_circle() {
    let root: PathBuf = [env!("CARGO_MANIFEST_DIR"), "src"].iter().collect();
    let files = source_files(&root);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let said: Vec<Said> = files.iter().map(said).collect();
    let mut reexported: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
    for (file, said) in files.iter().zip(&said) {
        for (name, target) in &said.reexports {
            reexported.insert((file.module.clone(), name.clone()), target.clone());
        }
    }
    // The file that defines what `path` names: the deepest module prefix with a file, and
    // through that module's re-exports if the next segment is one.
    let defining = |path: &[String]| -> Vec<String> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let depth = (0..=path.len())
                .rev()
                .find(|n| modules.contains(&path[..*n]))
                .unwrap_or(0);
            let module = path[..depth].to_vec();
            match path.get(depth) {
                Some(item) => match reexported.get(&(module.clone(), item.clone())) {
                    Some(target) => {
                        let mut next = target.clone();
                        next.extend_from_slice(&path[depth + 1..]);
                        path = next;
                    }
                    None => return module,
                },
                None => return module,
            }
        }
        panic!("re-exports of {path:?} go round in a loop");
    };
    let name = |module: &[String]| {
        if module.is_empty() {
            "lib".to_string()
        } else {
            module.join("::")
        }
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, said) in files.iter().zip(&said) {
        let targets = edges.entry(name(&file.module)).or_default();
        for path in &said.references {
            let target = defining(path);
            if target != file.module {
                targets.insert(name(&target));
            }
        }
    }
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "import circles among runtime/src files: {found:?}; edges: {edges:#?}"
    );
}
