//! `ttp-processor-v1`: serves `flowctl.v1.ProcessorService`. `Process` takes `stellar.ledger.v1`
//! events and answers, for each, one `stellar.token.transfer.v1` event per token transfer, in
//! ledger order: the same events as `ttp-processor` (extracted by `stellar_ttp`).
//!
//! Output events, as upstream's `ttp-processor-sdk` writes them: type
//! `stellar.token.transfer.v1`, payload a `token_transfer.TokenTransferEvent` (the message
//! `ttp-processor` streams), content type
//! `application/protobuf; message=token_transfer.TokenTransferEvent`, id
//! `token-transfer-<ledger>-<i>` (`i` from 0 within the ledger, as upstream), `stellar_cursor`
//! `{ledger_sequence, index_in_ledger: i + 1}` (0 stands for the ledger itself), metadata: the
//! input event's plus `ledger_sequence` and `event_type` (`transfer`, `mint`, `burn`, `clawback`,
//! `fee`), and the ledger's close time as `timestamp`. Events of other types are skipped, as
//! upstream does; a ledger event that cannot be decoded ends the call with `INVALID_ARGUMENT`
//! naming the event.
//!
//! The service itself ([`LedgerProcessor`]) is the ledger plumbing that `stellar-ledger-processor`
//! shares ([`LedgerTransform`] is what each makes of a ledger).
//!
//! Ledgers are decoded and extracted on blocking threads, up to `WORKERS` at once, and answered
//! in the order they came; at most that many ledgers (plus a bounded queue of answered ledgers)
//! are held, so a slow reader of the output slows the reading of the input (HTTP/2 flow control
//! does the rest). A ledger's events are queued as one batch and flattened by the response
//! stream, so they are all ready when gRPC encodes: each HTTP/2 write carries many events
//! (queued one by one, the encoder often found a single event ready and wrote it alone).

use std::collections::HashMap;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ComponentType, HealthCheckRequest, HealthCheckResponse, StellarCursor,
};
use prost::bytes::BytesMut;
use prost::Message;
use stellar_components::grpc;
use stellar_components::shutdown::{Shutdown, UntilShutdown};
use stellar_ttp::events::{event_kind, Extractor};
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::component::{self, V1Identity};
use crate::services::processor_service_server::{ProcessorService, ProcessorServiceServer};
use crate::wire::{put_event, Encoded, EventFields, LedgerEventIn, RawLedgerIn};
use crate::{content_types, event_types};

/// How the processor describes itself.
pub const IDENTITY: V1Identity = V1Identity {
    name: "ttp-processor-v1",
    description:
        "Token transfer events (transfer, mint, burn, clawback, fee) from stellar.ledger.v1 events",
    component_type: ComponentType::Processor,
    input_event_types: &[event_types::STELLAR_LEDGER],
    output_event_types: &[event_types::TOKEN_TRANSFER],
    metric_keys: stellar_components::processor::IDENTITY.metric_keys,
    port_variables: &["PORT"],
    default_port: stellar_components::processor::DEFAULT_LISTEN,
};

/// Answered ledgers (batches of events) queued per call ahead of the caller.
const OUTPUT_QUEUE: usize = 4;
/// Bytes reserved per output event (the buffer grows if they are larger).
const ENCODED_EVENT_GUESS: usize = 512;
const MAX_DEFAULT_WORKERS: usize = 4;

/// The processor's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorV1Config {
    /// `NETWORK_PASSPHRASE` (required, as upstream).
    pub network_passphrase: String,
    /// `WORKERS` (ours): ledgers decoded at once per call; default one per core, at most 4.
    pub workers: usize,
}

impl ProcessorV1Config {
    /// Reads the process environment. The error names the variable.
    pub fn from_env() -> Result<ProcessorV1Config, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`ProcessorV1Config::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ProcessorV1Config, String> {
        let get = |key: &str| {
            lookup(key)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let network_passphrase = get("NETWORK_PASSPHRASE")
            .ok_or("NETWORK_PASSPHRASE is required (e.g. \"Test SDF Network ; September 2015\")")?;
        let workers = match get("WORKERS") {
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|workers| *workers > 0)
                .ok_or(format!("WORKERS: {value:?} is not a positive number"))?,
            None => std::thread::available_parallelism()
                .map_or(1, |cores| cores.get())
                .min(MAX_DEFAULT_WORKERS),
        };
        Ok(ProcessorV1Config {
            network_passphrase,
            workers,
        })
    }
}

/// Takes an extractor (they hold buffers worth reusing between ledgers) from `pool` (or a new one for `network_passphrase`), runs `f` with it
/// and puts it back.
pub fn with_extractor<T>(
    pool: &Mutex<Vec<Extractor>>,
    network_passphrase: &str,
    f: impl FnOnce(&mut Extractor) -> T,
) -> T {
    let mut extractor = pool
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .pop()
        .unwrap_or_else(|| Extractor::new(network_passphrase));
    let out = f(&mut extractor);
    pool.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(extractor);
    out
}

/// What a processor makes of one ledger: its output events, encoded, in order. Runs on a
/// blocking thread, several ledgers at once.
pub trait LedgerTransform: Send + Sync + 'static {
    /// The events for the ledger `sequence` (`meta`), which came in `event`. An error ends the
    /// call with that status.
    fn transform(
        &self,
        event: &LedgerEventIn,
        sequence: u32,
        meta: &LedgerCloseMeta,
    ) -> Result<Vec<Encoded>, Status>;
}

/// A `flowctl.v1.ProcessorService` taking `stellar.ledger.v1` events and answering what its
/// [`LedgerTransform`] makes of each ledger, in input order.
#[derive(Clone)]
pub struct LedgerProcessor {
    workers: usize,
    info: Arc<ComponentInfo>,
    metrics: Metrics,
    transform: Arc<dyn LedgerTransform>,
    shutdown: Shutdown,
}

impl LedgerProcessor {
    /// A service decoding up to `workers` ledgers at once, answering `GetInfo` with `info`,
    /// reporting into `metrics`; its output streams end when `shutdown` starts.
    pub fn new(
        workers: usize,
        transform: Arc<dyn LedgerTransform>,
        info: Arc<ComponentInfo>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> LedgerProcessor {
        LedgerProcessor {
            workers,
            info,
            metrics,
            transform,
            shutdown,
        }
    }

    /// `ttp-processor-v1`'s service for `config`.
    pub fn token_transfers(
        config: ProcessorV1Config,
        info: Arc<ComponentInfo>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> LedgerProcessor {
        let transform = Arc::new(TokenTransfers::new(&config, &info.id));
        LedgerProcessor::new(config.workers, transform, info, metrics, shutdown)
    }
}

#[tonic::async_trait]
impl ProcessorService for LedgerProcessor {
    type ProcessStream = UntilShutdown<Flattened>;

    async fn get_info(&self, _request: Request<()>) -> Result<Response<ComponentInfo>, Status> {
        Ok(Response::new(self.info.as_ref().clone()))
    }

    async fn health_check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let include_details = request.into_inner().include_details;
        Ok(Response::new(component::health_check(
            &self.metrics,
            include_details,
            Vec::new,
        )))
    }

    async fn process(
        &self,
        request: Request<Streaming<LedgerEventIn>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let client = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "client".to_string());
        log::info!(
            "{client}: processing stellar.ledger.v1 events ({} workers)",
            self.workers
        );
        let (pending_tx, pending_rx) = mpsc::channel(self.workers);
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let ledger_work = LedgerWork {
            transform: self.transform.clone(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(read_input(
            request.into_inner(),
            ledger_work,
            pending_tx,
            client.clone(),
        ));
        tokio::spawn(answer_in_order(
            pending_rx,
            out_tx,
            self.metrics.clone(),
            client,
        ));
        Ok(Response::new(UntilShutdown::new(
            Flattened::new(out_rx),
            self.shutdown.clone(),
        )))
    }
}

/// One answered ledger's events, or the error that ends the call.
type Batch = Result<Vec<Encoded>, Status>;

/// The response stream: the queued batches, one event at a time.
pub struct Flattened {
    batches: mpsc::Receiver<Batch>,
    current: std::vec::IntoIter<Encoded>,
}

impl Flattened {
    fn new(batches: mpsc::Receiver<Batch>) -> Flattened {
        Flattened {
            batches,
            current: Vec::new().into_iter(),
        }
    }
}

impl Stream for Flattened {
    type Item = Result<Encoded, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(event) = self.current.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            match ready!(self.batches.poll_recv(cx)) {
                Some(Ok(batch)) => self.current = batch.into_iter(),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// One ledger's extraction, running on a blocking thread; its result is the ledger's sequence
/// and events.
type Pending = JoinHandle<Result<(u32, Vec<Encoded>), Status>>;

/// What turning a ledger event into output events needs.
#[derive(Clone)]
struct LedgerWork {
    transform: Arc<dyn LedgerTransform>,
    metrics: Metrics,
}

/// Reads the input stream and starts each ledger's extraction, handing the pending results on in
/// input order. Stops when the input ends (the caller closed its side), when it fails, or when
/// the answering side is gone.
async fn read_input(
    mut input: Streaming<LedgerEventIn>,
    work: LedgerWork,
    pending: mpsc::Sender<Pending>,
    client: String,
) {
    let mut skipped_types: Vec<String> = Vec::new();
    loop {
        let next = tokio::select! {
            next = input.message() => next,
            _ = pending.closed() => return,
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(status) => {
                let status = Status::new(
                    status.code(),
                    format!("reading the input stream: {}", status.message()),
                );
                let _ = pending.send(tokio::spawn(async move { Err(status) })).await;
                return;
            }
        };
        if event.r#type != event_types::STELLAR_LEDGER {
            if !skipped_types.contains(&event.r#type) {
                log::warn!(
                    "{client}: skipping events of type {:?} (this processor takes {})",
                    event.r#type,
                    event_types::STELLAR_LEDGER
                );
                skipped_types.push(event.r#type);
            }
            continue;
        }
        let work = work.clone();
        let job = tokio::task::spawn_blocking(move || work.process(event));
        if pending.send(job).await.is_err() {
            return;
        }
    }
}

/// Awaits the pending extractions in input order and sends their events on; the first error
/// ends the output with that status.
async fn answer_in_order(
    mut pending: mpsc::Receiver<Pending>,
    out: mpsc::Sender<Batch>,
    metrics: Metrics,
    client: String,
) {
    let mut ledgers = 0u64;
    let mut events = 0u64;
    while let Some(job) = pending.recv().await {
        let result = job.await.unwrap_or_else(|e| {
            Err(Status::internal(format!(
                "a ledger's extraction failed: {e}"
            )))
        });
        match result {
            Ok((sequence, batch)) => {
                ledgers += 1;
                events += batch.len() as u64;
                metrics.add("success_count", 1.0);
                metrics.add("total_processed", 1.0);
                metrics.add("total_events_emitted", batch.len() as f64);
                metrics.set("last_processed_ledger", f64::from(sequence));
                if !batch.is_empty() && out.send(Ok(batch)).await.is_err() {
                    log::info!("{client}: output closed by the caller");
                    return;
                }
            }
            Err(status) => {
                log::error!("{client}: {}", status.message());
                let _ = out.send(Err(status)).await;
                return;
            }
        }
    }
    log::info!("{client}: input ended; answered {ledgers} ledgers with {events} events");
}

impl LedgerWork {
    /// The ledger's sequence and events; the latency and errors go into the metrics here, the
    /// counts in [`answer_in_order`], where ledgers are done in order.
    fn process(&self, event: LedgerEventIn) -> Result<(u32, Vec<Encoded>), Status> {
        let began = Instant::now();
        let result = self.ledger_events(event);
        match &result {
            Ok(_) => self
                .metrics
                .set("processing_latency_ms", began.elapsed().as_secs_f64() * 1e3),
            Err(_) => self.metrics.add("error_count", 1.0),
        }
        result
    }

    fn ledger_events(&self, event: LedgerEventIn) -> Result<(u32, Vec<Encoded>), Status> {
        let id = &event.id;
        let ledger = RawLedgerIn::decode(event.payload.clone()).map_err(|e| {
            Status::invalid_argument(format!(
                "event {id:?}: payload is not a stellar.v1.RawLedger: {e}"
            ))
        })?;
        let sequence = ledger.sequence;
        let meta = LedgerCloseMeta::from_xdr(&ledger.ledger_close_meta_xdr, Limits::none())
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "event {id:?}: ledger {sequence}: not an XDR LedgerCloseMeta: {e}"
                ))
            })?;
        let in_header = stellar_ttp::datalake::ledger_sequence(&meta);
        if in_header != sequence {
            return Err(Status::invalid_argument(format!(
                "event {id:?}: RawLedger.sequence {sequence} but its XDR is ledger {in_header}"
            )));
        }
        let events = self.transform.transform(&event, sequence, &meta)?;
        Ok((sequence, events))
    }
}

/// `ttp-processor-v1`'s transform: one `stellar.token.transfer.v1` event per token transfer.
struct TokenTransfers {
    network_passphrase: String,
    component_id: String,
    extractors: Mutex<Vec<Extractor>>,
}

impl TokenTransfers {
    fn new(config: &ProcessorV1Config, component_id: &str) -> TokenTransfers {
        TokenTransfers {
            network_passphrase: config.network_passphrase.clone(),
            component_id: component_id.to_string(),
            extractors: Mutex::default(),
        }
    }
}

impl LedgerTransform for TokenTransfers {
    fn transform(
        &self,
        event: &LedgerEventIn,
        sequence: u32,
        meta: &LedgerCloseMeta,
    ) -> Result<Vec<Encoded>, Status> {
        let id = &event.id;
        let transfers = with_extractor(&self.extractors, &self.network_passphrase, |x| {
            x.ledger_events(meta)
        })
        .map_err(|e| Status::internal(format!("event {id:?}: ledger {sequence}: {e:#}")))?;
        // Every event of the ledger carries the ledger event's metadata, its sequence and its
        // own `event_type`; they are encoded straight into one buffer, then cut per event.
        let sequence_text = sequence.to_string();
        let mut metadata = carried_metadata(event, &["ledger_sequence", "event_type"]);
        metadata.push(("ledger_sequence", &sequence_text));
        metadata.push(("event_type", ""));
        let kind_at = metadata.len() - 1;
        let mut buf = BytesMut::with_capacity(transfers.len() * ENCODED_EVENT_GUESS);
        let mut ends = Vec::with_capacity(transfers.len());
        for (index, transfer) in transfers.iter().enumerate() {
            let id = format!("token-transfer-{sequence}-{index}");
            metadata[kind_at].1 = event_kind(transfer);
            let fields = EventFields {
                id: &id,
                r#type: event_types::TOKEN_TRANSFER,
                metadata: &metadata,
                timestamp: transfer
                    .meta
                    .as_ref()
                    .and_then(|meta| meta.closed_at)
                    .map(|at| (at.seconds, at.nanos)),
                source_component_id: &self.component_id,
                content_type: content_types::TOKEN_TRANSFER,
                stellar_cursor: Some(StellarCursor {
                    ledger_sequence: u64::from(sequence),
                    index_in_ledger: u32::try_from(index + 1).unwrap_or(u32::MAX),
                }),
            };
            put_event(&mut buf, &fields, transfer);
            ends.push(buf.len());
        }
        let mut all = buf.freeze();
        let mut start = 0;
        let events = ends
            .into_iter()
            .map(|end| {
                let event = all.split_to(end - start);
                start = end;
                Encoded(event)
            })
            .collect();
        Ok(events)
    }
}

/// The input event's metadata without the keys the output events set themselves.
pub fn carried_metadata<'a>(event: &'a LedgerEventIn, own: &[&str]) -> Vec<(&'a str, &'a str)> {
    event
        .metadata
        .iter()
        .filter(|(key, _)| !own.contains(&key.as_str()))
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// The gRPC server for `service` on `listener`, until `shutdown` starts.
pub async fn serve(
    listener: TcpListener,
    service: LedgerProcessor,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = ProcessorServiceServer::new(service)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    component::serve(listener, component::server().add_service(server), shutdown).await
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    ledger_processor_main(&IDENTITY, args, |config, component_id| {
        Arc::new(TokenTransfers::new(config, component_id))
    })
}

/// The process of a ledger processor `identity` making of each ledger what `transform` (for
/// the settings and the component id) makes: the settings of [`ProcessorV1Config`], its
/// network in `GetInfo`'s metadata, served until SIGTERM/SIGINT.
pub fn ledger_processor_main(
    identity: &'static V1Identity,
    args: &[String],
    transform: impl FnOnce(&ProcessorV1Config, &str) -> Arc<dyn LedgerTransform>,
) -> ExitCode {
    component::main(
        identity,
        args,
        ProcessorV1Config::from_env,
        |config| {
            HashMap::from([(
                "network_passphrase".to_string(),
                config.network_passphrase.clone(),
            )])
        },
        |listener, config, running, shutdown| {
            log::info!(
                "serving flowctl.v1.ProcessorService on {}: network {:?}, {} workers",
                component::bound_address(&listener, &running),
                config.network_passphrase,
                config.workers
            );
            let transform = transform(&config, &running.info.id);
            let service = LedgerProcessor::new(
                config.workers,
                transform,
                running.info,
                running.metrics,
                shutdown.clone(),
            );
            serve(listener, service, shutdown)
        },
    )
}
