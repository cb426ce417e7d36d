//! Real gRPC servers of the three v1 services on 127.0.0.1 (random ports), relayed by the
//! real [`Relay`] on its own thread.

use super::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use tonic::{Status, Streaming};

use crate::plan::GrpcService;
use flowctl_proto::flowctl::v1::StreamRequest;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use flowctl_proto::flowctl::v1::consumer_service_server::{ConsumerService, ConsumerServiceServer};
use flowctl_proto::flowctl::v1::processor_service_server::{
    ProcessorService, ProcessorServiceServer,
};
use flowctl_proto::flowctl::v1::source_service_server::{SourceService, SourceServiceServer};
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ConsumeResponse, Event, HealthCheckRequest, HealthCheckResponse,
    SaveStateRequest, StateRequest, StateResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response};

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

/// Streams `count` events of `payload` bytes, types alternating between `types`, counting
/// what it has handed to gRPC in `produced`.
struct TestSource {
    count: u64,
    payload: usize,
    types: Vec<&'static str>,
    produced: Arc<AtomicU64>,
    params: Arc<Mutex<HashMap<String, String>>>,
}

#[tonic::async_trait]
impl SourceService for TestSource {
    type StreamEventsStream = EventStream;
    async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
        Err(Status::unimplemented("test source"))
    }
    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("test source"))
    }
    async fn stream_events(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<EventStream>, Status> {
        *self.params.lock().unwrap() = request.into_inner().params;
        // A queue of one: the source produces only as fast as gRPC takes its events.
        let (sender, receiver) = mpsc::channel(1);
        let (count, payload, types, produced) = (
            self.count,
            self.payload,
            self.types.clone(),
            self.produced.clone(),
        );
        tokio::spawn(async move {
            for i in 0..count {
                let event = Event {
                    id: i.to_string(),
                    r#type: types[i as usize % types.len()].to_string(),
                    payload: vec![7; payload],
                    ..Default::default()
                };
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
                produced.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
    async fn get_state(&self, _: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        Err(Status::unimplemented("test source"))
    }
    async fn save_state(&self, _: Request<SaveStateRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("test source"))
    }
}

/// Passes events on (type `processed.v1`); fails with INTERNAL after `fail_after` of them.
struct TestProcessor {
    fail_after: Option<usize>,
}

#[tonic::async_trait]
impl ProcessorService for TestProcessor {
    type ProcessStream = EventStream;
    async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
        Err(Status::unimplemented("test processor"))
    }
    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("test processor"))
    }
    async fn process(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<EventStream>, Status> {
        let fail_after = self.fail_after;
        let mut seen = 0;
        let out = request.into_inner().map(move |event| {
            let i = seen;
            seen += 1;
            if fail_after.is_some_and(|n| i >= n) {
                return Err(Status::internal(format!("boom at event {i}")));
            }
            event.map(|event| Event {
                r#type: "processed.v1".into(),
                ..event
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// Takes events slowly (`delay` each), records their ids and how far the source was ahead
/// of it at each event.
struct TestConsumer {
    delay: Duration,
    info_types: Vec<String>,
    received: Arc<Mutex<Vec<String>>>,
    produced: Arc<AtomicU64>,
    max_lag: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl ConsumerService for TestConsumer {
    async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
        Ok(Response::new(ComponentInfo {
            input_event_types: self.info_types.clone(),
            ..Default::default()
        }))
    }
    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("test consumer"))
    }
    async fn consume(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<ConsumeResponse>, Status> {
        let mut events = request.into_inner();
        let mut consumed = 0;
        while let Some(event) = events.message().await? {
            tokio::time::sleep(self.delay).await;
            consumed += 1;
            let lag = self
                .produced
                .load(Ordering::SeqCst)
                .saturating_sub(consumed);
            self.max_lag.fetch_max(lag, Ordering::SeqCst);
            self.received
                .lock()
                .unwrap()
                .push(format!("{}:{}", event.r#type, event.id));
        }
        Ok(Response::new(ConsumeResponse {
            events_consumed: consumed as i64,
            events_failed: 0,
            errors: Vec::new(),
        }))
    }
}

/// Serves `router` on a free loopback port for as long as `runtime` lives.
fn serve(
    runtime: &tokio::runtime::Runtime,
    router: tonic::transport::server::Router,
) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    address
}

fn node(id: &str, service: GrpcService, address: SocketAddr, inputs: &[&str]) -> RelayNode {
    RelayNode {
        id: id.into(),
        service,
        address,
        network: None,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        accepts: Vec::new(),
        params: HashMap::new(),
        grpc_port: address.port(),
        restarts: 0,
    }
}

fn consumer(produced: &Arc<AtomicU64>, delay: Duration, info_types: &[&str]) -> TestConsumer {
    TestConsumer {
        delay,
        info_types: info_types.iter().map(|s| s.to_string()).collect(),
        received: Arc::default(),
        produced: produced.clone(),
        max_lag: Arc::default(),
    }
}

fn source(
    count: u64,
    payload: usize,
    types: &[&'static str],
    produced: &Arc<AtomicU64>,
) -> TestSource {
    TestSource {
        count,
        payload,
        types: types.to_vec(),
        produced: produced.clone(),
        params: Arc::default(),
    }
}

/// Relays `nodes` to their end; how it ended and the edge counts.
fn relay_to_end(nodes: Vec<RelayNode>) -> (Result<(), String>, Vec<String>) {
    let events = Arc::new(RunEvents::default());
    let counts = Arc::new(EdgeCounts::default());
    let relay = Relay::start(
        nodes,
        counts.clone(),
        events.clone(),
        Arc::default(),
        Console { color: false },
    )
    .unwrap();
    let mut state = events.snapshot();
    // Generous bound, only so that a hanging relay fails the test.
    let limit = std::time::Instant::now() + Duration::from_secs(120);
    while state.relay_end.is_none() && std::time::Instant::now() < limit {
        state = events.wait_change(state.version, Duration::from_secs(1));
    }
    drop(relay);
    let end = state.relay_end.expect("the relay did not end within 120 s");
    (end, edge_lines(&counts))
}

#[test]
fn a_slow_consumer_slows_the_source_and_loses_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    // 4000 events of 32 KiB (128 MiB in all) into a consumer that takes 1 ms per event.
    // What may run ahead: each queue's bytes, each call's HTTP/2 window, the tonic and h2
    // buffers and the kernel's socket buffers (about 35 MiB here).
    const COUNT: u64 = 4000;
    let test_source = source(COUNT, 32 * 1024, &["a.v1"], &produced);
    let params = test_source.params.clone();
    let source = serve(
        &runtime,
        Server::builder().add_service(SourceServiceServer::new(test_source)),
    );
    let processor = serve(
        &runtime,
        Server::builder().add_service(ProcessorServiceServer::new(TestProcessor {
            fail_after: None,
        })),
    );
    let slow = consumer(&produced, Duration::from_millis(1), &[]);
    let (received, max_lag) = (slow.received.clone(), slow.max_lag.clone());
    let sink = serve(
        &runtime,
        Server::builder().add_service(ConsumerServiceServer::new(slow)),
    );

    let mut src = node("src", GrpcService::V1Source, source, &[]);
    src.params = HashMap::from([("start_ledger".into(), "997".into())]);
    let (end, edges) = relay_to_end(vec![
        src,
        node("proc", GrpcService::V1Processor, processor, &["src"]),
        node("sink", GrpcService::V1Consumer, sink, &["proc"]),
    ]);
    assert_eq!(end, Ok(()));
    assert_eq!(params.lock().unwrap()["start_ledger"], "997");
    let received = received.lock().unwrap();
    let expected: Vec<String> = (0..COUNT).map(|i| format!("processed.v1:{i}")).collect();
    assert_eq!(*received, expected, "every event, in order");
    assert_eq!(
        edges,
        [
            format!("relay src -> proc: {COUNT} event(s)"),
            format!("relay proc -> sink: {COUNT} event(s)"),
        ]
    );
    // The source was held back: never more than a fraction of the stream ahead of the
    // consumer (the rest is the edges' queues, HTTP/2 windows and socket buffers).
    let max_lag = max_lag.load(Ordering::SeqCst);
    eprintln!("the source ran at most {max_lag} of {COUNT} events ahead of the consumer");
    assert!(max_lag < COUNT / 2, "the source ran {max_lag} events ahead");
}

#[test]
fn a_processor_failing_mid_stream_breaks_the_run_naming_the_edge_and_status() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    let source = serve(
        &runtime,
        Server::builder().add_service(SourceServiceServer::new(source(
            50,
            16,
            &["a.v1"],
            &produced,
        ))),
    );
    let processor = serve(
        &runtime,
        Server::builder().add_service(ProcessorServiceServer::new(TestProcessor {
            fail_after: Some(10),
        })),
    );
    let sink = serve(
        &runtime,
        Server::builder().add_service(ConsumerServiceServer::new(consumer(
            &produced,
            Duration::ZERO,
            &[],
        ))),
    );
    let (end, _) = relay_to_end(vec![
        node("src", GrpcService::V1Source, source, &[]),
        node("proc", GrpcService::V1Processor, processor, &["src"]),
        node("sink", GrpcService::V1Consumer, sink, &["proc"]),
    ]);
    let error = end.unwrap_err();
    assert!(error.contains("edge src -> proc -> sink broke"), "{error}");
    assert!(
        error.contains("proc flowctl.v1.ProcessorService.Process failed with gRPC status Internal: boom at event 10"),
        "{error}"
    );
}

#[test]
fn events_reach_only_consumers_that_take_their_type() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    let source = serve(
        &runtime,
        Server::builder().add_service(SourceServiceServer::new(source(
            10,
            4,
            &["a.v1", "b.v1"],
            &produced,
        ))),
    );
    // One takes what the file says (a.v1), the other what its GetInfo says (b.v1).
    let by_file = consumer(&produced, Duration::ZERO, &["b.v1"]);
    let by_info = consumer(&produced, Duration::ZERO, &["b.v1"]);
    let (file_got, info_got) = (by_file.received.clone(), by_info.received.clone());
    let file_sink = serve(
        &runtime,
        Server::builder().add_service(ConsumerServiceServer::new(by_file)),
    );
    let info_sink = serve(
        &runtime,
        Server::builder().add_service(ConsumerServiceServer::new(by_info)),
    );
    let mut file_node = node("file-sink", GrpcService::V1Consumer, file_sink, &["src"]);
    file_node.accepts = vec!["a.v1".into()];
    let (end, edges) = relay_to_end(vec![
        node("src", GrpcService::V1Source, source, &[]),
        file_node,
        node("info-sink", GrpcService::V1Consumer, info_sink, &["src"]),
    ]);
    assert_eq!(end, Ok(()));
    assert_eq!(
        *file_got.lock().unwrap(),
        ["a.v1:0", "a.v1:2", "a.v1:4", "a.v1:6", "a.v1:8"]
    );
    assert_eq!(
        *info_got.lock().unwrap(),
        ["b.v1:1", "b.v1:3", "b.v1:5", "b.v1:7", "b.v1:9"]
    );
    assert_eq!(
        edges,
        [
            "relay src -> file-sink: 5 event(s)",
            "relay src -> info-sink: 5 event(s)"
        ]
    );
}

#[test]
fn a_processor_that_consumed_and_emitted_nothing_is_named() {
    let text = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: demo}\nspec:\n  \
                driver: process\n  sources:\n    - {id: src, command: [s]}\n  processors:\n    \
                - {id: mid, command: [p], inputs: [src]}\n  sinks:\n    - {id: out, command: \
                [c], inputs: [mid]}\n";
    let file = crate::spec::parse(text, "t.yaml").unwrap();
    let plan = RunPlan::build(&file, std::path::Path::new("."), &Default::default()).unwrap();
    let edge = |from: &str, to: &str, events: u64| {
        Arc::new(EdgeCount {
            from: from.into(),
            to: to.into(),
            events: AtomicU64::new(events),
        })
    };
    let counts: EdgeCounts = Mutex::new(vec![edge("src", "mid", 30), edge("mid", "out", 0)]);
    let warnings = silent_processors(&plan, &counts);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("processor `mid` consumed 30 event(s) and emitted none"),
        "{warnings:?}"
    );
    counts.lock().unwrap()[1].events.store(1, Ordering::Relaxed);
    assert!(silent_processors(&plan, &counts).is_empty());
    // Nothing consumed, nothing to say.
    counts.lock().unwrap()[0].events.store(0, Ordering::Relaxed);
    counts.lock().unwrap()[1].events.store(0, Ordering::Relaxed);
    assert!(silent_processors(&plan, &counts).is_empty());
}

/// A consumer like upstream's SDK one: answers as soon as the stream ends, and writes each
/// event later on a task of its own; `HealthCheck` counts the finished writes
/// (`events_consumed`, `events_failed`).
struct SdkLikeConsumer {
    write_time: Duration,
    written: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl ConsumerService for SdkLikeConsumer {
    async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
        Ok(Response::new(ComponentInfo::default()))
    }
    async fn health_check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let metrics = HashMap::from([
            (
                "events_consumed".to_string(),
                self.written.load(Ordering::SeqCst).to_string(),
            ),
            ("events_failed".to_string(), "0".to_string()),
        ]);
        Ok(Response::new(HealthCheckResponse {
            metrics,
            ..Default::default()
        }))
    }
    async fn consume(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<ConsumeResponse>, Status> {
        let mut events = request.into_inner();
        let mut received = 0;
        while events.message().await?.is_some() {
            received += 1;
            let (written, write_time) = (self.written.clone(), self.write_time);
            tokio::spawn(async move {
                tokio::time::sleep(write_time).await;
                written.fetch_add(1, Ordering::SeqCst);
            });
        }
        Ok(Response::new(ConsumeResponse {
            events_consumed: received,
            ..Default::default()
        }))
    }
}

#[test]
fn the_relay_ends_only_when_a_consumer_has_finished_the_writes_it_answered_for() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    let source_addr = serve(
        &runtime,
        Server::builder().add_service(SourceServiceServer::new(source(20, 16, &["t"], &produced))),
    );
    let written = Arc::new(AtomicU64::new(0));
    let sink_addr = serve(
        &runtime,
        Server::builder().add_service(ConsumerServiceServer::new(SdkLikeConsumer {
            write_time: Duration::from_millis(700),
            written: written.clone(),
        })),
    );
    let (end, _) = relay_to_end(vec![
        node("src", GrpcService::V1Source, source_addr, &[]),
        node("sink", GrpcService::V1Consumer, sink_addr, &["src"]),
    ]);
    assert_eq!(end, Ok(()));
    // Without waiting for the writes, the relay would end while all 20 were still running.
    assert_eq!(written.load(Ordering::SeqCst), 20);

    let answer = |consumed, settled| ConsumerAnswer {
        component: "sink".into(),
        events_consumed: consumed,
        events_failed: 0,
        errors: Vec::new(),
        settled,
    };
    let done = |written, failed, complete| {
        Some(settle::Settled {
            written,
            failed,
            complete,
        })
    };
    assert_eq!(unsettled(&answer(20, done(20, 0, true))), None);
    assert_eq!(unsettled(&answer(20, None)), None);
    let late = unsettled(&answer(20, done(18, 2, true))).unwrap();
    assert!(late.contains("2 of its writes failed afterwards"), "{late}");
    let cut = unsettled(&answer(20, done(5, 0, false))).unwrap();
    assert!(cut.contains("had finished writing only 5"), "{cut}");
}
