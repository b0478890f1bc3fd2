//! Compiles `proto/kurrentdb/*.proto` (the KurrentDB client protocol v1, written from its
//! published wire format, and the v2 multi-stream appends) with protox: server stubs only, no system `protoc` needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "kurrentdb/shared.proto",
        "kurrentdb/code.proto",
        "kurrentdb/status.proto",
        "kurrentdb/streams.proto",
        "kurrentdb/persistent.proto",
        "kurrentdb/gossip.proto",
        "kurrentdb/serverfeatures.proto",
        "kurrentdb/users.proto",
        "kurrentdb/v2/streams.proto",
        "kurrentdb/v2/errors.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
