//! `ttp-processor`: serves `token_transfer_service.EventService` (docs/contract.md §2, §4). Each
//! `GetTTPEvents` call pulls raw ledgers from the source's `StreamRawLedgers`, decodes them and
//! extracts their token transfer events with `stellar_ttp`.
//!
//! A call runs as a small pipeline so receiving, decoding and sending overlap: an async task
//! pulls ledgers from the source and deals them in turn to worker threads (one per core by
//! default) through bounded queues; each worker decodes and extracts whole ledgers into its own
//! bounded queue (one entry per ledger, not per event); the response stream takes the workers'
//! results in the same turn order, so events keep ledger order, and flattens them. A bounded call
//! stops pulling right after ledger `end`, so it never waits for a ledger that may not exist yet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::ServiceType;
use flowctl_proto::raw_ledger_service::raw_ledger_service_client::RawLedgerServiceClient;
use flowctl_proto::raw_ledger_service::{RawLedger, StreamLedgersRequest};
use flowctl_proto::token_transfer::TokenTransferEvent;
use flowctl_proto::token_transfer_service::event_service_server::{
    EventService, EventServiceServer,
};
use flowctl_proto::token_transfer_service::GetEventsRequest;
use stellar_ttp::events::Extractor;
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::component::{self, config_error, Identity};
use crate::grpc;
use crate::shutdown::{self, Shutdown, UntilShutdown};
use crate::{event_types, EXIT_FAILURE};

/// How the processor registers and what `/health` reports (docs/contract.md §3).
pub const IDENTITY: Identity = Identity {
    name: "ttp-processor",
    service_type: ServiceType::Processor,
    input_event_types: &[event_types::RAW_LEDGER],
    output_event_types: &[event_types::TOKEN_TRANSFER],
    metric_keys: &[
        "success_count",
        "error_count",
        "total_processed",
        "total_events_emitted",
        "last_processed_ledger",
        "processing_latency_ms",
    ],
};

/// Upstream's default `PORT`.
pub const DEFAULT_LISTEN: &str = ":50051";
/// Upstream's default `SOURCE_SERVICE_ADDRESS`.
pub const DEFAULT_SOURCE: &str = "localhost:50052";
/// Raw ledgers buffered between the source and each worker.
const RAW_QUEUE: usize = 4;
/// Decoded ledgers (event batches) buffered between each worker and the client.
const BATCH_QUEUE: usize = 8;
/// Decoding workers per call when `TTP_WORKERS` is unset: one per core, at most this many.
const MAX_DEFAULT_WORKERS: usize = 4;
/// How long a call keeps retrying a source that is not reachable yet.
const SOURCE_RETRY_FOR: Duration = Duration::from_secs(15);
/// How often a call logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The processor's settings, from the environment.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// `PORT`.
    pub listen: SocketAddr,
    /// `NETWORK_PASSPHRASE` (required): contract addresses of assets depend on it.
    pub network_passphrase: String,
    /// `SOURCE_SERVICE_ADDRESS`, `host:port`.
    pub source_address: String,
    /// `TTP_WORKERS` (ours): decoding threads per call; one per core (at most 4) by default.
    pub workers: usize,
}

impl ProcessorConfig {
    /// Reads the process environment. The error names the variable.
    pub fn from_env() -> Result<ProcessorConfig, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`ProcessorConfig::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ProcessorConfig, String> {
        let get = |key: &str| {
            lookup(key)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let network_passphrase = get("NETWORK_PASSPHRASE").ok_or(
            "NETWORK_PASSPHRASE is required (e.g. \"Test SDF Network ; September 2015\")"
                .to_string(),
        )?;
        let listen = grpc::listen_addr(
            "PORT",
            &get("PORT").unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        )?;
        let source_address =
            get("SOURCE_SERVICE_ADDRESS").unwrap_or_else(|| DEFAULT_SOURCE.to_string());
        grpc::endpoint("SOURCE_SERVICE_ADDRESS", &source_address)?;
        let workers = match get("TTP_WORKERS") {
            Some(value) => match value.parse::<usize>() {
                Ok(workers) if (1..=64).contains(&workers) => workers,
                _ => {
                    return Err(format!(
                        "TTP_WORKERS: {value:?} is not a number from 1 to 64"
                    ))
                }
            },
            None => thread::available_parallelism()
                .map_or(1, |cores| cores.get())
                .min(MAX_DEFAULT_WORKERS),
        };
        Ok(ProcessorConfig {
            listen,
            network_passphrase,
            source_address,
            workers,
        })
    }
}

/// The ledgers a `GetTTPEvents` call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRange {
    pub start: u32,
    /// `None`: live, never ends.
    pub end: Option<u32>,
}

impl LedgerRange {
    /// Checks a request (docs/contract.md §2): inclusive, `end_ledger = 0` is live, and ours:
    /// `0 < end < start` is `INVALID_ARGUMENT`.
    pub fn of_request(request: &GetEventsRequest) -> Result<LedgerRange, Status> {
        let (start, end) = (request.start_ledger, request.end_ledger);
        if start == 0 {
            return Err(Status::invalid_argument(
                "start_ledger must be at least 1 (ledger 1 is the genesis ledger)",
            ));
        }
        if end != 0 && end < start {
            return Err(Status::invalid_argument(format!(
                "end_ledger {end} is before start_ledger {start} (0 means live)"
            )));
        }
        Ok(LedgerRange {
            start,
            end: (end != 0).then_some(end),
        })
    }

    /// True when `sequence` is past the range (never for a live range).
    pub fn is_past(&self, sequence: u32) -> bool {
        self.end.is_some_and(|end| sequence > end)
    }

    /// True when `sequence` is the last ledger of a bounded range (or past it).
    pub fn is_last(&self, sequence: u32) -> bool {
        self.end.is_some_and(|end| sequence >= end)
    }
}

impl std::fmt::Display for LedgerRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end {
            Some(end) => write!(f, "{}-{end}", self.start),
            None => write!(f, "{}- (live)", self.start),
        }
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct EventProcessor {
    source: Channel,
    source_address: String,
    network_passphrase: Arc<str>,
    workers: usize,
    metrics: Metrics,
    shutdown: Shutdown,
}

impl EventProcessor {
    /// A service pulling from `config.source_address` (connected lazily, per call), reporting
    /// into `metrics`, whose streams end when `shutdown` starts.
    pub fn new(
        config: &ProcessorConfig,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<EventProcessor, String> {
        let endpoint: Endpoint = grpc::endpoint("SOURCE_SERVICE_ADDRESS", &config.source_address)?;
        Ok(EventProcessor {
            source: endpoint.connect_lazy(),
            source_address: config.source_address.clone(),
            network_passphrase: config.network_passphrase.as_str().into(),
            workers: config.workers.max(1),
            metrics,
            shutdown,
        })
    }

    /// Opens the source stream, retrying briefly while the source is unreachable (it may be
    /// starting or restarting).
    async fn open_source(&self, start: u32) -> Result<Streaming<RawLedger>, Status> {
        let mut client = RawLedgerServiceClient::new(self.source.clone())
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);
        let deadline = Instant::now() + SOURCE_RETRY_FOR;
        let mut backoff = Duration::from_millis(100);
        loop {
            let request = StreamLedgersRequest {
                start_ledger: start,
            };
            match client.stream_raw_ledgers(request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    log::warn!(
                        "source {} unavailable ({}); retrying",
                        self.source_address,
                        status.message()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(status) => {
                    return Err(Status::new(
                        status.code(),
                        format!(
                            "source {}: StreamRawLedgers: {}",
                            self.source_address,
                            status.message()
                        ),
                    ))
                }
            }
        }
    }
}

#[tonic::async_trait]
impl EventService for EventProcessor {
    type GetTTPEventsStream = UntilShutdown<EventStream>;

    async fn get_ttp_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetTTPEventsStream>, Status> {
        let client = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "client".to_string());
        let range = LedgerRange::of_request(request.get_ref())?;
        log::info!(
            "{client}: token transfer events for ledgers {range} ({} workers)",
            self.workers
        );
        let upstream = match self.open_source(range.start).await {
            Ok(upstream) => upstream,
            Err(status) => {
                self.metrics.add("error_count", 1.0);
                log::error!("{client}: {}", status.message());
                return Err(status);
            }
        };
        let mut raw_senders = Vec::with_capacity(self.workers);
        let mut batch_receivers = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let (raw_tx, raw_rx) = mpsc::channel(RAW_QUEUE);
            let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
            let worker = Worker {
                extractor: Extractor::new(&self.network_passphrase),
                metrics: self.metrics.clone(),
            };
            thread::Builder::new()
                .name(format!("ttp-worker-{index}"))
                .spawn(move || worker.run(raw_rx, batch_tx))
                .map_err(|e| Status::resource_exhausted(format!("cannot start a worker: {e}")))?;
            raw_senders.push(raw_tx);
            batch_receivers.push(batch_rx);
        }
        let mut stream = EventStream::new(batch_receivers, self.metrics.clone(), client, range);
        let (alive, client_gone) = oneshot::channel();
        stream.alive = Some(alive);
        tokio::spawn(pull_ledgers(
            upstream,
            range,
            raw_senders,
            client_gone,
            self.metrics.clone(),
        ));
        Ok(Response::new(UntilShutdown::new(
            stream,
            self.shutdown.clone(),
        )))
    }
}

/// Deals the source's ledgers of `range` to the workers in turn (ledger `i` of the call to worker
/// `i % n`, errors too, so the response can collect them in order); returns right after the last
/// ledger of a bounded range, which drops (cancels) the source stream, or as soon as
/// `client_gone` fires (the response was dropped), even while waiting for a live ledger.
async fn pull_ledgers(
    mut upstream: Streaming<RawLedger>,
    range: LedgerRange,
    workers: Vec<mpsc::Sender<Result<RawLedger, Status>>>,
    mut client_gone: oneshot::Receiver<()>,
    metrics: Metrics,
) {
    let mut turn = 0;
    loop {
        let worker = &workers[turn];
        let item = tokio::select! {
            item = upstream.message() => item,
            _ = &mut client_gone => return,
            _ = worker.closed() => return,
        };
        let ledger = match item {
            Ok(Some(ledger)) => ledger,
            Ok(None) => {
                let message = match range.end {
                    Some(end) => format!("the source ended its stream before ledger {end}"),
                    None => "the source ended its live stream".to_string(),
                };
                metrics.add("error_count", 1.0);
                let _ = worker.send(Err(Status::unavailable(message))).await;
                return;
            }
            Err(status) => {
                metrics.add("error_count", 1.0);
                let status = Status::new(
                    status.code(),
                    format!("source stream: {}", status.message()),
                );
                let _ = worker.send(Err(status)).await;
                return;
            }
        };
        // A source with a gap could jump past the end; nothing beyond it belongs here.
        if range.is_past(ledger.sequence) {
            return;
        }
        if ledger.sequence < range.start {
            log::warn!(
                "the source sent ledger {} before the start",
                ledger.sequence
            );
            continue;
        }
        let last = range.is_last(ledger.sequence);
        if worker.send(Ok(ledger)).await.is_err() || last {
            return;
        }
        turn = (turn + 1) % workers.len();
    }
}

/// One decoded ledger's events.
#[derive(Debug)]
pub struct LedgerEvents {
    pub sequence: u32,
    pub events: Vec<TokenTransferEvent>,
    /// Time spent decoding and extracting.
    pub latency: Duration,
}

/// Decodes ledgers and extracts their events on a plain thread, off the async runtime. Every
/// ledger it is given yields exactly one [`LedgerEvents`] (or the error that ends the call), so
/// the response can take the workers' outputs in turn.
struct Worker {
    extractor: Extractor,
    metrics: Metrics,
}

impl Worker {
    fn run(
        mut self,
        mut raw_rx: mpsc::Receiver<Result<RawLedger, Status>>,
        batch_tx: mpsc::Sender<Result<LedgerEvents, Status>>,
    ) {
        while let Some(item) = raw_rx.blocking_recv() {
            let result = item.and_then(|ledger| {
                let began = Instant::now();
                self.process(&ledger)
                    .map(|events| LedgerEvents {
                        sequence: ledger.sequence,
                        events,
                        latency: began.elapsed(),
                    })
                    .map_err(|message| {
                        self.metrics.add("error_count", 1.0);
                        Status::internal(message)
                    })
            });
            let failed = result.is_err();
            if batch_tx.blocking_send(result).is_err() || failed {
                return;
            }
        }
    }

    fn process(&mut self, ledger: &RawLedger) -> Result<Vec<TokenTransferEvent>, String> {
        let meta = LedgerCloseMeta::from_xdr(&ledger.ledger_close_meta_xdr, Limits::none())
            .map_err(|e| {
                format!(
                    "ledger {}: not an XDR LedgerCloseMeta: {e}",
                    ledger.sequence
                )
            })?;
        let sequence = stellar_ttp::datalake::ledger_sequence(&meta);
        if sequence != ledger.sequence {
            return Err(format!(
                "the source sent ledger {sequence} labelled as {}",
                ledger.sequence
            ));
        }
        self.extractor
            .ledger_events(&meta)
            .map_err(|e| format!("ledger {sequence}: {e:#}"))
    }
}

/// Logs a call's progress every few seconds.
struct Progress {
    first: Option<u32>,
    ledgers: u64,
    events: u64,
    since: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            first: None,
            ledgers: 0,
            events: 0,
            since: Instant::now(),
        }
    }
}

impl Progress {
    fn add(&mut self, client: &str, sequence: u32, events: usize) {
        self.first.get_or_insert(sequence);
        self.ledgers += 1;
        self.events += events as u64;
        if self.since.elapsed() >= PROGRESS_EVERY {
            self.log(client, sequence);
        }
    }

    fn log(&mut self, client: &str, last: u32) {
        if let Some(first) = self.first.take() {
            let elapsed = self.since.elapsed().as_secs_f64().max(1e-6);
            log::info!(
                "{client}: sent ledgers {first}-{last}: {} ledgers, {} events ({:.0} \
                 ledgers/s, {:.0} events/s)",
                self.ledgers,
                self.events,
                self.ledgers as f64 / elapsed,
                self.events as f64 / elapsed
            );
        }
        self.ledgers = 0;
        self.events = 0;
        self.since = Instant::now();
    }
}

/// The response stream: the workers' per-ledger results taken in turn (so in ledger order), one
/// event at a time. It keeps the metrics, since it is where a ledger is really done.
pub struct EventStream {
    workers: Vec<mpsc::Receiver<Result<LedgerEvents, Status>>>,
    turn: usize,
    current: std::vec::IntoIter<TokenTransferEvent>,
    metrics: Metrics,
    client: String,
    range: LedgerRange,
    progress: Progress,
    done: bool,
    /// Dropped with the stream, which tells the task pulling from the source to stop.
    alive: Option<oneshot::Sender<()>>,
}

impl EventStream {
    /// The stream over `workers`' outputs, reporting into `metrics`.
    pub fn new(
        workers: Vec<mpsc::Receiver<Result<LedgerEvents, Status>>>,
        metrics: Metrics,
        client: String,
        range: LedgerRange,
    ) -> EventStream {
        EventStream {
            workers,
            turn: 0,
            current: Vec::new().into_iter(),
            metrics,
            client,
            range,
            progress: Progress::default(),
            done: false,
            alive: None,
        }
    }

    fn finish(&mut self, last: u32, why: &str) {
        self.done = true;
        self.progress.log(&self.client, last);
        log::info!("{}: {why}", self.client);
    }

    fn ledger_done(&mut self, ledger: &LedgerEvents) {
        // Per ledger, not per event: the metrics sit behind a lock shared with /health.
        let count = ledger.events.len();
        self.metrics.add("success_count", 1.0);
        self.metrics.add("total_processed", 1.0);
        self.metrics.add("total_events_emitted", count as f64);
        self.metrics
            .set("last_processed_ledger", f64::from(ledger.sequence));
        self.metrics
            .set("processing_latency_ms", ledger.latency.as_secs_f64() * 1e3);
        self.progress.add(&self.client, ledger.sequence, count);
    }
}

impl Stream for EventStream {
    type Item = Result<TokenTransferEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.current.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            if self.done || self.workers.is_empty() {
                return Poll::Ready(None);
            }
            let turn = self.turn;
            match self.workers[turn].poll_recv(cx) {
                Poll::Ready(Some(Ok(ledger))) => {
                    self.turn = (turn + 1) % self.workers.len();
                    self.ledger_done(&ledger);
                    if self.range.is_last(ledger.sequence) {
                        let range = self.range;
                        self.finish(ledger.sequence, &format!("range {range} done"));
                    }
                    self.current = ledger.events.into_iter();
                }
                Poll::Ready(Some(Err(status))) => {
                    log::error!("{}: {}", self.client, status.message());
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if !self.done {
            let last = self.metrics.get("last_processed_ledger") as u32;
            self.finish(
                last,
                "stream closed before its end (client gone or shutdown)",
            );
        }
    }
}

/// The gRPC server for `service` on `listener`, until `shutdown` starts.
pub async fn serve(
    listener: TcpListener,
    service: EventProcessor,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = EventServiceServer::new(service)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    grpc::server()
        .add_service(server)
        .serve_with_incoming_shutdown(component::incoming(listener), shutdown.wait())
        .await
}

/// The binary's entry point; `args` excludes the program name. `events ...` runs the offline
/// extraction (`stellar_ttp::offline`), `healthcheck` probes `/health`, no argument serves.
pub fn main(args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) == Some("events") {
        return match stellar_ttp::offline::run_events_command(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ttp-processor events: {e:#}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    if let Some(code) = component::server_arguments(
        IDENTITY.name,
        args,
        "[healthcheck | events ...]",
        "the server is configured by environment variables",
    ) {
        return code;
    }
    component::run(
        IDENTITY.name,
        ProcessorConfig::from_env,
        |env, config| async move {
            log::info!(
                "network {:?}, source {}, {} decoding workers per call",
                config.network_passphrase,
                config.source_address,
                config.workers
            );
            let metadata = HashMap::from([
                (
                    "network_passphrase".to_string(),
                    config.network_passphrase.clone(),
                ),
                ("source_address".to_string(), config.source_address.clone()),
                ("grpc_port".to_string(), config.listen.port().to_string()),
            ]);
            let running = component::start(&IDENTITY, env, metadata)?;
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("PORT: cannot listen on {}", config.listen))?;
            let (trigger, shutdown) = shutdown::channel();
            let service =
                match EventProcessor::new(&config, running.metrics.clone(), shutdown.clone()) {
                    Ok(service) => service,
                    Err(e) => return Ok(config_error(IDENTITY.name, e)),
                };
            log::info!(
                "serving token_transfer_service.EventService on {}",
                config.listen
            );
            Ok(component::serve_until_signalled(
                IDENTITY.name,
                serve(listener, service, shutdown),
                trigger,
            )
            .await)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<ProcessorConfig, String> {
        ProcessorConfig::from_lookup(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn network_passphrase_is_required_and_the_rest_has_defaults() {
        let err = config(&[]).unwrap_err();
        assert!(err.starts_with("NETWORK_PASSPHRASE is required"), "{err}");
        let config =
            config(&[("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015")]).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(config.source_address, "localhost:50052");
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let passphrase = ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015");
        let err = config(&[passphrase, ("PORT", "eighty")]).unwrap_err();
        assert!(err.starts_with("PORT:"), "{err}");
        let err = config(&[passphrase, ("SOURCE_SERVICE_ADDRESS", "bad address")]).unwrap_err();
        assert!(err.starts_with("SOURCE_SERVICE_ADDRESS:"), "{err}");
        let ok = config(&[
            passphrase,
            ("PORT", "50061"),
            ("SOURCE_SERVICE_ADDRESS", "src:1"),
        ])
        .unwrap();
        assert_eq!(ok.listen.port(), 50061);
        for bad in ["0", "many", "65"] {
            let err = config(&[passphrase, ("TTP_WORKERS", bad)]).unwrap_err();
            assert!(err.starts_with("TTP_WORKERS:"), "{err}");
        }
        let two = config(&[passphrase, ("TTP_WORKERS", "2")]).unwrap();
        assert_eq!(two.workers, 2);
    }

    fn range(start_ledger: u32, end_ledger: u32) -> Result<LedgerRange, Status> {
        LedgerRange::of_request(&GetEventsRequest {
            start_ledger,
            end_ledger,
        })
    }

    #[test]
    fn ranges_are_inclusive_zero_is_live_and_backwards_is_invalid() {
        let bounded = range(997, 998).unwrap();
        assert_eq!(bounded.end, Some(998));
        assert!(!bounded.is_last(997) && bounded.is_last(998) && bounded.is_past(999));
        let single = range(10077, 10077).unwrap();
        assert!(single.is_last(10077));
        let live = range(997, 0).unwrap();
        assert_eq!(live.end, None);
        assert!(!live.is_last(u32::MAX) && !live.is_past(u32::MAX));
        let err = range(998, 997).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("997") && err.message().contains("998"));
        assert_eq!(range(0, 5).unwrap_err().code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn the_response_takes_workers_in_turn_and_keeps_errors_in_order() {
        use tokio_stream::StreamExt;
        let event = |ledger_sequence| TokenTransferEvent {
            meta: Some(flowctl_proto::token_transfer::EventMeta {
                ledger_sequence,
                ..Default::default()
            }),
            event: None,
        };
        let ledger = |sequence, count| {
            Ok(LedgerEvents {
                sequence,
                events: (0..count).map(|_| event(sequence)).collect(),
                latency: Duration::from_millis(1),
            })
        };
        let (a_tx, a_rx) = mpsc::channel(4);
        let (b_tx, b_rx) = mpsc::channel(4);
        // Worker b finishes its ledgers first; the stream still yields ledger order.
        b_tx.send(ledger(11, 1)).await.unwrap();
        b_tx.send(ledger(13, 0)).await.unwrap();
        a_tx.send(ledger(10, 2)).await.unwrap();
        a_tx.send(ledger(12, 1)).await.unwrap();
        a_tx.send(Err(Status::internal("ledger 14: bad")))
            .await
            .unwrap();
        drop((a_tx, b_tx));
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let range = LedgerRange {
            start: 10,
            end: None,
        };
        let stream = EventStream::new(vec![a_rx, b_rx], metrics.clone(), "test".into(), range);
        let items: Vec<_> = stream.collect().await;
        let ledgers: Vec<u32> = items
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .map(|event| event.meta.as_ref().unwrap().ledger_sequence)
            .collect();
        assert_eq!(ledgers, [10, 10, 11, 12]);
        assert_eq!(items.len(), 5);
        assert_eq!(items[4].as_ref().unwrap_err().message(), "ledger 14: bad");
        assert_eq!(metrics.get("total_processed"), 4.0);
        assert_eq!(metrics.get("total_events_emitted"), 4.0);
        assert_eq!(metrics.get("last_processed_ledger"), 13.0);
    }

    #[tokio::test]
    async fn a_bounded_response_ends_at_its_last_ledger() {
        use tokio_stream::StreamExt;
        let (tx, rx) = mpsc::channel(4);
        for sequence in [5, 6] {
            tx.send(Ok(LedgerEvents {
                sequence,
                events: Vec::new(),
                latency: Duration::ZERO,
            }))
            .await
            .unwrap();
        }
        // The worker is still there (its sender open), yet the stream ends after ledger 6.
        let range = LedgerRange {
            start: 5,
            end: Some(6),
        };
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let stream = EventStream::new(vec![rx], metrics.clone(), "test".into(), range);
        assert_eq!(stream.collect::<Vec<_>>().await.len(), 0);
        assert_eq!(metrics.get("last_processed_ledger"), 6.0);
        drop(tx);
    }
}
