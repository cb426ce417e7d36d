//! Generates the servers of `flowctl.v1.ProcessorService` and `flowctl.v1.ConsumerService`
//! these components serve, from a hand description of the two services (tonic-build's
//! `manual`), so that their event streams use the lean codecs of `src/wire.rs` instead of
//! decoding and encoding every `flowctl.v1.Event` whole. The routes, method names and messages
//! on the wire are flow-proto's (proto/flowctl/v1/*.proto); only the Rust types differ.

use tonic_build::manual::{Builder, Method, Service};

const PROST: &str = "tonic_prost::ProstCodec";

fn info_methods() -> [Method; 2] {
    [
        Method::builder()
            .name("get_info")
            .route_name("GetInfo")
            .input_type("crate::wire::Empty")
            .output_type("flowctl_proto::flowctl::v1::ComponentInfo")
            .codec_path(PROST)
            .build(),
        Method::builder()
            .name("health_check")
            .route_name("HealthCheck")
            .input_type("flowctl_proto::flowctl::v1::HealthCheckRequest")
            .output_type("flowctl_proto::flowctl::v1::HealthCheckResponse")
            .codec_path(PROST)
            .build(),
    ]
}

fn main() {
    let [info, health] = info_methods();
    let processor = Service::builder()
        .name("ProcessorService")
        .package("flowctl.v1")
        .method(info)
        .method(health)
        .method(
            Method::builder()
                .name("process")
                .route_name("Process")
                .input_type("crate::wire::LedgerEventIn")
                .output_type("crate::wire::Encoded")
                .codec_path("crate::wire::EncodedOutCodec")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    let [info, health] = info_methods();
    let consumer = Service::builder()
        .name("ConsumerService")
        .package("flowctl.v1")
        .method(info)
        .method(health)
        .method(
            Method::builder()
                .name("consume")
                .route_name("Consume")
                .input_type("crate::wire::EventIn")
                .output_type("flowctl_proto::flowctl::v1::ConsumeResponse")
                .codec_path("crate::wire::ProstInCodec")
                .client_streaming()
                .build(),
        )
        .build();
    Builder::new()
        .build_client(false)
        .compile(&[processor, consumer]);
}
