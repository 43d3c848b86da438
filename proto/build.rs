//! Compiles the `.proto` files under `proto/` into Rust with prost and tonic. `protox` parses
//! them in-process, so no `protoc` binary is needed; it also supplies the well-known types
//! (`google/protobuf/wrappers.proto`, `any.proto`).

use std::path::Path;

/// The files that declare services or messages we use; their imports are found through the
/// include directory.
const ROOTS: &[&str] = &[
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/get_model_metadata.proto",
    "tensorflow_serving/apis/predict.proto",
    "kserve/inference.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = Path::new("proto");
    println!("cargo:rerun-if-changed={}", include.display());

    let descriptors = protox::compile(ROOTS, [include])?;

    // Type names let callers pack and unpack messages in `google.protobuf.Any` (the model
    // metadata response carries a `SignatureDefMap` that way), with the URL prefix the
    // reference implementation writes.
    let mut config = tonic_prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
