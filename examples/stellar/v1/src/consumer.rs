//! `consumer-app-v1`: serves `flowctl.v1.ConsumerService`. `Consume` prints each
//! `stellar.token.transfer.v1` event as one JSON line on stdout, byte for byte as `consumer-app`
//! prints it (`stellar_ttp::json`, the format of the upstream expected-events files), and when
//! the caller ends its stream answers `ConsumeResponse` with the counts and writes a summary
//! (`consumer-app`'s, same fields) on stderr.
//!
//! An event of another type, or whose payload is not a `token_transfer.TokenTransferEvent`, is
//! not printed: it counts in `events_failed` with an error naming the event (the first
//! [`MAX_ERRORS`] messages are returned). Calls may overlap (several processors feeding one
//! consumer): each line is written whole.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ComponentType, ConsumeResponse, HealthCheckRequest, HealthCheckResponse,
};
use flowctl_proto::token_transfer::TokenTransferEvent;
use prost::Message;
use stellar_components::consumer::{poll_once, print_events_setting, Tally};
use stellar_components::grpc;
use stellar_components::processor::LedgerRange;
use stellar_components::shutdown::Shutdown;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use crate::component::{self, V1Identity};
use crate::event_types;
use crate::services::consumer_service_server::{ConsumerService, ConsumerServiceServer};
use crate::wire::EventIn;

/// How the consumer describes itself.
pub const IDENTITY: V1Identity = V1Identity {
    name: "consumer-app-v1",
    description:
        "Prints stellar.token.transfer.v1 events as JSON lines (the upstream consumer's format)",
    component_type: ComponentType::Consumer,
    input_event_types: &[event_types::TOKEN_TRANSFER],
    output_event_types: &[],
    metric_keys: stellar_components::consumer::IDENTITY.metric_keys,
    port_variables: &["PORT"],
    default_port: ":50053",
};

/// Error messages returned per call at most (the count in `events_failed` is always complete).
pub const MAX_ERRORS: usize = 100;

/// The consumer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerV1Config {
    /// `PRINT_EVENTS` (as `consumer-app`, default `true`): `false` only counts.
    pub print_events: bool,
}

impl ConsumerV1Config {
    /// Reads the process environment. The error names the variable.
    pub fn from_env() -> Result<ConsumerV1Config, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`ConsumerV1Config::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ConsumerV1Config, String> {
        let print_events = print_events_setting(&lookup)?;
        Ok(ConsumerV1Config { print_events })
    }
}

/// Where the JSON lines go (stdout in the binary, a buffer in tests).
pub type Output = Arc<Mutex<dyn Write + Send>>;

/// The gRPC service.
#[derive(Clone)]
pub struct JsonLinesConsumer {
    config: ConsumerV1Config,
    info: Arc<ComponentInfo>,
    metrics: Metrics,
    out: Output,
}

impl JsonLinesConsumer {
    /// A service writing to `out`, answering `GetInfo` with `info`, reporting into `metrics`.
    pub fn new(
        config: ConsumerV1Config,
        info: Arc<ComponentInfo>,
        metrics: Metrics,
        out: Output,
    ) -> JsonLinesConsumer {
        JsonLinesConsumer {
            config,
            info,
            metrics,
            out,
        }
    }

    fn out(&self) -> MutexGuard<'_, dyn Write + Send + 'static> {
        // A panic while holding the lock leaves a writer behind; it is still usable.
        self.out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_line(&self, line: &str) -> Result<(), Status> {
        self.out()
            .write_all(line.as_bytes())
            .map_err(|e| Status::internal(format!("writing events to stdout: {e}")))
    }

    fn flush(&self) -> Result<(), Status> {
        self.out()
            .flush()
            .map_err(|e| Status::internal(format!("writing events to stdout: {e}")))
    }

    /// Decodes, prints and counts one event; `Err` is the message for `ConsumeResponse.errors`.
    fn consume_one(
        &self,
        event: &EventIn,
        tally: &mut Tally,
        line: &mut String,
    ) -> Result<Result<(), String>, Status> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        if event.r#type != event_types::TOKEN_TRANSFER.as_bytes() {
            return Ok(Err(format!(
                "event {:?}: type {:?} is not consumed here ({})",
                text(&event.id),
                text(&event.r#type),
                event_types::TOKEN_TRANSFER
            )));
        }
        let transfer = match TokenTransferEvent::decode(event.payload.as_ref()) {
            Ok(transfer) => transfer,
            Err(e) => {
                return Ok(Err(format!(
                    "event {:?}: payload is not a token_transfer.TokenTransferEvent: {e}",
                    text(&event.id)
                )))
            }
        };
        if self.config.print_events {
            line.clear();
            stellar_ttp::json::write_event_json(&transfer, line);
            line.push('\n');
            self.write_line(line)?;
        }
        tally.add(&transfer);
        Ok(Ok(()))
    }
}

#[tonic::async_trait]
impl ConsumerService for JsonLinesConsumer {
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

    async fn consume(
        &self,
        request: Request<Streaming<EventIn>>,
    ) -> Result<Response<ConsumeResponse>, Status> {
        let client = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "client".to_string());
        let mut input = request.into_inner();
        log::info!("{client}: consuming stellar.token.transfer.v1 events");
        let began = Instant::now();
        let mut tally = Tally::default();
        let mut response = ConsumeResponse::default();
        let mut line = String::with_capacity(1024);
        let mut reported = 0;
        loop {
            // Flushed whenever no further event is ready, so a live stream shows up promptly
            // without a write per event.
            let next = {
                let message = input.message();
                tokio::pin!(message);
                match poll_once(&mut message.as_mut()).await {
                    Some(ready) => ready,
                    None => {
                        self.flush()?;
                        self.report(&tally, &response, &mut reported);
                        message.await
                    }
                }
            };
            let event = match next {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(status) => {
                    self.flush()?;
                    self.metrics.add("error_count", 1.0);
                    log::error!(
                        "{client}: the event stream failed after {} events: {:?}: {}",
                        response.events_consumed,
                        status.code(),
                        status.message()
                    );
                    return Err(Status::new(
                        status.code(),
                        format!("reading the event stream: {}", status.message()),
                    ));
                }
            };
            match self.consume_one(&event, &mut tally, &mut line)? {
                Ok(()) => response.events_consumed += 1,
                Err(message) => {
                    response.events_failed += 1;
                    self.metrics.add("error_count", 1.0);
                    if response.errors.len() < MAX_ERRORS {
                        log::warn!("{client}: {message}");
                        response.errors.push(message);
                    }
                }
            }
        }
        self.flush()?;
        self.report(&tally, &response, &mut reported);
        tally.elapsed = began.elapsed();
        let range = LedgerRange {
            start: tally.first_ledger.unwrap_or(0),
            end: tally.last_ledger,
        };
        let mut summary = tally.summary_json(range, "completed");
        summary["events_failed"] = response.events_failed.into();
        // stderr, so stdout stays one event per line.
        eprintln!("{} summary: {summary}", IDENTITY.name);
        Ok(Response::new(response))
    }
}

impl JsonLinesConsumer {
    /// Moves what a call consumed since its last report into the shared metrics (once per burst,
    /// not per event: they sit behind a lock shared with `/health`). Overlapping calls each add
    /// only their own new events.
    fn report(&self, tally: &Tally, response: &ConsumeResponse, reported: &mut i64) {
        let new = response.events_consumed - *reported;
        if new > 0 {
            self.metrics.add("success_count", new as f64);
            self.metrics.add("total_processed", new as f64);
            self.metrics.add("total_events_received", new as f64);
            *reported = response.events_consumed;
        }
        if let Some(ledger) = tally.last_ledger {
            self.metrics.set("last_processed_ledger", f64::from(ledger));
        }
    }
}

/// The gRPC server for `service` on `listener`, until `shutdown` starts.
pub async fn serve(
    listener: TcpListener,
    service: JsonLinesConsumer,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = ConsumerServiceServer::new(service)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    component::serve(listener, component::server().add_service(server), shutdown).await
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    component::main(
        &IDENTITY,
        args,
        ConsumerV1Config::from_env,
        |_| HashMap::new(),
        |listener, config, running, shutdown| {
            log::info!(
                "serving flowctl.v1.ConsumerService on {}",
                component::bound_address(&listener, &running)
            );
            let out: Output = Arc::new(Mutex::new(BufWriter::with_capacity(
                1 << 16,
                std::io::stdout(),
            )));
            let service = JsonLinesConsumer::new(config, running.info, running.metrics, out);
            serve(listener, service, shutdown)
        },
    )
}
