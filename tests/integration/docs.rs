//! The README's quick start is a complete program that compiles as it is copied.

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
