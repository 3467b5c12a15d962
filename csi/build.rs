//! Compiles `proto/csi.proto` with protox (no system `protoc`) and generates tonic stubs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let descriptors = protox::compile(["proto/csi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Maps keep a deterministic order, like everything handed to `model`.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
