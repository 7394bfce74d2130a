// Compiles the .proto files with protox (pure Rust), so builds need no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/ironroot/admin/v1/admin.proto",
        "proto/ironroot/node/v1/node.proto",
        // The SPIFFE Workload API, verbatim upstream: it has no `package`
        // line, so it is generated as `_.rs`.
        "proto/spiffe/workload.proto",
        "proto/ironroot/agent/v1/agent.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small first buffers: a server holds one streaming response per agent (src/codec.rs).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
