//! The test crate of `teloxide-retention`, never published: it holds the integration tests
//! (`integration/`), the CLI's tests (`cli.rs`), the test kit's own test
//! (`testing_kit.rs`) and the examples that need more than the library (`bot`, `webhook`,
//! `broadcast`, `bench`, `bench_adaptor`, whose files are in the repository's `examples/`).
//!
//! They live here so that their dev-dependencies (a mock Bot API, teloxide's dialogue
//! storages, the Prometheus exporter, property testing, certificates) are never built for
//! the library's own `cargo run --example demo`. `scripts/test.sh` runs the whole
//! workspace; `cargo nextest run --workspace` does the same by hand.

/// The README's code blocks, run as this crate's doc tests (with the dependencies they
/// show); the README is the library's front page.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct Readme;
