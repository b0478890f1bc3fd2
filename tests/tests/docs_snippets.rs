//! The Rust snippets of docs/clients.md compile against the current client API: tests/build.rs
//! wraps each in an async function taking a `Client`, and this file includes them.

include!(concat!(env!("OUT_DIR"), "/clients_snippets.rs"));

#[test]
fn the_client_guide_has_snippets_and_they_compile() {
    assert!(
        SNIPPETS >= 10,
        "docs/clients.md lost its examples: {SNIPPETS}"
    );
}
