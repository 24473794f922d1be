//! Compiles `proto/quotad/v1/*.proto` into Rust with no system `protoc`: protox parses the files in
//! pure Rust, and tonic-prost-build generates the messages and the tonic client/server stubs from the
//! resulting descriptor set, which is also written out for gRPC server reflection.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/quotad/v1/quota.proto", "proto/quotad/v1/admin.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let set_path = out.join("quotad_descriptor.bin");
    fs::write(&set_path, prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&set_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    Ok(())
}
