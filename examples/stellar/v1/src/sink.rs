//! What `jsonl-sink` and `postgres-sink` share: a `flowctl.v1.ConsumerService` taking
//! `stellar.ledger.batch.v1` events and handing each decoded
//! [`LedgerBatch`] to a [`BatchWriter`], one at a time, in stream order.
//!
//! A batch is written before the next is read, and `Consume` answers only when every batch of
//! the call is written: its `events_consumed` means written, not received (upstream's SDK
//! consumer answers while its writes may still be in flight). A write that fails ends the call
//! with `INTERNAL` naming the ledger, so the run fails instead of losing rows. An event of
//! another type or whose payload is no `LedgerBatch` is skipped and counted in `events_failed`
//! (the first [`MAX_ERRORS`] messages are returned).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ComponentType, ConsumeResponse, HealthCheckRequest, HealthCheckResponse,
};
use prost::Message;
use stellar_components::grpc;
use tonic::{Request, Response, Status, Streaming};

use crate::batch::rows::LedgerBatch;
use crate::component::{self, V1Identity};
use crate::consumer::MAX_ERRORS;
use crate::event_types;
use crate::services::consumer_service_server::{ConsumerService, ConsumerServiceServer};
use crate::wire::EventIn;

/// Where a sink puts batches.
#[tonic::async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    /// Writes one ledger's batch for good (flushed, committed) before returning.
    async fn write(&self, batch: &LedgerBatch) -> anyhow::Result<()>;
}

/// The identity of a batch sink named `name`, serving on `PORT` (default `:50053`).
pub const fn identity(name: &'static str, description: &'static str) -> V1Identity {
    V1Identity {
        name,
        description,
        component_type: ComponentType::Consumer,
        input_event_types: &[event_types::LEDGER_BATCH],
        output_event_types: &[],
        metric_keys: stellar_components::consumer::IDENTITY.metric_keys,
        port_variables: &["PORT"],
        default_port: ":50053",
    }
}

/// The gRPC service.
pub struct BatchSink<W> {
    name: &'static str,
    info: Arc<ComponentInfo>,
    metrics: Metrics,
    writer: Arc<W>,
}

impl<W: BatchWriter> BatchSink<W> {
    /// A service named `name` writing with `writer`, answering `GetInfo` with `info`.
    pub fn new(
        name: &'static str,
        writer: Arc<W>,
        info: Arc<ComponentInfo>,
        metrics: Metrics,
    ) -> BatchSink<W> {
        BatchSink {
            name,
            info,
            metrics,
            writer,
        }
    }

    /// The batch of `event`, or why it is skipped.
    fn decode(event: &EventIn) -> Result<LedgerBatch, String> {
        let id = String::from_utf8_lossy(&event.id);
        if event.r#type != event_types::LEDGER_BATCH.as_bytes() {
            return Err(format!(
                "event {id:?}: type {:?} is not consumed here ({})",
                String::from_utf8_lossy(&event.r#type),
                event_types::LEDGER_BATCH
            ));
        }
        LedgerBatch::decode(event.payload.as_ref()).map_err(|e| {
            format!("event {id:?}: payload is not a stellar.components.v1.LedgerBatch: {e}")
        })
    }
}

#[tonic::async_trait]
impl<W: BatchWriter> ConsumerService for BatchSink<W> {
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
        log::info!("{client}: consuming {} events", event_types::LEDGER_BATCH);
        let began = Instant::now();
        let mut response = ConsumeResponse::default();
        let (mut first, mut last) = (None, None);
        let mut rows = 0usize;
        loop {
            let event = match input.message().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(status) => {
                    self.metrics.add("error_count", 1.0);
                    return Err(Status::new(
                        status.code(),
                        format!(
                            "reading the event stream after {} batches: {}",
                            response.events_consumed,
                            status.message()
                        ),
                    ));
                }
            };
            let batch = match Self::decode(&event) {
                Ok(batch) => batch,
                Err(message) => {
                    response.events_failed += 1;
                    self.metrics.add("error_count", 1.0);
                    if response.errors.len() < MAX_ERRORS {
                        log::warn!("{client}: {message}");
                        response.errors.push(message);
                    }
                    continue;
                }
            };
            let sequence = batch.ledger_sequence;
            if let Err(e) = self.writer.write(&batch).await {
                self.metrics.add("error_count", 1.0);
                log::error!("{client}: ledger {sequence}: {e:#}");
                return Err(Status::internal(format!(
                    "{}: writing ledger {sequence}: {e:#}",
                    self.name
                )));
            }
            rows += batch.transactions.len() + batch.operations.len() + batch.ledgers.len();
            first.get_or_insert(sequence);
            last = Some(sequence);
            response.events_consumed += 1;
            self.metrics.add("success_count", 1.0);
            self.metrics.add("total_processed", 1.0);
            self.metrics.add("total_events_received", 1.0);
            self.metrics
                .set("last_processed_ledger", f64::from(sequence));
        }
        let range = match (first, last) {
            (Some(first), Some(last)) => format!("ledgers {first}-{last}"),
            _ => "no ledgers".to_string(),
        };
        log::info!(
            "{client}: stream ended: wrote {} batches ({range}, {rows} ledger, transaction and \
             operation rows), skipped {}, in {:.2?}",
            response.events_consumed,
            response.events_failed,
            began.elapsed()
        );
        Ok(Response::new(response))
    }
}

/// The gRPC server for `service` on `listener`, until `shutdown` starts.
pub async fn serve<W: BatchWriter>(
    listener: tokio::net::TcpListener,
    service: BatchSink<W>,
    shutdown: stellar_components::shutdown::Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = ConsumerServiceServer::new(service)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    component::serve(listener, component::server().add_service(server), shutdown).await
}

/// A batch sink's process: settings from `from_env`, then `open` (connecting, opening files;
/// its error exits 1 before the sink reports healthy), then serving until SIGTERM/SIGINT.
pub fn main<C, P, W>(
    identity: &'static V1Identity,
    args: &[String],
    from_env: impl FnOnce() -> Result<C, String>,
    open: impl FnOnce(C) -> P,
) -> ExitCode
where
    P: std::future::Future<Output = anyhow::Result<W>>,
    W: BatchWriter,
{
    component::main_prepared(
        identity,
        args,
        from_env,
        |_| Default::default(),
        open,
        move |listener, writer, running, shutdown| {
            log::info!(
                "serving flowctl.v1.ConsumerService on {}",
                component::bound_address(&listener, &running)
            );
            let service = BatchSink::new(
                identity.name,
                Arc::new(writer),
                running.info,
                running.metrics,
            );
            serve(listener, service, shutdown)
        },
    )
}
