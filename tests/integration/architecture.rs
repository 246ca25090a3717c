//! The module map holds: imports between the crate's modules point one way (no cycles), and
//! `Retention`'s methods live in the handle's own file (plus its entry point beside the
//! builder), not spread over the modules that do the work.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with the top-level module it belongs to (`store` for
/// `src/store/redis/client.rs`).
fn sources() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = crate::common::repo_root().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
            (first.trim_end_matches(".rs").to_owned(), path)
        })
        .collect()
}

/// The code of a file without comments (doc links name modules too) and without its
/// `#[cfg(test)]` tail (unit tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The crate modules a piece of code refers to: `crate::x` paths, including those inside
/// `use crate::{x, y::z}` groups.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first identifier of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = sources();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        if module == "lib" {
            continue;
        }
        let edges = graph.entry(module.clone()).or_default();
        for target in referenced(&code(path)) {
            // Root re-exports (`crate::Retention`) are names, not modules; only module
            // paths are edges.
            if modules.contains(&target) && &target != module {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one, as the path of modules around it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_scanner_sees_imports_and_cycles() {
    let refs = referenced(
        "use crate::clock::Clock;\nuse crate::{error::{Error, Result}, store, tracker::X};\n\
         let x = crate::humans::is_trackable(1);",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["clock", "error", "humans", "store", "tracker"]
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn imports_between_modules_have_no_cycles() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the scan found too few modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}\nall imports: {graph:#?}", cycle.join(" -> "));
    }
}

#[test]
fn retention_methods_live_in_the_handle_and_its_builder() {
    let mut files_with_impls = BTreeSet::new();
    for (_, path) in sources() {
        let code = code(&path);
        if code.lines().any(|l| l.trim_start().starts_with("impl Retention {")) {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            files_with_impls.insert(name);
        }
    }
    assert_eq!(
        files_with_impls.into_iter().collect::<Vec<_>>(),
        ["builder.rs", "retention.rs"],
        "inherent `impl Retention` blocks belong in retention.rs (and the entry point in \
         builder.rs); the work lives in the modules below it"
    );
}

/// Every Lua script's header lists exactly the keys it (with the helpers prepended to it in
/// `scripts.rs`) reads or writes: `-- KEYS: 1 seen, 2 lease, ...` against `KEYS[n]`.
#[test]
fn every_lua_header_lists_the_keys_its_script_uses() {
    let root = crate::common::repo_root().join("src/store/redis");
    // Scripts sent by their SHA1 (`script!`) and with their source (`source!`) alike.
    let registry =
        std::fs::read_to_string(root.join("scripts.rs")).unwrap().replace("source!(", "script!(");
    let used = |text: &str| -> BTreeSet<u32> {
        text.match_indices("KEYS[")
            .filter_map(|(at, _)| {
                let rest = &text[at + 5..];
                rest[..rest.find(']')?].parse().ok()
            })
            .collect()
    };
    let code_of = |text: &str| -> String {
        text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n")
    };
    let mut checked = 0;
    for entry in registry.split("script!(").skip(1) {
        let entry = &entry[..entry.find(')').unwrap()];
        let files: Vec<&str> = entry
            .split('"')
            .filter(|part| part.starts_with("lua/") && part.ends_with(".lua"))
            .collect();
        let main = files.last().expect("a script");
        let text = |file: &str| std::fs::read_to_string(root.join(file)).unwrap();
        // The helpers' functions, each counted only if the script calls it (directly or
        // through another helper it calls).
        let mut functions: Vec<(String, String)> = Vec::new();
        for helper in &files[..files.len() - 1] {
            let code = code_of(&text(helper));
            let starts: Vec<usize> =
                code.match_indices("local function ").map(|(i, _)| i).collect();
            for (k, &start) in starts.iter().enumerate() {
                let end = starts.get(k + 1).copied().unwrap_or(code.len());
                let body = &code[start..end];
                let name = body["local function ".len()..].split('(').next().unwrap().to_owned();
                functions.push((name, body.to_owned()));
            }
        }
        let mut reached = code_of(&text(main));
        let mut taken = BTreeSet::new();
        loop {
            let next = functions
                .iter()
                .find(|(name, _)| !taken.contains(name) && reached.contains(&format!("{name}(")));
            let Some((name, body)) = next else { break };
            taken.insert(name.clone());
            reached.push('\n');
            reached.push_str(body);
        }
        let actual = used(&reached);
        let header = text(main);
        let line = header
            .lines()
            .find(|l| l.starts_with("-- KEYS:"))
            .unwrap_or_else(|| panic!("{main} has no KEYS line"));
        let listed: BTreeSet<u32> = line["-- KEYS:".len()..]
            .split(',')
            .filter_map(|item| item.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(listed, actual, "{main}: its header says {line:?}");
        checked += 1;
    }
    assert!(checked >= 16, "every script of scripts.rs is checked ({checked})");
}

/// Nothing outside `src/store/redis/` reaches into the Redis code: the rest of the crate
/// talks to the store through the protocol of `store/mod.rs` (whose re-exports of the
/// public Redis types are the one exception).
#[test]
fn nothing_outside_the_redis_code_imports_it() {
    let src = crate::common::repo_root().join("src");
    for (_, path) in sources() {
        let relative = path.strip_prefix(&src).unwrap().to_str().unwrap().to_owned();
        if relative.starts_with("store/redis/") || relative == "store/mod.rs" {
            continue;
        }
        let code = code(&path);
        for pattern in ["store::redis", "super::redis"] {
            assert!(!code.contains(pattern), "{relative} imports the Redis code ({pattern})");
        }
    }
}

/// Files of a few hundred lines, each one concept: no file in `src/` passes 700 lines of
/// code (doc comments, comments, blank lines and unit tests are free).
#[test]
fn no_source_file_grows_past_700_lines_of_code() {
    let src = crate::common::repo_root().join("src");
    for (_, path) in sources() {
        let relative = path.strip_prefix(&src).unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
            .count();
        assert!(lines <= 700, "{relative} has {lines} lines of code (at most 700)");
    }
}

/// One door to the store: outside `store/`, no code holds the store itself (`DynBackend`,
/// `dyn Backend`, a `backend` field); every call goes through `store::Door`, which bounds
/// it by the store timeout (or the update's budget) and times it in the histogram. And one
/// way into the tracker: only `parts.rs` (which builds it) and the tracker itself name it;
/// every feature reaches it as `parts.tracker`.
#[test]
fn every_store_call_goes_through_the_door_and_the_tracker_through_the_parts() {
    let src = crate::common::repo_root().join("src");
    let mut doors = 0;
    for (module, path) in sources() {
        let relative = path.strip_prefix(&src).unwrap().to_str().unwrap().to_owned();
        let code = code(&path);
        if relative == "store/door.rs" {
            doors += 1;
            assert!(
                !code.contains("pub(crate) async fn bounded")
                    && !code.contains("pub async fn bounded"),
                "the bound is the door's own"
            );
        }
        if module == "store" {
            continue;
        }
        for pattern in ["DynBackend", "dyn Backend", ".backend", "fn bounded"] {
            assert!(
                !code.contains(pattern),
                "{relative} reaches the store past its door ({pattern})"
            );
        }
        if module != "tracker" && relative != "parts.rs" {
            assert!(!code.contains("Tracker"), "{relative} names the tracker; use parts.tracker");
        }
    }
    assert_eq!(doors, 1, "src/store/door.rs holds the door");
}
