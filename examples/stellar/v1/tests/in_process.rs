//! The three v1 components in one process, each on its own gRPC server on 127.0.0.1, chained by
//! the test relay over real tonic connections: the events, the consumer's output, the errors a
//! caller sees for bad input, and registration with a v1 control plane test peer.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowctl_proto::component::{ComponentEnv, Metrics};
use flowctl_proto::flowctl::v1::consumer_service_client::ConsumerServiceClient;
use flowctl_proto::flowctl::v1::processor_service_client::ProcessorServiceClient;
use flowctl_proto::flowctl::v1::source_service_client::SourceServiceClient;
use flowctl_proto::flowctl::v1::{
    ComponentType, Event, HealthCheckRequest, HealthStatus, StateRequest, StreamRequest,
};
use flowctl_proto::stellar::v1::RawLedger;
use flowctl_proto::token_transfer::TokenTransferEvent;
use prost::Message;
use stellar_components::shutdown::{self, ShutdownTrigger};
use stellar_v1_components::component::{self, V1Identity};
use stellar_v1_components::consumer::{self, ConsumerV1Config, JsonLinesConsumer, Output};
use stellar_v1_components::processor::{self, LedgerProcessor, ProcessorV1Config};
use stellar_v1_components::source::{self, LedgerEventSource, SourceV1Config};
use support::{connect, params, real_lake, relay, RecordingControlPlane, RelayError, TESTNET};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::Code;

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The three services on loopback; they stop when this is dropped.
struct Components {
    source: Channel,
    processor: Channel,
    consumer: Channel,
    output: Captured,
    processor_metrics: Metrics,
    _stop: ShutdownTrigger,
}

/// The environment of a component that registers with `control_plane` (if any), `/health` on a
/// free port.
fn env(control_plane: Option<SocketAddr>) -> ComponentEnv {
    ComponentEnv {
        health_port: 0,
        enable_flowctl: control_plane.is_some(),
        flowctl_endpoint: control_plane.map_or_else(String::new, |addr| addr.to_string()),
        heartbeat_interval: Duration::from_millis(50),
        component_id: None,
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn started(
    identity: &V1Identity,
    id: &str,
    endpoint: SocketAddr,
    control_plane: Option<SocketAddr>,
) -> component::Running {
    let info = component::component_info(identity, id.into(), endpoint.to_string(), HashMap::new());
    component::start(identity, &env(control_plane), info).unwrap()
}

async fn start_components(lake: &str, control_plane: Option<SocketAddr>) -> Components {
    let bucket = real_lake(lake).to_str().unwrap().to_string();
    let source_config = SourceV1Config::from_lookup(|key| match key {
        "STORAGE_TYPE" => Some("FS".into()),
        "BUCKET_NAME" => Some(bucket.clone()),
        "LEDGER_POLL_INTERVAL" => Some("20ms".into()),
        _ => None,
    })
    .unwrap();
    let (stop, shutdown) = shutdown::channel();

    let (source_listener, source_addr) = listener().await;
    let running = started(&source::IDENTITY, "source-v1", source_addr, control_plane);
    let service = LedgerEventSource::open(
        source_config,
        running.info,
        running.metrics,
        shutdown.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(source::serve(source_listener, service, shutdown.clone()));

    let (processor_listener, processor_addr) = listener().await;
    let running = started(
        &processor::IDENTITY,
        "processor-v1",
        processor_addr,
        control_plane,
    );
    let processor_metrics = running.metrics.clone();
    let config = ProcessorV1Config {
        network_passphrase: TESTNET.to_string(),
        // More than one, so answering in input order is exercised.
        workers: 3,
    };
    let service =
        LedgerProcessor::token_transfers(config, running.info, running.metrics, shutdown.clone());
    tokio::spawn(processor::serve(
        processor_listener,
        service,
        shutdown.clone(),
    ));

    let (consumer_listener, consumer_addr) = listener().await;
    let running = started(
        &consumer::IDENTITY,
        "consumer-v1",
        consumer_addr,
        control_plane,
    );
    let output = Captured::default();
    let out: Output = Arc::new(Mutex::new(output.clone()));
    let config = ConsumerV1Config { print_events: true };
    let service = JsonLinesConsumer::new(config, running.info, running.metrics, out);
    tokio::spawn(consumer::serve(consumer_listener, service, shutdown));

    Components {
        source: connect(source_addr).await,
        processor: connect(processor_addr).await,
        consumer: connect(consumer_addr).await,
        output,
        processor_metrics,
        _stop: stop,
    }
}

async fn source_events(components: &Components, request: StreamRequest) -> Vec<Event> {
    let mut stream = SourceServiceClient::new(components.source.clone())
        .stream_events(request)
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnet_997_998_relayed_prints_exactly_the_upstream_events() {
    let components = start_components("testnet-997-999", None).await;
    let answer = relay(
        components.source.clone(),
        components.processor.clone(),
        components.consumer.clone(),
        params(&[("start_ledger", "997"), ("end_ledger", "998")]),
    )
    .await
    .unwrap();
    let expected =
        fs::read_to_string(real_lake("testnet-997-999").join("expected-events-997-998.jsonl"))
            .unwrap();
    // Byte for byte: same events, same order, same formatting as the upstream file.
    assert_eq!(components.output.text(), expected);
    assert_eq!(answer.events_consumed as usize, expected.lines().count());
    assert_eq!(answer.events_failed, 0);
    assert!(answer.errors.is_empty(), "{:?}", answer.errors);
    assert_eq!(
        components.processor_metrics.get("last_processed_ledger"),
        998.0
    );
    assert_eq!(components.processor_metrics.get("total_processed"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_streams_ledger_events_as_upstream_consumers_expect() {
    let components = start_components("testnet-997-999", None).await;
    // A bounded range ends after its last ledger although 999 is in the lake.
    let events = source_events(
        &components,
        params(&[("start_ledger", "997"), ("end_ledger", "998")]),
    )
    .await;
    assert_eq!(events.len(), 2);
    for (event, sequence) in events.iter().zip([997u32, 998]) {
        assert_eq!(event.r#type, "stellar.ledger.v1");
        assert_eq!(event.content_type, "application/protobuf");
        assert_eq!(event.id, format!("stellar-ledger-{sequence}"));
        assert_eq!(event.source_component_id, "source-v1");
        let cursor = event.stellar_cursor.unwrap();
        assert_eq!(
            (cursor.ledger_sequence, cursor.index_in_ledger),
            (u64::from(sequence), 0)
        );
        assert_eq!(event.metadata["ledger_sequence"], sequence.to_string());
        let ledger = RawLedger::decode(event.payload.as_slice()).unwrap();
        assert_eq!(ledger.sequence, sequence);
        assert_eq!(ledger.network, TESTNET);
        assert_eq!(
            event.metadata["xdr_size"],
            ledger.ledger_close_meta_xdr.len().to_string()
        );
        // The header names the same ledger and the close time matches the event's timestamp.
        let (in_header, close_time) = source::ledger_header(&ledger.ledger_close_meta_xdr).unwrap();
        assert_eq!(in_header, sequence);
        assert_eq!(ledger.closed_at, close_time as i64);
        assert_eq!(event.timestamp.unwrap().seconds, ledger.closed_at);
        assert!(ledger.closed_at > 1_500_000_000, "{}", ledger.closed_at);
    }

    // GetState points after the last ledger sent; resuming from it continues there.
    let state = SourceServiceClient::new(components.source.clone())
        .get_state(StateRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.resume_token, "999");
    assert_eq!(state.state["last_ledger"], "998");
    let resumed = source_events(
        &components,
        StreamRequest {
            resume: true,
            resume_token: state.resume_token,
            params: params(&[("end_ledger", "999")]).params,
        },
    )
    .await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].id, "stellar-ledger-999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_events_carry_type_payload_cursor_and_the_ledgers_metadata() {
    let components = start_components("testnet-997-999", None).await;
    let ledgers = source_events(
        &components,
        params(&[("start_ledger", "998"), ("end_ledger", "998")]),
    )
    .await;
    let mut input = ledgers.clone();
    input[0]
        .metadata
        .insert("trace".to_string(), "kept".to_string());
    // An event of another type is skipped, as upstream's processors do.
    input.insert(
        0,
        Event {
            id: "other".into(),
            r#type: "stellar.transaction.v1".into(),
            ..Default::default()
        },
    );
    let mut output = ProcessorServiceClient::new(components.processor.clone())
        .process(tokio_stream::iter(input))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = output.message().await.unwrap() {
        events.push(event);
    }
    assert!(!events.is_empty());
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.r#type, "stellar.token.transfer.v1");
        assert_eq!(
            event.content_type,
            "application/protobuf; message=token_transfer.TokenTransferEvent"
        );
        assert_eq!(event.id, format!("token-transfer-998-{index}"));
        assert_eq!(event.source_component_id, "processor-v1");
        let cursor = event.stellar_cursor.unwrap();
        assert_eq!(
            (cursor.ledger_sequence, cursor.index_in_ledger),
            (998, index as u32 + 1)
        );
        assert_eq!(event.metadata["trace"], "kept");
        assert_eq!(event.metadata["ledger_sequence"], "998");
        let transfer = TokenTransferEvent::decode(event.payload.as_slice()).unwrap();
        let meta = transfer.meta.as_ref().unwrap();
        assert_eq!(meta.ledger_sequence, 998);
        assert_eq!(event.timestamp, meta.closed_at);
        assert_eq!(
            event.metadata["event_type"],
            stellar_ttp::events::event_kind(&transfer)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_params_and_bad_events_give_clear_errors() {
    let components = start_components("testnet-997-999", None).await;
    let mut source = SourceServiceClient::new(components.source.clone());
    for (request, expected) in [
        (params(&[]), "params.start_ledger is required"),
        (
            params(&[("start_ledger", "abc")]),
            "params.start_ledger: \"abc\"",
        ),
        (params(&[("start_ledger", "0")]), "at least 1"),
        (
            params(&[("start_ledger", "998"), ("end_ledger", "997")]),
            "params.end_ledger 997 is before start_ledger 998",
        ),
        (
            StreamRequest {
                resume: true,
                resume_token: "later".into(),
                ..Default::default()
            },
            "resume_token: \"later\"",
        ),
    ] {
        let status = source.stream_events(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains(expected),
            "{request:?}: {}",
            status.message()
        );
    }
    let status = source
        .save_state(flowctl_proto::flowctl::v1::SaveStateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("GetState"),
        "{}",
        status.message()
    );

    // A ledger event whose payload is not a RawLedger ends the processor's answer, naming it.
    let broken = Event {
        id: "stellar-ledger-42".into(),
        r#type: "stellar.ledger.v1".into(),
        payload: vec![0xff, 0xff, 0xff],
        ..Default::default()
    };
    let mut output = ProcessorServiceClient::new(components.processor.clone())
        .process(tokio_stream::iter([broken]))
        .await
        .unwrap()
        .into_inner();
    let status = output.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("\"stellar-ledger-42\"")
            && status.message().contains("stellar.v1.RawLedger"),
        "{}",
        status.message()
    );

    // The consumer counts what it cannot consume, names it, and prints nothing for it.
    let answer = ConsumerServiceClient::new(components.consumer.clone())
        .consume(tokio_stream::iter([
            Event {
                id: "ledger-1".into(),
                r#type: "stellar.ledger.v1".into(),
                ..Default::default()
            },
            Event {
                id: "token-transfer-1-0".into(),
                r#type: "stellar.token.transfer.v1".into(),
                payload: vec![0xff],
                ..Default::default()
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.events_consumed, answer.events_failed), (0, 2));
    assert!(
        answer.errors[0].contains("\"ledger-1\""),
        "{:?}",
        answer.errors
    );
    assert!(
        answer.errors[1].contains("\"token-transfer-1-0\""),
        "{:?}",
        answer.errors
    );
    assert_eq!(components.output.text(), "");

    // A relay whose source call fails reports the source's status.
    let broken_run = relay(
        components.source.clone(),
        components.processor.clone(),
        components.consumer.clone(),
        params(&[("start_ledger", "x")]),
    )
    .await;
    assert!(
        matches!(&broken_run, Err(RelayError::Source(status)) if status.code() == Code::InvalidArgument),
        "{broken_run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_component_registers_with_the_v1_control_plane_and_heartbeats() {
    // The test peer refuses the first two registrations: the components retry.
    let (control_plane, addr) = RecordingControlPlane::start(2).await;
    let components = start_components("testnet-997-999", Some(addr)).await;
    let registrations = control_plane.registered(3).await;
    assert_eq!(*control_plane.refused.lock().unwrap(), 2);
    let mut by_id: HashMap<String, _> = registrations
        .into_iter()
        .map(|request| (request.component_id.clone(), request))
        .collect();
    for (id, component_type, inputs, outputs) in [
        (
            "source-v1",
            ComponentType::Source,
            vec![],
            vec!["stellar.ledger.v1"],
        ),
        (
            "processor-v1",
            ComponentType::Processor,
            vec!["stellar.ledger.v1"],
            vec!["stellar.token.transfer.v1"],
        ),
        (
            "consumer-v1",
            ComponentType::Consumer,
            vec!["stellar.token.transfer.v1"],
            vec![],
        ),
    ] {
        let request = by_id
            .remove(id)
            .unwrap_or_else(|| panic!("{id} registered"));
        let info = request.component.unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.r#type(), component_type, "{id}");
        assert_eq!(info.input_event_types, inputs, "{id}");
        assert_eq!(info.output_event_types, outputs, "{id}");
        // The endpoint is the component's own listen address.
        assert!(info.endpoint.starts_with("127.0.0.1:"), "{}", info.endpoint);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

        let beats = control_plane.heartbeats_of(id, 2).await;
        let beat = beats.last().unwrap();
        assert_eq!(beat.status(), HealthStatus::Healthy, "{id}");
        assert!(
            beat.metrics.contains_key("success_count"),
            "{:?}",
            beat.metrics
        );
    }
    // GetInfo answers what was registered; HealthCheck what /health reports.
    let info = ProcessorServiceClient::new(components.processor.clone())
        .get_info(())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.id, "processor-v1");
    let health = SourceServiceClient::new(components.source.clone())
        .health_check(HealthCheckRequest {
            include_details: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), HealthStatus::Healthy);
    assert_eq!(health.components[0].component_name, "data_lake");
    assert_eq!(health.metrics["total_processed"], "0");
}
