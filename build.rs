//! Generates the gRPC code for the vendored CRI v1 API and ferrio's own admin API, and the
//! message types of the vendored NRI API.
//! protox compiles the .proto files in Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/runtime/v1/api.proto", "proto/ferrio/v1/admin.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        // AuthConfig carries secrets (`debug_redact` in the proto, which prost ignores):
        // its Debug impl is written by hand in src/cri/mod.rs and redacts them.
        .skip_debug(["runtime.v1.AuthConfig"])
        .compile_fds(fds)?;
    // NRI's messages (its services are ttrpc, spoken by src/nri/ttrpc.rs: no stubs).
    let nri = "proto/nri/pkg/api/api.proto";
    println!("cargo:rerun-if-changed={nri}");
    let fds = protox::compile([nri], ["proto/nri"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(fds)?;
    Ok(())
}
