// Compiles the .proto files with protox (pure Rust), so builds need no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/ironroot/admin/v1/admin.proto",
        "proto/ironroot/node/v1/node.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
