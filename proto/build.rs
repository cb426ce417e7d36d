//! Generates the prost/tonic code for `proto/` at build time. `protox` is a pure-Rust protobuf
//! compiler, so a fresh machine needs no `protoc`.

const PROTOS: &[&str] = &[
    "raw_ledger_service/raw_ledger_service.proto",
    "asset/asset.proto",
    "token_transfer/token_transfer_event.proto",
    "event_service/event_service.proto",
    "flowctl/control_plane.proto",
    // flowctl.v1 (flow-proto v0.1.3) and the payload of its Stellar ledger events.
    "flowctl/v1/common.proto",
    "flowctl/v1/control_plane.proto",
    "flowctl/v1/source.proto",
    "flowctl/v1/processor.proto",
    "flowctl/v1/consumer.proto",
    "stellar/v1/raw_ledger.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
