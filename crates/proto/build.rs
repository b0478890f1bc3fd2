//! Compiles `proto/strata/v1/*.proto` with protox (no system protoc) into Rust types, client
//! and server stubs, and a file descriptor set for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "strata/v1/types.proto",
        "strata/v1/streams.proto",
        "strata/v1/subscriptions.proto",
        "strata/v1/persistent.proto",
        "strata/v1/server.proto",
        "strata/v1/users.proto",
        "strata/cluster/v1/raft.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("strata_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
