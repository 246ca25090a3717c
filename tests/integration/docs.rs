//! The README against the code: the quick start and the testing section are the programs
//! that compile and run, no block carries hidden lines, and every test it names exists.

/// The code of the first fenced block of `lang` after `heading` in the README.
fn block_after(readme: &str, heading: &str, lang: &str) -> String {
    let section = &readme[readme.find(heading).expect(heading)..];
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).expect("a code block") + fence.len();
    let len = section[start..].find("\n```").expect("the block's end");
    section[start..start + len].to_owned()
}

#[test]
fn the_quick_start_is_the_example_that_compiles_verbatim() {
    let readme = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(crate::common::repo_root().join("examples/quick_start.rs"))
            .unwrap();
    // The example (built with every other target) is the README's block plus a header.
    let example: Vec<&str> = example.lines().skip_while(|l| l.starts_with("//!")).collect();
    let example = example.join("\n");
    let code = block_after(&readme, "## Quick start", "rust,no_run");
    assert_eq!(
        code.trim(),
        example.trim(),
        "README quick start and examples/quick_start.rs differ"
    );
    assert!(
        !code.lines().any(|l| l.trim_start().starts_with("# ")),
        "no lines rustdoc would hide from the rendered page"
    );

    let manifest = block_after(&readme, "## Quick start", "toml");
    let teloxide = manifest.lines().find(|l| l.starts_with("teloxide ")).expect("a teloxide line");
    assert!(teloxide.contains("default-features = false"), "native-tls stays out: {teloxide}");
    assert!(teloxide.contains("\"ctrlc_handler\""), "the quick start uses it: {teloxide}");
}

/// The README's "Testing your bot" shows `tests/testing_kit.rs` from its first `use` on.
#[test]
fn the_testing_section_is_the_kit_test_that_runs() {
    let readme = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let test =
        std::fs::read_to_string(crate::common::repo_root().join("tests/testing_kit.rs")).unwrap();
    let test = &test[test.find("use std::time::Duration;").unwrap()..];
    let code = block_after(&readme, "## Testing your bot", "rust,ignore");
    assert_eq!(code.trim(), test.trim(), "README and tests/testing_kit.rs differ");
    let body = code.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(body <= 45, "the example stays short: {body} lines");
}

/// No README block carries rustdoc's hidden `# ` lines, which crates.io shows verbatim.
#[test]
fn readme_code_blocks_have_no_hidden_lines() {
    let readme = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let mut in_rust = false;
    for (n, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_rust = !in_rust && trimmed.starts_with("```rust");
            continue;
        }
        if in_rust {
            assert!(
                !(trimmed.starts_with("# ") || trimmed == "#"),
                "README line {}: a hidden line: {line}",
                n + 1
            );
        }
    }
}

/// Every test the README names exists. A name is `module::test`, in backticks: the module
/// is a file of `tests/integration` that defines the test (`#[test]`, `#[tokio::test]`) or
/// an `every_store!` case of that name (`name::memory`, `name::redis`... may follow), or a
/// unit test (or a module of them) `module::tests::test` of the library's `src/module.rs`. In "Guarantees" each
/// such path must name a test; elsewhere, paths of other files (`sqlx::query`) are API.
#[test]
fn every_test_the_readme_names_exists() {
    let root = crate::common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // The prose only: a code block's backticks are no inline code.
    let mut in_block = false;
    let readme: String = readme
        .lines()
        .filter(|line| {
            let fence = line.trim_start().starts_with("```");
            in_block ^= fence;
            !in_block && !fence
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let start = readme.find("\n## Guarantees\n").expect("a Guarantees section");
    let end = readme[start + 1..].find("\n## ").map_or(readme.len(), |n| start + 1 + n);
    let mut named = 0;
    let mut missing = Vec::new();
    let mut offset = 0;
    for (i, span) in readme.split('`').enumerate() {
        let at = offset;
        offset += span.len() + 1;
        let segments: Vec<&str> = span.split("::").collect();
        let is_path = i % 2 == 1
            && segments.len() >= 2
            && segments.iter().all(|s| {
                !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !is_path {
            continue;
        }
        let in_guarantees = (start..end).contains(&at);
        let integration = root.join(format!("tests/integration/{}.rs", segments[0]));
        let unit = root.join(format!("src/{}.rs", segments[0]));
        let found = if integration.is_file() {
            defines_test(&std::fs::read_to_string(&integration).unwrap(), segments[1])
        } else if unit.is_file() && segments.len() == 3 && segments[1] == "tests" {
            // A unit test, or a module of them.
            let source = std::fs::read_to_string(&unit).unwrap();
            let name = segments[2];
            source.contains("mod tests {")
                && (defines_test(&source, name) || source.contains(&format!("mod {name} {{")))
        } else if in_guarantees {
            false
        } else {
            continue;
        };
        named += 1;
        if !found {
            missing.push(span);
        }
    }
    assert!(named >= 50, "the README names {named} tests: is the parser still right?");
    assert!(missing.is_empty(), "the README names tests that do not exist: {missing:?}");
}

/// Whether `source` defines a test `name`: a function with a test attribute, or a case of
/// `every_store!` (`async fn name(env)`: a parameter without a type).
fn defines_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(n, line)| {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("async fn ").or_else(|| line.strip_prefix("fn ")) else {
            return false;
        };
        let Some(params) = rest.strip_prefix(name).and_then(|r| r.strip_prefix('(')) else {
            return false;
        };
        let case = line.starts_with("async fn ")
            && params.split(')').next().is_some_and(|p| !p.is_empty() && !p.contains(':'));
        let attributes = lines[..n]
            .iter()
            .rev()
            .map(|l| l.trim_start())
            .take_while(|l| l.starts_with("#[") || l.starts_with("///") || l.starts_with("//"));
        case || attributes.filter(|l| l.starts_with("#[")).any(|l| l.contains("test"))
    })
}
