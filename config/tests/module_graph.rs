//! The configuration's source files import each other without a circle, as the layers in the
//! crate docs say.
//!
//! A file depends on another when its code (outside comments and the trailing unit-test module)
//! names `crate::x` or `super::x`: `x` is a module (its file), or an item that `lib.rs`
//! re-exports from a module (that module's file), or an item `lib.rs` itself defines (`lib.rs`).
//! `lib.rs` is the crate's face: it may use every module, and no module may use it, so that
//! every file's dependencies can be followed downward to the leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each source file's code: the module name (`"lib"` for `lib.rs`) and its text without
/// comment lines and without the `#[cfg(test)] mod tests` at its end.
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&root).expect("read config/src") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("read source file");
        let text = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let code: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect();
        out.insert(name, code.join("\n"));
    }
    out
}

/// The first name of each path that starts with `prefix` (`crate::`): `crate::keys::find` gives
/// `keys`, `use crate::{a::B, c}` gives `a` and `c`.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.push(ident(rest));
            continue;
        };
        // The first name of each element of the group, nested groups skipped.
        let (mut depth, mut element_start) = (0_usize, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => element_start = true,
                c if element_start && (c.is_alphanumeric() || c == '_') => {
                    names.push(ident(&group[i..]));
                    element_start = false;
                }
                _ => {}
            }
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

/// Which module each name re-exported by `lib.rs` comes from (`Config` → `config`).
fn re_exports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use crate::") else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            if !item.is_empty() {
                out.insert(item.to_owned(), module.to_owned());
            }
        }
    }
    out
}

#[test]
fn no_module_imports_another_through_a_circle() {
    let sources = sources();
    let re_exported = re_exports(&sources["lib"]);
    let mut uses: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &sources {
        let mut names = names_after(code, "crate::");
        if module != "lib" {
            names.extend(names_after(code, "super::"));
        }
        let targets = names.into_iter().map(|name| {
            if sources.contains_key(&name) {
                name
            } else if let Some(owner) = re_exported.get(&name) {
                owner.clone()
            } else {
                // An item of lib.rs itself (or a name the compiler would refuse).
                "lib".to_owned()
            }
        });
        let targets = targets.filter(|target| target != module).collect();
        uses.insert(module, targets);
    }

    let users_of_lib: Vec<&&str> = uses
        .iter()
        .filter(|(module, targets)| **module != "lib" && targets.contains("lib"))
        .map(|(module, _)| module)
        .collect();
    assert!(
        users_of_lib.is_empty(),
        "lib.rs is the face, used by no module: {users_of_lib:?} use it"
    );

    // Peel off the modules that use nothing left; whatever remains lies on a circle.
    let mut remaining = uses.clone();
    while let Some(leaf) = remaining
        .iter()
        .find(|(_, targets)| targets.iter().all(|t| !remaining.contains_key(t.as_str())))
        .map(|(module, _)| *module)
    {
        remaining.remove(leaf);
    }
    assert!(
        remaining.is_empty(),
        "these modules import each other in a circle: {remaining:?}"
    );
    assert!(
        uses["lib"].contains("config") && uses["origin"].is_empty(),
        "the graph was read: {uses:?}"
    );
}
