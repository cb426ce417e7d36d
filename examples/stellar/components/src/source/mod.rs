//! `stellar-live-source-datalake`: serves `raw_ledger_service.RawLedgerService` from a
//! galexie-layout data lake in a local folder, an S3 or GCS bucket, or from a Stellar RPC
//! server (docs/contract.md §1, §4, §6, §8).
//!
//! - [`config`]: the environment, with upstream's variable names;
//! - [`backend`]: opening the configured backend and each stream's [`backend::Feed`];
//! - [`stream`]: the reader thread behind each stream (order, live mode, errors, metrics);
//! - [`split`]: decompressing and cutting galexie objects into ledgers;
//! - this file: the gRPC service and the binary's entry point.
//!
//! The gRPC service, the health JSON and the live-mode behaviour are the same for every
//! backend, so the processor and the consumer cannot tell them apart.

pub mod backend;
pub mod config;
pub mod split;
pub mod stream;

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::ServiceType;
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::{
    RawLedgerService, RawLedgerServiceServer,
};
use flowctl_proto::raw_ledger_service::{RawLedger, StreamLedgersRequest};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub use backend::{open, Backend, Opened};
pub use config::{SourceConfig, DEFAULT_LISTEN};
pub use split::{read_object, split_batch, split_by_decoding, split_by_hash_chain, ObjectReader};
pub use stream::{LedgerReceiver, ReadAhead};

use crate::component::{self, Identity};
use crate::event_types;
use crate::grpc;
use crate::shutdown::{self, Shutdown, UntilShutdown};

/// How the source registers and what `/health` reports (docs/contract.md §3).
pub const IDENTITY: Identity = Identity {
    name: "stellar-live-source-datalake",
    service_type: ServiceType::Source,
    input_event_types: &[],
    output_event_types: &[event_types::RAW_LEDGER],
    metric_keys: &[
        "success_count",
        "error_count",
        "total_processed",
        "total_bytes_processed",
        "last_successful_sequence",
    ],
};

/// The gRPC service.
#[derive(Debug)]
pub struct LedgerSource {
    read_ahead: ReadAhead,
    shutdown: Shutdown,
}

impl LedgerSource {
    /// A service reading from `backend` (opened from `config`), reporting into `metrics`, whose streams end when
    /// `shutdown` starts.
    pub fn new(
        config: &SourceConfig,
        backend: Backend,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> LedgerSource {
        LedgerSource {
            read_ahead: ReadAhead {
                backend,
                poll_interval: config.poll_interval,
                capacity: config.read_ahead,
                prefetch: config.prefetch,
                metrics,
            },
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl RawLedgerService for LedgerSource {
    type StreamRawLedgersStream = UntilShutdown<ReceiverStream<Result<RawLedger, Status>>>;

    async fn stream_raw_ledgers(
        &self,
        request: Request<StreamLedgersRequest>,
    ) -> Result<Response<Self::StreamRawLedgersStream>, Status> {
        let client = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "client".to_string());
        let start = request.into_inner().start_ledger;
        if start == 0 {
            return Err(Status::invalid_argument(
                "start_ledger must be at least 1 (ledger 1 is the genesis ledger)",
            ));
        }
        log::info!("{client}: streaming raw ledgers from {start}");
        let (rx, _detached) = self
            .read_ahead
            .spawn(start, client)
            .map_err(|e| Status::resource_exhausted(format!("cannot start a reader: {e}")))?;
        Ok(Response::new(UntilShutdown::new(
            ReceiverStream::new(rx),
            self.shutdown.clone(),
        )))
    }
}

/// The gRPC server for `service` on `listener`, until `shutdown` starts.
pub async fn serve(
    listener: TcpListener,
    service: LedgerSource,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = RawLedgerServiceServer::new(service)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    grpc::server()
        .add_service(server)
        .serve_with_incoming_shutdown(component::incoming(listener), shutdown.wait())
        .await
}

/// `bench-read <start> <end>`: reads the range through the configured backend exactly as a
/// stream does (prefetch, decompression, cutting), without gRPC, and prints one JSON line with
/// the ledgers/s (scripts/bench.sh compares the backends with it).
fn bench_read(args: &[String]) -> ExitCode {
    let range = match args {
        [start, end] => start.parse::<u32>().ok().zip(end.parse::<u32>().ok()),
        _ => None,
    };
    let Some((start, end)) = range.filter(|(start, end)| 0 < *start && start <= end) else {
        eprintln!("usage: {} bench-read <start> <end>", IDENTITY.name);
        return ExitCode::from(crate::EXIT_CONFIG);
    };
    let config = match SourceConfig::from_env() {
        Ok(config) => config,
        Err(e) => return component::config_error(IDENTITY.name, e),
    };
    let runtime = match component::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: {e}", IDENTITY.name);
            return ExitCode::from(crate::EXIT_FAILURE);
        }
    };
    let result: anyhow::Result<(u64, u64, f64)> = runtime.block_on(async {
        let opened = backend::open(&config).await?;
        let reader = ReadAhead {
            backend: opened.backend,
            poll_interval: config.poll_interval,
            capacity: config.read_ahead,
            prefetch: config.prefetch,
            metrics: Metrics::with_keys(IDENTITY.metric_keys),
        };
        let began = std::time::Instant::now();
        let (mut rx, _reader) = reader.spawn(start, "bench-read".into())?;
        let (mut ledgers, mut bytes) = (0u64, 0u64);
        while let Some(ledger) = rx.recv().await {
            let ledger = ledger.map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            ledgers += 1;
            bytes += ledger.ledger_close_meta_xdr.len() as u64;
            if ledger.sequence >= end {
                break;
            }
        }
        Ok((ledgers, bytes, began.elapsed().as_secs_f64()))
    });
    match result {
        Ok((ledgers, bytes, seconds)) => {
            println!(
                "{}",
                serde_json::json!({
                    "ledgers": ledgers,
                    "xdr_bytes": bytes,
                    "seconds": seconds,
                    "ledgers_per_second": ledgers as f64 / seconds.max(1e-9),
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e:#}", IDENTITY.name);
            ExitCode::from(crate::EXIT_FAILURE)
        }
    }
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) == Some("bench-read") {
        return bench_read(&args[1..]);
    }
    if let Some(code) = component::server_arguments(
        IDENTITY.name,
        args,
        "[healthcheck | bench-read <start> <end>]",
        "configured by environment variables",
    ) {
        return code;
    }
    component::run(
        IDENTITY.name,
        SourceConfig::from_env,
        |env, config| async move {
            let opened = backend::open(&config).await?;
            for note in &opened.notes {
                log::warn!("{note}");
            }
            let layout = match opened.backend.layout() {
                Some(layout) => format!(
                    " ({} ledgers/file, {} files/partition)",
                    layout.ledgers_per_file, layout.files_per_partition
                ),
                None => String::new(),
            };
            log::info!(
                "reading {}{layout}, network {:?}, read-ahead {} ledgers, prefetch {}, live poll \
                 every {:?}",
                opened.backend.describe(),
                opened.network_passphrase,
                config.read_ahead,
                config.prefetch,
                config.poll_interval
            );
            let metadata = HashMap::from([
                (
                    "network_passphrase".to_string(),
                    opened.network_passphrase.clone(),
                ),
                (
                    "storage_type".to_string(),
                    opened.backend.storage_type().to_string(),
                ),
                ("grpc_port".to_string(), config.listen.port().to_string()),
            ]);
            let running = component::start(&IDENTITY, env, metadata)?;
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("PORT: cannot listen on {}", config.listen))?;
            log::info!(
                "serving raw_ledger_service.RawLedgerService on {}",
                config.listen
            );
            let (trigger, shutdown) = shutdown::channel();
            let service = LedgerSource::new(
                &config,
                opened.backend,
                running.metrics.clone(),
                shutdown.clone(),
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
