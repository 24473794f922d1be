//! Compiles `proto/quotad/v1/*.proto`, and Envoy's rate limit service from `proto/vendor/`, into Rust with
//! no system `protoc`: protox parses the files in pure Rust, and tonic-prost-build generates the messages
//! and the tonic client/server stubs from the resulting descriptor set, which is also written out whole for
//! gRPC server reflection.

use std::{env, fs, path::PathBuf};

/// Packages of the vendored closure that only options refer to: served by reflection, not generated.
const OPTIONS_ONLY: [&str; 4] = [
    "validate",
    "udpa.annotations",
    "xds.annotations.v3",
    "envoy.annotations",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "quotad/v1/quota.proto",
        "quotad/v1/admin.proto",
        "envoy/service/ratelimit/v3/rls.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile(files, ["proto", "proto/vendor"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let set_path = out.join("quotad_descriptor.bin");
    fs::write(&set_path, prost::Message::encode_to_vec(&descriptors))?;

    let mut generated = descriptors.clone();
    generated
        .file
        .retain(|f| !OPTIONS_ONLY.contains(&f.package()));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_protoc_run()
        .compile_fds(generated)?;
    Ok(())
}
