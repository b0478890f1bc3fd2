//! The Rust snippets of docs/clients.md compile against the current client API: tests/build.rs
//! wraps each in an async function taking a `Client`, and this file includes them (a snippet
//! that no longer compiles fails the build of this test).

include!(concat!(env!("OUT_DIR"), "/clients_snippets.rs"));

#[test]
fn every_snippet_of_the_client_guide_is_compiled() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/clients.md"),
    )
    .unwrap();
    let blocks = guide
        .lines()
        .filter(|l| l.trim_start().starts_with("```rust"))
        .count();
    assert!(blocks >= 10, "docs/clients.md lost its examples: {blocks}");
    assert_eq!(blocks, SNIPPETS, "build.rs and the guide disagree");
}
