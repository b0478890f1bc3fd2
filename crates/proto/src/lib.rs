//! Strata's `strata.v1` gRPC API, generated from `proto/` at build time.

/// Types and stubs of the `strata.v1` package.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.v1");
}

/// Node-to-node messages of a cluster (`strata.cluster.v1`).
pub mod cluster {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.cluster.v1");
}

/// The encoded file descriptor set of `strata.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strata_v1_descriptor.bin"));
