//! Compiles Istio's CA proto with protox (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The server trait is only for test fakes of istiod; production only calls the CA.
    let server = std::env::var_os("CARGO_FEATURE_CA_SERVER").is_some();
    let fds = protox::compile(["istio/ca.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(server)
        // envoy-types ships its own google.protobuf types; share them so the CA request's
        // metadata and xDS Node metadata are the same Rust type.
        .extern_path(
            ".google.protobuf.Struct",
            "::envoy_types::pb::google::protobuf::Struct",
        )
        .extern_path(
            ".google.protobuf.Value",
            "::envoy_types::pb::google::protobuf::Value",
        )
        .extern_path(
            ".google.protobuf.ListValue",
            "::envoy_types::pb::google::protobuf::ListValue",
        )
        .compile_fds(fds)?;
    Ok(())
}
