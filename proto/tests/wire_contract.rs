//! The wire contract of docs/contract.md §1–§3 and of `flowctl.v1`/`stellar.v1` (flow-proto
//! v0.1.3), checked byte by byte.
//!
//! Every message here is written out by hand with the field numbers and wire types the contract
//! states, independently of the `.proto` files, then decoded with the generated types (and, where
//! the encoding is canonical, re-encoded and compared). A renumbered field, a changed type or a
//! oneof case moved to another number makes these tests fail. The gRPC method paths (package,
//! service and method names) are checked the same way, over a real HTTP/2 connection.

use std::collections::HashMap;

use prost::Message;

use flowctl_proto::asset::{self, asset::AssetType};
use flowctl_proto::flowctl::{
    RegistrationAck, ServiceHeartbeat, ServiceInfo, ServiceList, ServiceStatus, ServiceType,
};
use flowctl_proto::raw_ledger_service::{RawLedger, StreamLedgersRequest};
use flowctl_proto::token_transfer::{
    muxed_info::Content, token_transfer_event::Event, MuxedInfo, TokenTransferEvent,
};
use flowctl_proto::token_transfer_service::GetEventsRequest;

// --- A minimal protobuf writer, independent of prost. ---

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn key(field: u64, wire_type: u64) -> Vec<u8> {
    varint(field << 3 | wire_type)
}

/// Field `field` as a varint (uint32, uint64, int32 >= 0, bool, enum).
fn uint(field: u64, value: u64) -> Vec<u8> {
    [key(field, VARINT), varint(value)].concat()
}

/// Field `field` as a double.
fn double(field: u64, value: f64) -> Vec<u8> {
    [key(field, FIXED64), value.to_le_bytes().to_vec()].concat()
}

/// Field `field` as length-delimited bytes (string, bytes, embedded message, map entry).
fn bytes(field: u64, value: &[u8]) -> Vec<u8> {
    [key(field, LEN), varint(value.len() as u64), value.to_vec()].concat()
}

fn string(field: u64, value: &str) -> Vec<u8> {
    bytes(field, value.as_bytes())
}

fn message(field: u64, parts: &[Vec<u8>]) -> Vec<u8> {
    bytes(field, &parts.concat())
}

// --- §1 raw ledgers ---

#[test]
fn raw_ledger_has_sequence_1_and_xdr_2() {
    let wire = [uint(1, 300), bytes(2, &[0xde, 0xad, 0xbe, 0xef])].concat();
    // Spelled out once fully by hand, so the writer above is checked too.
    assert_eq!(wire, [0x08, 0xac, 0x02, 0x12, 0x04, 0xde, 0xad, 0xbe, 0xef]);
    let ledger = RawLedger::decode(wire.as_slice()).unwrap();
    assert_eq!(ledger.sequence, 300);
    assert_eq!(ledger.ledger_close_meta_xdr, [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(ledger.encode_to_vec(), wire);

    let request = StreamLedgersRequest::decode(uint(1, 59_000_001).as_slice()).unwrap();
    assert_eq!(request.start_ledger, 59_000_001);
}

// --- §2 token transfer events ---

fn issued(code: &str, issuer: &str) -> Vec<u8> {
    // Asset { oneof asset_type { IssuedAsset issued_asset = 2 } }, IssuedAsset { code 1, issuer 2 }
    message(3, &[message(2, &[string(1, code), string(2, issuer)])])
}

const G_FROM: &str = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7";
const G_TO: &str = "GBRPYHIL2CI3FNQ4BXLFMNDLFJUNPU2HY3ZMFSHONUCEOASW7QC7OX2H";
const C_SAC: &str = "CCW67TSZV3SSS2HXMBQ5JFGCKJNXKZM7UQUWUZPUTHXSTZLEO7SJMI75";

#[test]
fn transfer_event_with_every_meta_field() {
    let tx_hash = "3389e9f0f1a65f19736cacf544c2e825313e8447f569233bb8db39aa607c8889";
    let meta = message(
        1,
        &[
            uint(1, 57_000_123),
            // google.protobuf.Timestamp { int64 seconds = 1; int32 nanos = 2; }
            message(2, &[uint(1, 1_745_000_000), uint(2, 500)]),
            string(3, tx_hash),
            uint(4, 2),
            uint(5, 3),
            string(6, C_SAC),
            // MuxedInfo { oneof content { string text = 1; uint64 id = 2; bytes hash = 3; } }
            message(7, &[uint(2, 1_234_567_890_123)]),
        ],
    );
    // Transfer { from 1, to 2, asset 3, amount 4 } in oneof case 2.
    let transfer = message(
        2,
        &[
            string(1, G_FROM),
            string(2, G_TO),
            [issued("USDC", G_TO)].concat(),
            string(4, "10000000"),
        ],
    );
    let wire = [meta, transfer].concat();

    let event = TokenTransferEvent::decode(wire.as_slice()).unwrap();
    let meta = event.meta.as_ref().unwrap();
    assert_eq!(meta.ledger_sequence, 57_000_123);
    let closed_at = meta.closed_at.unwrap();
    assert_eq!((closed_at.seconds, closed_at.nanos), (1_745_000_000, 500));
    assert_eq!(meta.tx_hash, tx_hash);
    assert_eq!(meta.transaction_index, 2);
    assert_eq!(meta.operation_index, Some(3));
    assert_eq!(meta.contract_address, C_SAC);
    assert_eq!(
        meta.to_muxed_info,
        Some(MuxedInfo {
            content: Some(Content::Id(1_234_567_890_123))
        })
    );
    let Some(Event::Transfer(transfer)) = &event.event else {
        panic!("oneof case 2 must be transfer: {:?}", event.event);
    };
    assert_eq!(transfer.from, G_FROM);
    assert_eq!(transfer.to, G_TO);
    assert_eq!(transfer.amount, "10000000");
    let Some(AssetType::IssuedAsset(issued_asset)) =
        transfer.asset.as_ref().and_then(|a| a.asset_type.clone())
    else {
        panic!("asset case 2 must be issued_asset: {:?}", transfer.asset);
    };
    assert_eq!(issued_asset.asset_code, "USDC");
    assert_eq!(issued_asset.issuer, G_TO);
    assert_eq!(event.encode_to_vec(), wire);
}

#[test]
fn fee_event_has_no_operation_index_and_native_asset() {
    let meta = message(1, &[uint(1, 5), string(3, "00ff"), uint(4, 1)]);
    // Fee { from 1, asset 2 = Asset { bool native = 1 }, amount 3 } in oneof case 6.
    let fee = message(
        6,
        &[
            string(1, G_FROM),
            message(2, &[uint(1, 1)]),
            string(3, "-100"),
        ],
    );
    let wire = [meta, fee].concat();
    let event = TokenTransferEvent::decode(wire.as_slice()).unwrap();
    let meta = event.meta.as_ref().unwrap();
    assert_eq!(
        meta.operation_index, None,
        "absent optional field must stay None"
    );
    assert_eq!(meta.to_muxed_info, None);
    let Some(Event::Fee(fee)) = &event.event else {
        panic!("oneof case 6 must be fee: {:?}", event.event);
    };
    assert_eq!(fee.from, G_FROM);
    assert_eq!(fee.amount, "-100");
    assert_eq!(
        fee.asset,
        Some(asset::Asset {
            asset_type: Some(AssetType::Native(true))
        })
    );
    assert_eq!(event.encode_to_vec(), wire);
}

#[test]
fn operation_index_zero_is_present_not_absent() {
    // `optional` gives explicit presence: index 0 on the wire is Some(0), and is written back.
    let wire = message(1, &[uint(5, 0)]);
    let event = TokenTransferEvent::decode(wire.as_slice()).unwrap();
    assert_eq!(event.meta.as_ref().unwrap().operation_index, Some(0));
    assert_eq!(event.encode_to_vec(), wire);
}

#[test]
fn mint_burn_clawback_cases_and_their_field_numbers() {
    let native = message(2, &[uint(1, 1)]);
    // Mint { to 1, asset 2, amount 3 } = case 3.
    let wire = message(3, &[string(1, G_TO), native.clone(), string(3, "7")]);
    match TokenTransferEvent::decode(wire.as_slice()).unwrap().event {
        Some(Event::Mint(mint)) => {
            assert_eq!((mint.to.as_str(), mint.amount.as_str()), (G_TO, "7"));
            assert!(mint.asset.is_some());
        }
        other => panic!("oneof case 3 must be mint: {other:?}"),
    }
    // Burn { from 1, asset 2, amount 3 } = case 4.
    let wire = message(4, &[string(1, G_FROM), native.clone(), string(3, "8")]);
    match TokenTransferEvent::decode(wire.as_slice()).unwrap().event {
        Some(Event::Burn(burn)) => {
            assert_eq!((burn.from.as_str(), burn.amount.as_str()), (G_FROM, "8"));
            assert!(burn.asset.is_some());
        }
        other => panic!("oneof case 4 must be burn: {other:?}"),
    }
    // Clawback { from 1, asset 2, amount 3 } = case 5.
    let wire = message(5, &[string(1, G_FROM), native, string(3, "9")]);
    match TokenTransferEvent::decode(wire.as_slice()).unwrap().event {
        Some(Event::Clawback(clawback)) => {
            assert_eq!(
                (clawback.from.as_str(), clawback.amount.as_str()),
                (G_FROM, "9")
            );
            assert!(clawback.asset.is_some());
        }
        other => panic!("oneof case 5 must be clawback: {other:?}"),
    }
}

#[test]
fn muxed_info_text_and_hash_cases() {
    let text = MuxedInfo::decode(string(1, "memo").as_slice()).unwrap();
    assert_eq!(text.content, Some(Content::Text("memo".into())));
    let hash = MuxedInfo::decode(bytes(3, &[7; 32]).as_slice()).unwrap();
    assert_eq!(hash.content, Some(Content::Hash(vec![7; 32])));
}

#[test]
fn get_events_request_range() {
    let wire = [uint(1, 100), uint(2, 110)].concat();
    let request = GetEventsRequest::decode(wire.as_slice()).unwrap();
    assert_eq!((request.start_ledger, request.end_ledger), (100, 110));
    assert_eq!(request.encode_to_vec(), wire);
}

// --- §3 control plane ---

fn string_map_entry(field: u64, k: &str, v: &str) -> Vec<u8> {
    message(field, &[string(1, k), string(2, v)])
}

fn double_map_entry(field: u64, k: &str, v: f64) -> Vec<u8> {
    message(field, &[string(1, k), double(2, v)])
}

#[test]
fn service_info_every_field_including_map_7_and_component_id_8() {
    let wire = [
        string(1, "svc-1"),
        uint(2, 4), // SERVICE_TYPE_PIPELINE, what the upstream Node consumer sends
        string(3, "event_service.TokenTransferEvent"),
        string(3, "raw_ledger_service.RawLedgerChunk"),
        string(4, "out.Type"),
        string(5, "http://consumer-app:8093/health"),
        uint(6, 42),
        string_map_entry(7, "network", "testnet"),
        string_map_entry(7, "consumer_type", "node"),
        string(8, "consumer-app"),
    ]
    .concat();
    let info = ServiceInfo::decode(wire.as_slice()).unwrap();
    assert_eq!(info.service_id, "svc-1");
    assert_eq!(info.service_type(), ServiceType::Pipeline);
    assert_eq!(
        info.input_event_types,
        [
            "event_service.TokenTransferEvent",
            "raw_ledger_service.RawLedgerChunk"
        ]
    );
    assert_eq!(info.output_event_types, ["out.Type"]);
    assert_eq!(info.health_endpoint, "http://consumer-app:8093/health");
    assert_eq!(info.max_inflight, 42);
    assert_eq!(
        info.metadata,
        HashMap::from([
            ("network".to_string(), "testnet".to_string()),
            ("consumer_type".to_string(), "node".to_string()),
        ])
    );
    assert_eq!(info.component_id, "consumer-app");
}

#[test]
fn service_type_numbers() {
    for (number, expected) in [
        (0, ServiceType::Unspecified),
        (1, ServiceType::Source),
        (2, ServiceType::Processor),
        (3, ServiceType::Sink),
        (4, ServiceType::Pipeline),
    ] {
        let info = ServiceInfo::decode(uint(2, number).as_slice()).unwrap();
        assert_eq!(info.service_type(), expected, "enum value {number}");
    }
}

#[test]
fn registration_ack_and_heartbeat() {
    let wire = [
        string(1, "svc-7"),
        string(2, "topic-a"),
        string_map_entry(3, "endpoint", "x"),
    ]
    .concat();
    let ack = RegistrationAck::decode(wire.as_slice()).unwrap();
    assert_eq!(ack.service_id, "svc-7");
    assert_eq!(ack.topic_names, ["topic-a"]);
    assert_eq!(ack.connection_info["endpoint"], "x");

    let wire = [
        string(1, "svc-7"),
        message(2, &[uint(1, 1_700_000_000)]),
        double_map_entry(3, "total_processed", 12.0),
        double_map_entry(3, "processing_latency_ms", 0.5),
    ]
    .concat();
    let heartbeat = ServiceHeartbeat::decode(wire.as_slice()).unwrap();
    assert_eq!(heartbeat.service_id, "svc-7");
    assert_eq!(heartbeat.timestamp.unwrap().seconds, 1_700_000_000);
    assert_eq!(heartbeat.metrics["total_processed"], 12.0);
    assert_eq!(heartbeat.metrics["processing_latency_ms"], 0.5);
}

#[test]
fn service_status_and_list() {
    let status = [
        string(1, "svc-2"),
        uint(2, 2),
        uint(3, 1),
        message(4, &[uint(1, 1_700_000_001), uint(2, 9)]),
        double_map_entry(5, "total_events_emitted", 3.0),
        string(6, "ttp-processor"),
    ]
    .concat();
    let list = ServiceList::decode(bytes(1, &status).as_slice()).unwrap();
    assert_eq!(list.services.len(), 1);
    let status: &ServiceStatus = &list.services[0];
    assert_eq!(status.service_id, "svc-2");
    assert_eq!(status.service_type(), ServiceType::Processor);
    assert!(status.is_healthy);
    let last = status.last_heartbeat.unwrap();
    assert_eq!((last.seconds, last.nanos), (1_700_000_001, 9));
    assert_eq!(status.metrics["total_events_emitted"], 3.0);
    assert_eq!(status.component_id, "ttp-processor");
}

// --- flowctl.v1 / stellar.v1 (flow-proto v0.1.3) ---

mod v1 {
    use std::collections::HashMap;

    use prost::Message;

    use super::{bytes, message, string, string_map_entry, uint};
    use flowctl_proto::flowctl::v1::{
        ComponentHealth, ComponentInfo, ComponentStatusRequest, ComponentStatusResponse,
        ComponentType, ConsumeResponse, DiscoveryRequest, DiscoveryResponse, Event,
        HealthCheckRequest, HealthCheckResponse, HealthStatus, HeartbeatRequest,
        ListComponentsRequest, ListComponentsResponse, RegisterRequest, RegisterResponse,
        SaveStateRequest, StateRequest, StateResponse, StellarCursor, StreamRequest,
        UnregisterRequest,
    };
    use flowctl_proto::stellar::v1::RawLedger;

    #[test]
    fn event_every_field_1_to_8() {
        let wire = [
            string(1, "stellar-ledger-997"),
            string(2, "stellar.ledger.v1"),
            bytes(3, &[0x08, 0xe5, 0x07]),
            string_map_entry(4, "ledger_sequence", "997"),
            // google.protobuf.Timestamp { int64 seconds = 1; int32 nanos = 2; }
            message(5, &[uint(1, 1_700_000_000), uint(2, 7)]),
            string(6, "stellar-live-source-v1"),
            string(7, "application/protobuf"),
            // StellarCursor { uint64 ledger_sequence = 1; uint32 index_in_ledger = 2; }
            message(8, &[uint(1, 5_000_000_000), uint(2, 3)]),
        ]
        .concat();
        let event = Event::decode(wire.as_slice()).unwrap();
        assert_eq!(event.id, "stellar-ledger-997");
        assert_eq!(event.r#type, "stellar.ledger.v1");
        assert_eq!(event.payload, [0x08, 0xe5, 0x07]);
        assert_eq!(event.metadata["ledger_sequence"], "997");
        let timestamp = event.timestamp.unwrap();
        assert_eq!((timestamp.seconds, timestamp.nanos), (1_700_000_000, 7));
        assert_eq!(event.source_component_id, "stellar-live-source-v1");
        assert_eq!(event.content_type, "application/protobuf");
        assert_eq!(
            event.stellar_cursor,
            Some(StellarCursor {
                ledger_sequence: 5_000_000_000,
                index_in_ledger: 3
            })
        );
        assert_eq!(event.encode_to_vec(), wire);
    }

    #[test]
    fn an_absent_cursor_stays_absent_and_a_zero_cursor_is_present() {
        let event = Event::decode(string(2, "x").as_slice()).unwrap();
        assert_eq!(event.stellar_cursor, None);
        // `optional`: an empty cursor on the wire is Some, and is written back.
        let wire = message(8, &[]);
        let event = Event::decode(wire.as_slice()).unwrap();
        assert_eq!(event.stellar_cursor, Some(StellarCursor::default()));
        assert_eq!(event.encode_to_vec(), wire);
    }

    #[test]
    fn raw_ledger_1_to_4() {
        let wire = [
            uint(1, 997),
            bytes(2, &[0, 0, 0, 1]),
            string(3, "Test SDF Network ; September 2015"),
            uint(4, 1_745_000_000),
        ]
        .concat();
        let ledger = RawLedger::decode(wire.as_slice()).unwrap();
        assert_eq!(ledger.sequence, 997);
        assert_eq!(ledger.ledger_close_meta_xdr, [0, 0, 0, 1]);
        assert_eq!(ledger.network, "Test SDF Network ; September 2015");
        assert_eq!(ledger.closed_at, 1_745_000_000);
        assert_eq!(ledger.encode_to_vec(), wire);
    }

    #[test]
    fn stream_request_and_consume_response() {
        let wire = [
            string_map_entry(1, "start_ledger", "997"),
            uint(2, 1),
            string(3, "token-9"),
        ]
        .concat();
        let request = StreamRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(request.params["start_ledger"], "997");
        assert!(request.resume);
        assert_eq!(request.resume_token, "token-9");
        assert_eq!(request.encode_to_vec(), wire);

        let wire = [
            uint(1, 41),
            uint(2, 2),
            string(3, "bad payload"),
            string(3, "x"),
        ]
        .concat();
        let response = ConsumeResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(response.events_consumed, 41);
        assert_eq!(response.events_failed, 2);
        assert_eq!(response.errors, ["bad payload", "x"]);
        assert_eq!(response.encode_to_vec(), wire);
    }

    fn component_info_wire() -> Vec<u8> {
        [
            string(1, "ttp-processor-v1"),
            string(2, "Token transfer processor"),
            string(3, "token transfers from ledgers"),
            string(4, "0.1.0"),
            uint(5, 2),
            string(6, "stellar.ledger.v1"),
            string(7, "stellar.token.transfer.v1"),
            string(8, ":50051"),
            string_map_entry(9, "network", "testnet"),
        ]
        .concat()
    }

    #[test]
    fn component_info_1_to_9() {
        let wire = component_info_wire();
        let info = ComponentInfo::decode(wire.as_slice()).unwrap();
        assert_eq!(info.id, "ttp-processor-v1");
        assert_eq!(info.name, "Token transfer processor");
        assert_eq!(info.description, "token transfers from ledgers");
        assert_eq!(info.version, "0.1.0");
        assert_eq!(info.r#type(), ComponentType::Processor);
        assert_eq!(info.input_event_types, ["stellar.ledger.v1"]);
        assert_eq!(info.output_event_types, ["stellar.token.transfer.v1"]);
        assert_eq!(info.endpoint, ":50051");
        assert_eq!(
            info.metadata,
            HashMap::from([("network".to_string(), "testnet".to_string())])
        );
        assert_eq!(info.encode_to_vec(), wire);
    }

    #[test]
    fn enum_numbers() {
        for (number, expected) in [
            (0, ComponentType::Unspecified),
            (1, ComponentType::Source),
            (2, ComponentType::Processor),
            (3, ComponentType::Consumer),
        ] {
            let info = ComponentInfo::decode(uint(5, number).as_slice()).unwrap();
            assert_eq!(info.r#type(), expected, "ComponentType {number}");
        }
        for (number, expected) in [
            (0, HealthStatus::Unknown),
            (1, HealthStatus::Starting),
            (2, HealthStatus::Healthy),
            (3, HealthStatus::Degraded),
            (4, HealthStatus::Unhealthy),
            (5, HealthStatus::Stopping),
        ] {
            let heartbeat = HeartbeatRequest::decode(uint(2, number).as_slice()).unwrap();
            assert_eq!(heartbeat.status(), expected, "HealthStatus {number}");
        }
    }

    #[test]
    fn register_unregister_and_heartbeat() {
        let wire = [
            message(1, &[component_info_wire()]),
            string(2, "ttp-processor"),
        ]
        .concat();
        let request = RegisterRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(request.component.unwrap().endpoint, ":50051");
        assert_eq!(request.component_id, "ttp-processor");

        let wire = [
            string(1, "svc-1"),
            string(2, "topic-a"),
            string_map_entry(3, "relay", "flowctl"),
        ]
        .concat();
        let response = RegisterResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(response.service_id, "svc-1");
        assert_eq!(response.assigned_topics, ["topic-a"]);
        assert_eq!(response.connection_info["relay"], "flowctl");
        assert_eq!(response.encode_to_vec(), wire);

        let request = UnregisterRequest::decode(string(1, "svc-1").as_slice()).unwrap();
        assert_eq!(request.service_id, "svc-1");

        let wire = [
            string(1, "svc-1"),
            uint(2, 3),
            string_map_entry(3, "total_processed", "12"),
        ]
        .concat();
        let heartbeat = HeartbeatRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(heartbeat.service_id, "svc-1");
        assert_eq!(heartbeat.status(), HealthStatus::Degraded);
        assert_eq!(heartbeat.metrics["total_processed"], "12");
        assert_eq!(heartbeat.encode_to_vec(), wire);
    }

    #[test]
    fn discovery_status_and_list() {
        let wire = [
            uint(1, 3),
            string(2, "stellar.token.transfer.v1"),
            string_map_entry(3, "network", "testnet"),
        ]
        .concat();
        let request = DiscoveryRequest::decode(wire.as_slice()).unwrap();
        assert_eq!(request.r#type(), ComponentType::Consumer);
        assert_eq!(request.event_types, ["stellar.token.transfer.v1"]);
        assert_eq!(request.metadata_filters["network"], "testnet");
        let response =
            DiscoveryResponse::decode(message(1, &[component_info_wire()]).as_slice()).unwrap();
        assert_eq!(response.components[0].id, "ttp-processor-v1");

        let request = ComponentStatusRequest::decode(string(1, "svc-2").as_slice()).unwrap();
        assert_eq!(request.service_id, "svc-2");
        let status = [
            message(1, &[component_info_wire()]),
            uint(2, 4),
            message(3, &[uint(1, 1_700_000_100)]),
            string_map_entry(4, "error_count", "1"),
            message(5, &[uint(1, 1_700_000_000)]),
        ]
        .concat();
        let response = ComponentStatusResponse::decode(status.as_slice()).unwrap();
        assert_eq!(response.component.as_ref().unwrap().id, "ttp-processor-v1");
        assert_eq!(response.status(), HealthStatus::Unhealthy);
        assert_eq!(response.last_heartbeat.unwrap().seconds, 1_700_000_100);
        assert_eq!(response.metrics["error_count"], "1");
        assert_eq!(response.registered_at.unwrap().seconds, 1_700_000_000);

        let request =
            ListComponentsRequest::decode([uint(1, 1), uint(2, 1)].concat().as_slice()).unwrap();
        assert_eq!(request.type_filter(), ComponentType::Source);
        assert!(request.include_unhealthy);
        let list = ListComponentsResponse::decode(bytes(1, &status).as_slice()).unwrap();
        assert_eq!(list.components.len(), 1);
        assert_eq!(list.components[0].status(), HealthStatus::Unhealthy);
    }

    #[test]
    fn health_check_and_state() {
        let request = HealthCheckRequest::decode(uint(1, 1).as_slice()).unwrap();
        assert!(request.include_details);
        let wire = [
            uint(1, 2),
            string_map_entry(2, "success_count", "3"),
            message(3, &[string(1, "data_lake"), uint(2, 4), string(3, "gone")]),
            string(4, "serving"),
        ]
        .concat();
        let response = HealthCheckResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(response.status(), HealthStatus::Healthy);
        assert_eq!(response.metrics["success_count"], "3");
        assert_eq!(
            response.components,
            [ComponentHealth {
                component_name: "data_lake".into(),
                status: HealthStatus::Unhealthy as i32,
                message: "gone".into(),
            }]
        );
        assert_eq!(response.message, "serving");
        assert_eq!(response.encode_to_vec(), wire);

        assert_eq!(
            StateRequest::decode(string(1, "k").as_slice()).unwrap().key,
            "k"
        );
        let wire = [
            string_map_entry(1, "next_ledger", "999"),
            string(2, "999"),
            uint(3, 1_700_000_000),
        ]
        .concat();
        let state = StateResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(state.state["next_ledger"], "999");
        assert_eq!(state.resume_token, "999");
        assert_eq!(state.last_updated_unix, 1_700_000_000);
        let wire = [string_map_entry(1, "a", "b"), string(2, "k")].concat();
        let save = SaveStateRequest::decode(wire.as_slice()).unwrap();
        assert_eq!((save.state["a"].as_str(), save.key.as_str()), ("b", "k"));
    }
}

// --- gRPC method paths: `/<package>.<Service>/<Method>` ---

mod paths {
    use std::net::SocketAddr;

    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Server};
    use tonic::{Request, Response, Status, Streaming};
    use tonic_prost::ProstCodec;

    use flowctl_proto::flowctl::v1::{
        self,
        consumer_service_server::{ConsumerService, ConsumerServiceServer},
        control_plane_service_server::{ControlPlaneService, ControlPlaneServiceServer},
        processor_service_server::{ProcessorService, ProcessorServiceServer},
        source_service_server::{SourceService, SourceServiceServer},
    };

    use flowctl_proto::flowctl::control_plane_server::{ControlPlane, ControlPlaneServer};
    use flowctl_proto::flowctl::{
        RegistrationAck, ServiceHeartbeat, ServiceInfo, ServiceList, ServiceStatus,
    };
    use flowctl_proto::raw_ledger_service::raw_ledger_service_server::{
        RawLedgerService, RawLedgerServiceServer,
    };
    use flowctl_proto::raw_ledger_service::{RawLedger, StreamLedgersRequest};
    use flowctl_proto::token_transfer::TokenTransferEvent;
    use flowctl_proto::token_transfer_service::event_service_server::{
        EventService, EventServiceServer,
    };
    use flowctl_proto::token_transfer_service::GetEventsRequest;

    type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    struct Echo;

    #[tonic::async_trait]
    impl RawLedgerService for Echo {
        type StreamRawLedgersStream = BoxStream<RawLedger>;
        async fn stream_raw_ledgers(
            &self,
            request: Request<StreamLedgersRequest>,
        ) -> Result<Response<Self::StreamRawLedgersStream>, Status> {
            let sequence = request.into_inner().start_ledger;
            let ledger = RawLedger {
                sequence,
                ledger_close_meta_xdr: vec![1],
            };
            Ok(Response::new(Box::pin(tokio_stream::iter([Ok(ledger)]))))
        }
    }

    #[tonic::async_trait]
    impl EventService for Echo {
        type GetTTPEventsStream = BoxStream<TokenTransferEvent>;
        async fn get_ttp_events(
            &self,
            request: Request<GetEventsRequest>,
        ) -> Result<Response<Self::GetTTPEventsStream>, Status> {
            let request = request.into_inner();
            let event = TokenTransferEvent {
                meta: Some(flowctl_proto::token_transfer::EventMeta {
                    ledger_sequence: request.end_ledger,
                    ..Default::default()
                }),
                event: None,
            };
            Ok(Response::new(Box::pin(tokio_stream::iter([Ok(event)]))))
        }
    }

    #[tonic::async_trait]
    impl ControlPlane for Echo {
        async fn register(
            &self,
            request: Request<ServiceInfo>,
        ) -> Result<Response<RegistrationAck>, Status> {
            Ok(Response::new(RegistrationAck {
                service_id: request.into_inner().component_id,
                ..Default::default()
            }))
        }
        async fn heartbeat(
            &self,
            _request: Request<ServiceHeartbeat>,
        ) -> Result<Response<()>, Status> {
            Ok(Response::new(()))
        }
        async fn get_service_status(
            &self,
            request: Request<ServiceInfo>,
        ) -> Result<Response<ServiceStatus>, Status> {
            Ok(Response::new(ServiceStatus {
                service_id: request.into_inner().service_id,
                ..Default::default()
            }))
        }
        async fn list_services(
            &self,
            _request: Request<()>,
        ) -> Result<Response<ServiceList>, Status> {
            Ok(Response::new(ServiceList::default()))
        }
    }

    /// Answers each v1 RPC with something derived from its request, so a test sees that the
    /// call reached that method with that message.
    struct EchoV1;

    fn info(name: &str) -> v1::ComponentInfo {
        v1::ComponentInfo {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn health(request: Request<v1::HealthCheckRequest>, of: &str) -> v1::HealthCheckResponse {
        v1::HealthCheckResponse {
            status: v1::HealthStatus::Healthy as i32,
            message: format!("{of} details={}", request.into_inner().include_details),
            ..Default::default()
        }
    }

    /// The ids of a client stream, joined with commas.
    async fn ids(request: Request<Streaming<v1::Event>>) -> Result<String, Status> {
        let mut stream = request.into_inner();
        let mut ids = Vec::new();
        while let Some(event) = stream.message().await? {
            ids.push(event.id);
        }
        Ok(ids.join(","))
    }

    #[tonic::async_trait]
    impl ControlPlaneService for EchoV1 {
        async fn register_component(
            &self,
            request: Request<v1::RegisterRequest>,
        ) -> Result<Response<v1::RegisterResponse>, Status> {
            Ok(Response::new(v1::RegisterResponse {
                service_id: request.into_inner().component_id,
                ..Default::default()
            }))
        }
        async fn unregister_component(
            &self,
            _request: Request<v1::UnregisterRequest>,
        ) -> Result<Response<()>, Status> {
            Ok(Response::new(()))
        }
        async fn discover_components(
            &self,
            request: Request<v1::DiscoveryRequest>,
        ) -> Result<Response<v1::DiscoveryResponse>, Status> {
            let names = request.into_inner().event_types;
            Ok(Response::new(v1::DiscoveryResponse {
                components: names.iter().map(|name| info(name)).collect(),
            }))
        }
        async fn heartbeat(
            &self,
            _request: Request<v1::HeartbeatRequest>,
        ) -> Result<Response<()>, Status> {
            Ok(Response::new(()))
        }
        async fn get_component_status(
            &self,
            request: Request<v1::ComponentStatusRequest>,
        ) -> Result<Response<v1::ComponentStatusResponse>, Status> {
            Ok(Response::new(v1::ComponentStatusResponse {
                component: Some(info(&request.into_inner().service_id)),
                ..Default::default()
            }))
        }
        async fn list_components(
            &self,
            request: Request<v1::ListComponentsRequest>,
        ) -> Result<Response<v1::ListComponentsResponse>, Status> {
            let wanted = request.into_inner().include_unhealthy;
            Ok(Response::new(v1::ListComponentsResponse {
                components: vec![v1::ComponentStatusResponse {
                    component: Some(info(&format!("include_unhealthy={wanted}"))),
                    ..Default::default()
                }],
            }))
        }
    }

    #[tonic::async_trait]
    impl SourceService for EchoV1 {
        type StreamEventsStream = BoxStream<v1::Event>;
        async fn get_info(
            &self,
            _request: Request<()>,
        ) -> Result<Response<v1::ComponentInfo>, Status> {
            Ok(Response::new(info("source")))
        }
        async fn health_check(
            &self,
            request: Request<v1::HealthCheckRequest>,
        ) -> Result<Response<v1::HealthCheckResponse>, Status> {
            Ok(Response::new(health(request, "source")))
        }
        async fn stream_events(
            &self,
            request: Request<v1::StreamRequest>,
        ) -> Result<Response<Self::StreamEventsStream>, Status> {
            let start = request
                .into_inner()
                .params
                .remove("start_ledger")
                .unwrap_or_default();
            let event = v1::Event {
                id: start,
                ..Default::default()
            };
            Ok(Response::new(Box::pin(tokio_stream::iter([Ok(event)]))))
        }
        async fn get_state(
            &self,
            request: Request<v1::StateRequest>,
        ) -> Result<Response<v1::StateResponse>, Status> {
            Ok(Response::new(v1::StateResponse {
                resume_token: request.into_inner().key,
                ..Default::default()
            }))
        }
        async fn save_state(
            &self,
            _request: Request<v1::SaveStateRequest>,
        ) -> Result<Response<()>, Status> {
            Ok(Response::new(()))
        }
    }

    #[tonic::async_trait]
    impl ProcessorService for EchoV1 {
        type ProcessStream = BoxStream<v1::Event>;
        async fn get_info(
            &self,
            _request: Request<()>,
        ) -> Result<Response<v1::ComponentInfo>, Status> {
            Ok(Response::new(info("processor")))
        }
        async fn health_check(
            &self,
            request: Request<v1::HealthCheckRequest>,
        ) -> Result<Response<v1::HealthCheckResponse>, Status> {
            Ok(Response::new(health(request, "processor")))
        }
        async fn process(
            &self,
            request: Request<Streaming<v1::Event>>,
        ) -> Result<Response<Self::ProcessStream>, Status> {
            let joined = ids(request).await?;
            let event = v1::Event {
                id: joined,
                ..Default::default()
            };
            Ok(Response::new(Box::pin(tokio_stream::iter([Ok(event)]))))
        }
    }

    #[tonic::async_trait]
    impl ConsumerService for EchoV1 {
        async fn get_info(
            &self,
            _request: Request<()>,
        ) -> Result<Response<v1::ComponentInfo>, Status> {
            Ok(Response::new(info("consumer")))
        }
        async fn health_check(
            &self,
            request: Request<v1::HealthCheckRequest>,
        ) -> Result<Response<v1::HealthCheckResponse>, Status> {
            Ok(Response::new(health(request, "consumer")))
        }
        async fn consume(
            &self,
            request: Request<Streaming<v1::Event>>,
        ) -> Result<Response<v1::ConsumeResponse>, Status> {
            let joined = ids(request).await?;
            Ok(Response::new(v1::ConsumeResponse {
                events_consumed: joined.split(',').count() as i64,
                errors: vec![joined],
                ..Default::default()
            }))
        }
    }

    async fn serve() -> Channel {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(RawLedgerServiceServer::new(Echo))
                .add_service(EventServiceServer::new(Echo))
                .add_service(ControlPlaneServer::new(Echo))
                .add_service(ControlPlaneServiceServer::new(EchoV1))
                .add_service(SourceServiceServer::new(EchoV1))
                .add_service(ProcessorServiceServer::new(EchoV1))
                .add_service(ConsumerServiceServer::new(EchoV1))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Calls `path` by its literal name with a raw codec, as a client built from the upstream
    /// `.proto` files would.
    async fn unary<Req, Resp>(channel: &Channel, path: &'static str, request: Req) -> Resp
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        grpc.unary(
            Request::new(request),
            PathAndQuery::from_static(path),
            ProstCodec::<Req, Resp>::default(),
        )
        .await
        .unwrap_or_else(|status| panic!("{path}: {status}"))
        .into_inner()
    }

    async fn first_of_stream<Req, Resp>(channel: &Channel, path: &'static str, request: Req) -> Resp
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let mut stream = grpc
            .server_streaming(
                Request::new(request),
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
            .unwrap_or_else(|status| panic!("{path}: {status}"))
            .into_inner();
        stream
            .next()
            .await
            .expect("one message")
            .unwrap_or_else(|status| panic!("{path}: {status}"))
    }

    #[tokio::test]
    async fn method_paths_match_the_contract() {
        let channel = serve().await;

        let ledger: RawLedger = first_of_stream(
            &channel,
            "/raw_ledger_service.RawLedgerService/StreamRawLedgers",
            StreamLedgersRequest { start_ledger: 77 },
        )
        .await;
        assert_eq!(ledger.sequence, 77);

        let event: TokenTransferEvent = first_of_stream(
            &channel,
            "/token_transfer_service.EventService/GetTTPEvents",
            GetEventsRequest {
                start_ledger: 1,
                end_ledger: 9,
            },
        )
        .await;
        assert_eq!(event.meta.unwrap().ledger_sequence, 9);

        let ack: RegistrationAck = unary(
            &channel,
            "/flowctl.ControlPlane/Register",
            ServiceInfo {
                component_id: "x".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ack.service_id, "x");
        let _: () = unary(
            &channel,
            "/flowctl.ControlPlane/Heartbeat",
            ServiceHeartbeat::default(),
        )
        .await;
        let status: ServiceStatus = unary(
            &channel,
            "/flowctl.ControlPlane/GetServiceStatus",
            ServiceInfo {
                service_id: "y".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(status.service_id, "y");
        let _: ServiceList = unary(&channel, "/flowctl.ControlPlane/ListServices", ()).await;
    }

    /// Sends `events` (by id) on a client stream to `path`.
    fn events(ids: &[&str]) -> impl Stream<Item = v1::Event> + Send + 'static {
        let events: Vec<v1::Event> = ids
            .iter()
            .map(|id| v1::Event {
                id: id.to_string(),
                ..Default::default()
            })
            .collect();
        tokio_stream::iter(events)
    }

    #[tokio::test]
    async fn v1_method_paths_match_flow_proto() {
        let channel = serve().await;

        let response: v1::RegisterResponse = unary(
            &channel,
            "/flowctl.v1.ControlPlaneService/RegisterComponent",
            v1::RegisterRequest {
                component_id: "c1".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(response.service_id, "c1");
        let _: () = unary(
            &channel,
            "/flowctl.v1.ControlPlaneService/UnregisterComponent",
            v1::UnregisterRequest::default(),
        )
        .await;
        let found: v1::DiscoveryResponse = unary(
            &channel,
            "/flowctl.v1.ControlPlaneService/DiscoverComponents",
            v1::DiscoveryRequest {
                event_types: vec!["t".into()],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(found.components[0].name, "t");
        let _: () = unary(
            &channel,
            "/flowctl.v1.ControlPlaneService/Heartbeat",
            v1::HeartbeatRequest::default(),
        )
        .await;
        let status: v1::ComponentStatusResponse = unary(
            &channel,
            "/flowctl.v1.ControlPlaneService/GetComponentStatus",
            v1::ComponentStatusRequest {
                service_id: "s9".into(),
            },
        )
        .await;
        assert_eq!(status.component.unwrap().name, "s9");
        let list: v1::ListComponentsResponse = unary(
            &channel,
            "/flowctl.v1.ControlPlaneService/ListComponents",
            v1::ListComponentsRequest {
                include_unhealthy: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            list.components[0].component.as_ref().unwrap().name,
            "include_unhealthy=true"
        );

        for (service, name) in [
            ("SourceService", "source"),
            ("ProcessorService", "processor"),
            ("ConsumerService", "consumer"),
        ] {
            let path = |method: &str| -> &'static str {
                Box::leak(format!("/flowctl.v1.{service}/{method}").into_boxed_str())
            };
            let info: v1::ComponentInfo = unary(&channel, path("GetInfo"), ()).await;
            assert_eq!(info.name, name);
            let health: v1::HealthCheckResponse = unary(
                &channel,
                path("HealthCheck"),
                v1::HealthCheckRequest {
                    include_details: true,
                },
            )
            .await;
            assert_eq!(health.message, format!("{name} details=true"));
        }

        let first: v1::Event = first_of_stream(
            &channel,
            "/flowctl.v1.SourceService/StreamEvents",
            v1::StreamRequest {
                params: [("start_ledger".to_string(), "997".to_string())].into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(first.id, "997");
        let state: v1::StateResponse = unary(
            &channel,
            "/flowctl.v1.SourceService/GetState",
            v1::StateRequest { key: "k".into() },
        )
        .await;
        assert_eq!(state.resume_token, "k");
        let _: () = unary(
            &channel,
            "/flowctl.v1.SourceService/SaveState",
            v1::SaveStateRequest::default(),
        )
        .await;

        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let mut processed = grpc
            .streaming(
                Request::new(events(&["a", "b"])),
                PathAndQuery::from_static("/flowctl.v1.ProcessorService/Process"),
                ProstCodec::<v1::Event, v1::Event>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(processed.message().await.unwrap().unwrap().id, "a,b");

        grpc.ready().await.unwrap();
        let consumed = grpc
            .client_streaming(
                Request::new(events(&["x", "y", "z"])),
                PathAndQuery::from_static("/flowctl.v1.ConsumerService/Consume"),
                ProstCodec::<v1::Event, v1::ConsumeResponse>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        assert_eq!(consumed.events_consumed, 3);
        assert_eq!(consumed.errors, ["x,y,z"]);
    }
}
