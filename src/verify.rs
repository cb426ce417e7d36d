//! Stream verification: after start-up, open each declared gRPC stream with a typed tonic
//! client and confirm that real messages arrive, so "healthy" also means "data flows".
//!
//! Like the control plane, this needs tokio; it blocks on the process's runtime
//! (`crate::runtime`) and the caller stays synchronous.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use flowctl_proto::raw_ledger_service::raw_ledger_service_client::RawLedgerServiceClient;
use flowctl_proto::raw_ledger_service::StreamLedgersRequest;
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer_service::event_service_client::EventServiceClient;
use flowctl_proto::token_transfer_service::GetEventsRequest;

use crate::plan::{GrpcService, RunPlan};

/// When a check gives no end ledger for the event stream, it asks for this many ledgers.
pub const DEFAULT_EVENT_RANGE: u32 = 5;

/// Once the first event has arrived, how long to keep reading to count the rest of the range.
const COUNT_GRACE: Duration = Duration::from_secs(5);

/// One stream to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCheck {
    /// The component serving the stream.
    pub component: String,
    /// The components reading from it (for the report line).
    pub consumers: Vec<String>,
    /// Where flowctl reaches its gRPC port (a published port, or its network address).
    pub address: SocketAddr,
    /// Which service (and so which method) to call.
    pub service: GrpcService,
    /// First ledger to ask for (`grpc.verify.start_ledger`).
    pub start_ledger: u32,
    /// Last ledger (inclusive) for the event stream; `None` means a short default range.
    pub end_ledger: Option<u32>,
}

impl StreamCheck {
    fn flow(&self) -> String {
        if self.consumers.is_empty() {
            self.component.clone()
        } else {
            format!("{} → {}", self.component, self.consumers.join(", "))
        }
    }

    fn event_range(&self) -> (u32, u32) {
        let end = self.end_ledger.unwrap_or_else(|| {
            self.start_ledger
                .saturating_add(DEFAULT_EVENT_RANGE.saturating_sub(1))
        });
        (self.start_ledger, end)
    }
}

/// What a successful check saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamReport {
    /// `component → consumers`.
    pub flow: String,
    /// The service that was verified.
    pub service: GrpcService,
    /// The ledger of the first message.
    pub first_ledger: u32,
    /// From opening the stream to the first message.
    pub first_after: Duration,
    /// For event streams: events counted, the range asked for, and whether the range ended.
    pub events: Option<EventCount>,
}

/// Events seen on a bounded event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount {
    /// Events received.
    pub count: u64,
    /// The range asked for (inclusive).
    pub start_ledger: u32,
    /// The range asked for (inclusive).
    pub end_ledger: u32,
    /// Whether the server ended the stream (the whole range was delivered).
    pub complete: bool,
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.first_after.as_millis();
        match &self.events {
            None => write!(
                f,
                "{}: streaming (first ledger {} in {ms} ms)",
                self.flow, self.first_ledger
            ),
            Some(events) => {
                write!(
                    f,
                    "{}: streaming (first event at ledger {} in {ms} ms; {} events for ledgers {}-{}",
                    self.flow,
                    self.first_ledger,
                    events.count,
                    events.start_ledger,
                    events.end_ledger
                )?;
                if !events.complete {
                    write!(f, " so far")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// Why a check failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The gRPC port did not accept a connection within the timeout.
    Connect(String),
    /// The server answered with an error status.
    Status(Status),
    /// Nothing arrived within the timeout.
    Timeout(Duration),
    /// The server ended the stream without a single message.
    EmptyStream,
    /// A message arrived but is not what the contract promises.
    Invalid(String),
}

/// A failed check, naming the component, the service and its address.
#[derive(Debug, Clone)]
pub struct VerifyError {
    /// The component whose stream failed.
    pub component: String,
    /// The service called.
    pub service: GrpcService,
    /// The address called.
    pub address: SocketAddr,
    /// What went wrong.
    pub failure: Failure,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}/{} at {}: ",
            self.component,
            self.service.name(),
            self.service.method(),
            self.address
        )?;
        match &self.failure {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Status(status) => {
                write!(f, "gRPC status {:?}: {}", status.code(), status.message())
            }
            Failure::Timeout(after) => {
                write!(f, "no message within {} s", after.as_secs_f64())
            }
            Failure::EmptyStream => write!(f, "the stream ended without a message"),
            Failure::Invalid(why) => write!(f, "unexpected message: {why}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The checks for the components of `plan` that declare `grpc:`, reached at the addresses in
/// `reach` (`(container port, address flowctl reaches it at)` by component id), plus notes
/// about declared streams that cannot be checked.
pub fn checks_for(
    plan: &RunPlan,
    reach: &BTreeMap<String, Vec<(u16, SocketAddr)>>,
) -> (Vec<StreamCheck>, Vec<String>) {
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    for component in &plan.components {
        let Some(grpc) = &component.grpc else {
            continue;
        };
        let id = &component.id;
        let service = grpc.service;
        if service.is_v1() {
            continue; // the relay carries (and so proves) flowctl.v1 streams
        }
        let Some(start_ledger) = grpc.start_ledger else {
            notes.push(format!(
                "{id}: not verified (set grpc.verify.start_ledger to verify {service})"
            ));
            continue;
        };
        let address = reach
            .get(id)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|(container, _)| *container == grpc.container_port)
            })
            .map(|(_, address)| *address);
        let Some(address) = address else {
            notes.push(format!(
                "{id}: not verified (gRPC port {} is not published)",
                grpc.container_port
            ));
            continue;
        };
        checks.push(StreamCheck {
            component: id.clone(),
            consumers: plan
                .components
                .iter()
                .filter(|c| c.inputs.contains(id))
                .map(|c| c.id.clone())
                .collect(),
            address,
            service,
            start_ledger,
            end_ledger: grpc.end_ledger,
        });
    }
    (checks, notes)
}

/// Runs every check in order, each with `timeout` for the first message, and returns one result
/// per check. Checks run one after the other so their timings do not disturb each other.
pub fn verify_streams(
    checks: &[StreamCheck],
    timeout: Duration,
) -> Vec<Result<StreamReport, VerifyError>> {
    let runtime = match crate::runtime::shared() {
        Ok(runtime) => runtime,
        Err(e) => {
            let failure = Failure::Connect(format!("{e}"));
            return checks
                .iter()
                .map(|check| Err(error(check, failure.clone())))
                .collect();
        }
    };
    checks
        .iter()
        .map(|check| {
            runtime
                .block_on(verify(check, timeout))
                .map_err(|failure| error(check, failure))
        })
        .collect()
}

fn error(check: &StreamCheck, failure: Failure) -> VerifyError {
    VerifyError {
        component: check.component.clone(),
        service: check.service,
        address: check.address,
        failure,
    }
}

async fn verify(check: &StreamCheck, timeout: Duration) -> Result<StreamReport, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let channel = connect(check.address, deadline, timeout).await?;
        let result = match check.service {
            GrpcService::RawLedgers => raw_ledgers(check, channel, deadline, timeout).await,
            GrpcService::TokenTransferEvents => events(check, channel, deadline, timeout).await,
            GrpcService::V1Source | GrpcService::V1Processor | GrpcService::V1Consumer => {
                Err(Failure::Status(tonic::Status::unimplemented(
                    "flowctl.v1 streams are relayed, not verified",
                )))
            }
        };
        // UNAVAILABLE before the first message means "not serving yet" (e.g. the processor
        // has not reached its source); anything else is the answer.
        match result {
            Err(Failure::Status(status))
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() + backoff < deadline =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Connects, retrying a refused connection until the deadline: a component may report healthy
/// a moment before its gRPC listener is up.
async fn connect(
    address: SocketAddr,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<Channel, Failure> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Failure::Connect(e.to_string()))?
        .connect_timeout(timeout);
    let mut backoff = Duration::from_millis(50);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                if tokio::time::Instant::now() + backoff >= deadline {
                    return Err(Failure::Connect(error_chain(&e)));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn raw_ledgers(
    check: &StreamCheck,
    channel: Channel,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<StreamReport, Failure> {
    let mut client = RawLedgerServiceClient::new(channel);
    let opened = Instant::now();
    let request = StreamLedgersRequest {
        start_ledger: check.start_ledger,
    };
    let first = tokio::time::timeout_at(deadline, async {
        let mut stream = client
            .stream_raw_ledgers(request)
            .await
            .map_err(Failure::Status)?
            .into_inner();
        match stream.next().await {
            Some(Ok(ledger)) => Ok(ledger),
            Some(Err(status)) => Err(Failure::Status(status)),
            None => Err(Failure::EmptyStream),
        }
        // Dropping the stream here cancels it; a live source would stream forever.
    })
    .await
    .map_err(|_| Failure::Timeout(timeout))??;
    let first_after = opened.elapsed();
    if first.sequence < check.start_ledger {
        return Err(Failure::Invalid(format!(
            "asked for ledgers from {}, got ledger {}",
            check.start_ledger, first.sequence
        )));
    }
    if first.ledger_close_meta_xdr.is_empty() {
        return Err(Failure::Invalid(format!(
            "ledger {} has no LedgerCloseMeta XDR",
            first.sequence
        )));
    }
    Ok(StreamReport {
        flow: check.flow(),
        service: check.service,
        first_ledger: first.sequence,
        first_after,
        events: None,
    })
}

async fn events(
    check: &StreamCheck,
    channel: Channel,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<StreamReport, Failure> {
    let (start_ledger, end_ledger) = check.event_range();
    let mut client = EventServiceClient::new(channel);
    let opened = Instant::now();
    let request = GetEventsRequest {
        start_ledger,
        end_ledger,
    };
    let (mut stream, first) = tokio::time::timeout_at(deadline, async {
        let mut stream = client
            .get_ttp_events(request)
            .await
            .map_err(Failure::Status)?
            .into_inner();
        match stream.next().await {
            Some(Ok(event)) => Ok((stream, event)),
            Some(Err(status)) => Err(Failure::Status(status)),
            None => Err(Failure::EmptyStream),
        }
    })
    .await
    .map_err(|_| Failure::Timeout(timeout))??;
    let first_after = opened.elapsed();
    let in_range = |ledger: u32| (start_ledger..=end_ledger).contains(&ledger);
    let first_ledger = match (&first.meta, &first.event) {
        (None, _) => return Err(Failure::Invalid("event without meta".into())),
        (_, None) => {
            return Err(Failure::Invalid(
                "event without a transfer, mint, burn, clawback or fee".into(),
            ))
        }
        (Some(meta), Some(_)) if !in_range(meta.ledger_sequence) => {
            return Err(Failure::Invalid(format!(
                "asked for ledgers {start_ledger}-{end_ledger}, got an event of ledger {}",
                meta.ledger_sequence
            )))
        }
        (
            Some(meta),
            Some(
                Event::Transfer(_)
                | Event::Mint(_)
                | Event::Burn(_)
                | Event::Clawback(_)
                | Event::Fee(_),
            ),
        ) => meta.ledger_sequence,
    };

    // Count the rest of the range, briefly: the report shows that more than one event flows,
    // but a slow or live tail must not hold up the pipeline.
    let mut count = 1u64;
    let grace_end = tokio::time::Instant::now() + COUNT_GRACE;
    let complete = loop {
        match tokio::time::timeout_at(grace_end, stream.next()).await {
            Ok(Some(Ok(_))) => count += 1,
            Ok(Some(Err(status))) => return Err(Failure::Status(status)),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    Ok(StreamReport {
        flow: check.flow(),
        service: check.service,
        first_ledger,
        first_after,
        events: Some(EventCount {
            count,
            start_ledger,
            end_ledger,
            complete,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;

    use tokio_stream::Stream;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Code, Request, Response};

    use flowctl_proto::raw_ledger_service::raw_ledger_service_server::{
        RawLedgerService, RawLedgerServiceServer,
    };
    use flowctl_proto::raw_ledger_service::RawLedger;
    use flowctl_proto::token_transfer::{EventMeta, Fee, TokenTransferEvent};
    use flowctl_proto::token_transfer_service::event_service_server::{
        EventService, EventServiceServer,
    };

    type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// How the in-process component behaves.
    #[derive(Clone, Copy)]
    enum Behaviour {
        Serve,
        Refuse,
        Hang,
        Empty,
        WrongLedger,
    }

    struct Component(Behaviour);

    fn stream_of<T: Send + 'static>(
        behaviour: Behaviour,
        items: Vec<T>,
    ) -> Result<Response<BoxStream<T>>, Status> {
        let stream: BoxStream<T> = match behaviour {
            Behaviour::Refuse => return Err(Status::failed_precondition("data lake is empty")),
            Behaviour::Hang => Box::pin(tokio_stream::pending()),
            Behaviour::Empty => Box::pin(tokio_stream::empty()),
            Behaviour::Serve | Behaviour::WrongLedger => {
                Box::pin(tokio_stream::iter(items.into_iter().map(Ok)))
            }
        };
        Ok(Response::new(stream))
    }

    #[tonic::async_trait]
    impl RawLedgerService for Component {
        type StreamRawLedgersStream = BoxStream<RawLedger>;
        async fn stream_raw_ledgers(
            &self,
            request: Request<StreamLedgersRequest>,
        ) -> Result<Response<Self::StreamRawLedgersStream>, Status> {
            let mut start = request.into_inner().start_ledger;
            if let Behaviour::WrongLedger = self.0 {
                start -= 1;
            }
            let ledgers = (start..start + 100)
                .map(|sequence| RawLedger {
                    sequence,
                    ledger_close_meta_xdr: vec![0, 0, 0, 1],
                })
                .collect();
            stream_of(self.0, ledgers)
        }
    }

    #[tonic::async_trait]
    impl EventService for Component {
        type GetTTPEventsStream = BoxStream<TokenTransferEvent>;
        async fn get_ttp_events(
            &self,
            request: Request<GetEventsRequest>,
        ) -> Result<Response<Self::GetTTPEventsStream>, Status> {
            let GetEventsRequest {
                start_ledger,
                end_ledger,
            } = request.into_inner();
            // Two fee events per ledger.
            let events = (start_ledger..=end_ledger)
                .flat_map(|ledger| [ledger, ledger])
                .map(|ledger_sequence| TokenTransferEvent {
                    meta: Some(EventMeta {
                        ledger_sequence,
                        ..Default::default()
                    }),
                    event: Some(Event::Fee(Fee {
                        from: "GA".into(),
                        asset: None,
                        amount: "100".into(),
                    })),
                })
                .collect();
            stream_of(self.0, events)
        }
    }

    /// Serves both services with `behaviour` on loopback until dropped.
    struct Served {
        address: SocketAddr,
        _runtime: tokio::runtime::Runtime,
    }

    fn serve(behaviour: Behaviour) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(RawLedgerServiceServer::new(Component(behaviour)))
                .add_service(EventServiceServer::new(Component(behaviour)))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        Served {
            address,
            _runtime: runtime,
        }
    }

    /// Answers UNAVAILABLE to its first `failures` calls, then streams.
    struct Flaky {
        failures: usize,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[tonic::async_trait]
    impl RawLedgerService for Flaky {
        type StreamRawLedgersStream = BoxStream<RawLedger>;
        async fn stream_raw_ledgers(
            &self,
            request: Request<StreamLedgersRequest>,
        ) -> Result<Response<Self::StreamRawLedgersStream>, Status> {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if call < self.failures {
                return Err(Status::unavailable("source not reachable yet"));
            }
            let ledger = RawLedger {
                sequence: request.into_inner().start_ledger,
                ledger_close_meta_xdr: vec![1],
            };
            Ok(Response::new(Box::pin(tokio_stream::iter([Ok(ledger)]))))
        }
    }

    fn serve_flaky(failures: usize) -> Served {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        let flaky = Flaky {
            failures,
            calls: Default::default(),
        };
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(RawLedgerServiceServer::new(flaky))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        Served {
            address,
            _runtime: runtime,
        }
    }

    #[test]
    fn unavailable_is_retried_until_the_stream_serves() {
        let served = serve_flaky(2);
        let report = verify_one(check(served.address, GrpcService::RawLedgers), GENEROUS).unwrap();
        assert_eq!(report.first_ledger, 1000);
    }

    #[test]
    fn unavailable_until_the_timeout_is_reported_as_such() {
        let served = serve_flaky(usize::MAX);
        let err = verify_one(
            check(served.address, GrpcService::RawLedgers),
            Duration::from_secs(1),
        )
        .unwrap_err();
        match &err.failure {
            Failure::Status(status) => assert_eq!(status.code(), Code::Unavailable, "{err}"),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }

    fn check(address: SocketAddr, service: GrpcService) -> StreamCheck {
        StreamCheck {
            component: "stellar-live-source-datalake".into(),
            consumers: vec!["ttp-processor".into()],
            address,
            service,
            start_ledger: 1000,
            end_ledger: None,
        }
    }

    fn verify_one(check: StreamCheck, timeout: Duration) -> Result<StreamReport, VerifyError> {
        verify_streams(&[check], timeout).remove(0)
    }

    const GENEROUS: Duration = Duration::from_secs(30);

    #[test]
    fn raw_ledger_stream_reports_the_first_ledger() {
        let served = serve(Behaviour::Serve);
        let report = verify_one(check(served.address, GrpcService::RawLedgers), GENEROUS).unwrap();
        assert_eq!(report.first_ledger, 1000);
        assert_eq!(report.events, None);
        let line = report.to_string();
        assert!(
            line.starts_with(
                "stellar-live-source-datalake → ttp-processor: streaming (first ledger 1000 in "
            ),
            "{line}"
        );
    }

    #[test]
    fn event_stream_counts_a_bounded_range() {
        let served = serve(Behaviour::Serve);
        let mut check = check(served.address, GrpcService::TokenTransferEvents);
        check.component = "ttp-processor".into();
        check.consumers = vec!["consumer-app".into()];
        let report = verify_one(check.clone(), GENEROUS).unwrap();
        assert_eq!(report.first_ledger, 1000);
        assert_eq!(
            report.events,
            Some(EventCount {
                count: 2 * u64::from(DEFAULT_EVENT_RANGE),
                start_ledger: 1000,
                end_ledger: 1000 + DEFAULT_EVENT_RANGE - 1,
                complete: true,
            })
        );
        assert!(report
            .to_string()
            .ends_with("10 events for ledgers 1000-1004)"));

        check.end_ledger = Some(1001);
        let report = verify_one(check, GENEROUS).unwrap();
        assert_eq!(report.events.unwrap().count, 4);
    }

    #[test]
    fn an_error_status_is_reported_with_component_and_code() {
        let served = serve(Behaviour::Refuse);
        let err = verify_one(check(served.address, GrpcService::RawLedgers), GENEROUS).unwrap_err();
        match &err.failure {
            Failure::Status(status) => assert_eq!(status.code(), Code::FailedPrecondition),
            other => panic!("expected a status, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "stellar-live-source-datalake: raw_ledger_service.RawLedgerService/StreamRawLedgers at {}",
                served.address
            )),
            "{text}"
        );
        assert!(
            text.contains("FailedPrecondition: data lake is empty"),
            "{text}"
        );
    }

    #[test]
    fn silence_times_out() {
        let served = serve(Behaviour::Hang);
        for service in GrpcService::ALL.into_iter().filter(|s| !s.is_v1()) {
            let err =
                verify_one(check(served.address, service), Duration::from_millis(300)).unwrap_err();
            assert!(
                matches!(err.failure, Failure::Timeout(_)),
                "{service}: {err}"
            );
        }
    }

    #[test]
    fn an_empty_stream_fails() {
        let served = serve(Behaviour::Empty);
        for service in GrpcService::ALL.into_iter().filter(|s| !s.is_v1()) {
            let err = verify_one(check(served.address, service), GENEROUS).unwrap_err();
            assert!(
                matches!(err.failure, Failure::EmptyStream),
                "{service}: {err}"
            );
        }
    }

    #[test]
    fn a_ledger_before_the_start_is_invalid() {
        let served = serve(Behaviour::WrongLedger);
        let err = verify_one(check(served.address, GrpcService::RawLedgers), GENEROUS).unwrap_err();
        assert!(matches!(err.failure, Failure::Invalid(_)), "{err}");
        assert!(err.to_string().contains("got ledger 999"), "{err}");
    }

    #[test]
    fn a_closed_port_is_a_connect_failure() {
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = verify_one(
            check(address, GrpcService::RawLedgers),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err.failure, Failure::Connect(_)), "{err}");
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }

    #[test]
    fn checks_come_from_the_grpc_fields_of_the_plan() {
        let yaml = "
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: p}
spec:
  sources:
    - id: src
      image: i
      grpc: {port: 50052, service: raw_ledger_service.RawLedgerService, verify: {start_ledger: 7}}
  processors:
    - id: proc
      image: i
      inputs: [src]
      grpc: {port: 50051, service: token_transfer_service.EventService, verify: {start_ledger: 7, end_ledger: 9}}
    - id: unverified
      image: i
      inputs: [src]
      grpc: {port: 50051, service: token_transfer_service.EventService}
  sinks:
    - id: sink
      image: i
      inputs: [proc]
";
        let file = crate::spec::parse(yaml, "test").unwrap();
        let plan = RunPlan::build(
            &file,
            std::path::Path::new("."),
            &crate::plan::Naming::default(),
        )
        .unwrap();
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let reach = BTreeMap::from([
            ("src".to_string(), vec![(50052, at(40001))]),
            ("proc".to_string(), vec![(50051, at(40002))]),
            ("unverified".to_string(), vec![(50051, at(40003))]),
        ]);
        let (checks, notes) = checks_for(&plan, &reach);
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert_eq!(checks[0].component, "src");
        assert_eq!(checks[0].consumers, ["proc", "unverified"]);
        assert_eq!(checks[0].address, SocketAddr::from(([127, 0, 0, 1], 40001)));
        assert_eq!(checks[0].service, GrpcService::RawLedgers);
        assert_eq!(checks[0].start_ledger, 7);
        assert_eq!(checks[1].component, "proc");
        assert_eq!(checks[1].consumers, ["sink"]);
        assert_eq!(checks[1].event_range(), (7, 9));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("unverified: not verified (set grpc.verify.start_ledger"));

        // A component whose port was not recorded (not started) is noted, not checked.
        let (checks, notes) = checks_for(&plan, &BTreeMap::new());
        assert!(checks.is_empty());
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn service_names_round_trip() {
        for service in GrpcService::ALL {
            assert_eq!(GrpcService::from_name(service.name()), Some(service));
        }
        assert_eq!(GrpcService::from_name("RawLedgerService"), None);
    }
}
