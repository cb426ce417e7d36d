//! What the v1 component tests share: the real ledgers, a small relay that chains a source, a
//! processor and a consumer over real tonic connections (what flowctl's relay does, minus its
//! graph and bookkeeping), and a v1 control plane test double.

#![allow(dead_code)]

pub mod processes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowctl_proto::flowctl::v1::consumer_service_client::ConsumerServiceClient;
use flowctl_proto::flowctl::v1::control_plane_service_server::{
    ControlPlaneService, ControlPlaneServiceServer,
};
use flowctl_proto::flowctl::v1::processor_service_client::ProcessorServiceClient;
use flowctl_proto::flowctl::v1::source_service_client::SourceServiceClient;
use flowctl_proto::flowctl::v1::{
    ComponentStatusRequest, ComponentStatusResponse, ConsumeResponse, DiscoveryRequest,
    DiscoveryResponse, Event, HeartbeatRequest, ListComponentsRequest, ListComponentsResponse,
    RegisterRequest, RegisterResponse, StreamRequest, UnregisterRequest,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

pub const TESTNET: &str = "Test SDF Network ; September 2015";

/// A folder of real ledgers under `examples/ledgers`.
pub fn real_lake(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../ledgers")
        .join(name)
}

/// A channel to `addr`, retried until it connects (a component binary may still be starting).
pub async fn connect(addr: SocketAddr) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    }
}

/// `(key, value)` pairs as `StreamRequest.params`.
pub fn params(pairs: &[(&str, &str)]) -> StreamRequest {
    StreamRequest {
        params: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Where a relayed run broke.
#[derive(Debug)]
pub enum RelayError {
    Source(Status),
    Processor(Status),
    Consumer(Status),
}

/// Relays `source` -> `processor` -> `consumer` for `request`, with bounded queues between the
/// hops, and returns the consumer's answer. The first broken edge is the error.
pub async fn relay(
    source: Channel,
    processor: Channel,
    consumer: Channel,
    request: StreamRequest,
) -> Result<ConsumeResponse, RelayError> {
    let source_events = SourceServiceClient::new(source)
        .stream_events(request)
        .await
        .map_err(RelayError::Source)?
        .into_inner();
    let source_failure: Arc<Mutex<Option<Status>>> = Arc::default();
    let (to_processor, processor_input) = mpsc::channel::<Event>(8);
    tokio::spawn(forward(source_events, to_processor, source_failure.clone()));
    let processed = ProcessorServiceClient::new(processor)
        .process(ReceiverStream::new(processor_input))
        .await
        .map_err(RelayError::Processor)?
        .into_inner();
    let processor_failure: Arc<Mutex<Option<Status>>> = Arc::default();
    let (to_consumer, consumer_input) = mpsc::channel::<Event>(64);
    tokio::spawn(forward(processed, to_consumer, processor_failure.clone()));
    let answer = ConsumerServiceClient::new(consumer)
        .consume(ReceiverStream::new(consumer_input))
        .await;
    if let Some(status) = source_failure.lock().unwrap().take() {
        return Err(RelayError::Source(status));
    }
    if let Some(status) = processor_failure.lock().unwrap().take() {
        return Err(RelayError::Processor(status));
    }
    answer
        .map(Response::into_inner)
        .map_err(RelayError::Consumer)
}

/// Moves `events` into `to` until either side ends; a failed stream's status goes to `failure`.
async fn forward(
    mut events: Streaming<Event>,
    to: mpsc::Sender<Event>,
    failure: Arc<Mutex<Option<Status>>>,
) {
    loop {
        match events.message().await {
            Ok(Some(event)) => {
                if to.send(event).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                *failure.lock().unwrap() = Some(status);
                return;
            }
        }
    }
}

/// A test peer, not a control plane: a `flowctl.v1.ControlPlaneService` that records what
/// components send it. It answers `UNAVAILABLE` to the first `refuse_first` registrations (to see
/// a component retry) and accepts the rest, with the request's `component_id` as service id.
#[derive(Clone, Default)]
pub struct RecordingControlPlane {
    pub registrations: Arc<Mutex<Vec<RegisterRequest>>>,
    pub heartbeats: Arc<Mutex<Vec<HeartbeatRequest>>>,
    pub refused: Arc<Mutex<usize>>,
    refuse_first: usize,
}

impl RecordingControlPlane {
    /// Serves on a free port of 127.0.0.1 until the test's runtime ends; returns its address.
    pub async fn start(refuse_first: usize) -> (RecordingControlPlane, SocketAddr) {
        let peer = RecordingControlPlane {
            refuse_first,
            ..Default::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(ControlPlaneServiceServer::new(peer.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (peer, addr)
    }

    /// Waits until `count` components have registered.
    pub async fn registered(&self, count: usize) -> Vec<RegisterRequest> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let registrations = self.registrations.lock().unwrap().clone();
            if registrations.len() >= count {
                return registrations;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} registrations arrived",
                registrations.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `service_id` has sent `count` heartbeats; returns them.
    pub async fn heartbeats_of(&self, service_id: &str, count: usize) -> Vec<HeartbeatRequest> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let beats: Vec<HeartbeatRequest> = self
                .heartbeats
                .lock()
                .unwrap()
                .iter()
                .filter(|beat| beat.service_id == service_id)
                .cloned()
                .collect();
            if beats.len() >= count {
                return beats;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} heartbeats from {service_id}",
                beats.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl ControlPlaneService for RecordingControlPlane {
    async fn register_component(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        {
            let mut refused = self.refused.lock().unwrap();
            if *refused < self.refuse_first {
                *refused += 1;
                return Err(Status::unavailable("test peer refuses this registration"));
            }
        }
        let request = request.into_inner();
        let service_id = request.component_id.clone();
        self.registrations.lock().unwrap().push(request);
        Ok(Response::new(RegisterResponse {
            service_id,
            ..Default::default()
        }))
    }

    async fn unregister_component(
        &self,
        _request: Request<UnregisterRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    async fn discover_components(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<()>, Status> {
        self.heartbeats.lock().unwrap().push(request.into_inner());
        Ok(Response::new(()))
    }

    async fn get_component_status(
        &self,
        _request: Request<ComponentStatusRequest>,
    ) -> Result<Response<ComponentStatusResponse>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    async fn list_components(
        &self,
        _request: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentsResponse>, Status> {
        Err(Status::unimplemented("test peer"))
    }
}
