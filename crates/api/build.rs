//! Generates the runlens.v1 code from `proto/` with protox (pure Rust: no protoc needed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["runlens/v1/resources.proto", "runlens/v1/runlens.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    // The same descriptors, comments included, for the gRPC reflection service.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("runlens_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The OTLP trace service, served on the same port, for reflection only (its code comes
    // from the opentelemetry-proto crate).
    let third_party = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/third_party");
    let otlp = "opentelemetry/proto/collector/trace/v1/trace_service.proto";
    println!("cargo:rerun-if-changed={}", third_party.display());
    let otlp_fds = protox::compile([otlp], [&third_party])?;
    std::fs::write(
        out.join("otlp_trace_descriptor.bin"),
        prost::Message::encode_to_vec(&otlp_fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
