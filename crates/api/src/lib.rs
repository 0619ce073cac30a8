//! The runlens.v1 wire contract.
//!
//! [`pb`] holds the code generated from `proto/runlens/v1/*.proto` (messages, the
//! `Runlens` client and server), and nothing else: this crate is linked into every agent
//! that uses the Rust client, so it depends on no sampling or storage code. Health
//! checking uses the standard `grpc.health.v1` service.

/// Generated protobuf messages and gRPC stubs for package `runlens.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("runlens.v1");
}

/// The encoded `FileDescriptorSet` of `proto/runlens/v1/*.proto`, with their comments:
/// what gRPC server reflection serves, so that tools describe every rpc without the files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runlens_descriptor.bin"));

/// The encoded `FileDescriptorSet` of the OTLP trace service (`proto/third_party`), which
/// the sidecar also serves: reflection describes it too.
pub const OTLP_TRACE_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/otlp_trace_descriptor.bin"));

/// The gRPC service name, as the health service reports it.
pub const SERVICE_NAME: &str = "runlens.v1.Runlens";
