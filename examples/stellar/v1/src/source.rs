//! `stellar-live-source-v1`: serves `flowctl.v1.SourceService`, streaming the ledgers of a
//! galexie-layout data lake folder as `stellar.ledger.v1` events.
//!
//! Each event is what upstream's `stellar.ledger.v1` consumers (its SDK processors) read: type
//! `stellar.ledger.v1`, payload a `stellar.v1.RawLedger` (`sequence`, the ledger's
//! `LedgerCloseMeta` XDR, and also `network` and `closed_at`, which upstream leaves empty),
//! content type `application/protobuf`, id `stellar-ledger-<sequence>`, `stellar_cursor`
//! `{ledger_sequence, index_in_ledger: 0}`, metadata `ledger_sequence` and `xdr_size`, and the
//! ledger's close time as `timestamp`.
//!
//! `StreamRequest.params`: `start_ledger` (required, else the `START_LEDGER` variable) and
//! `end_ledger` (inclusive; `0` or absent, and no `END_LEDGER` variable, means live: ledgers not
//! in the lake yet are streamed as their files appear). The reading itself is the first
//! generation's source (`stellar_components::source`, same variables: `STORAGE_TYPE=FS`,
//! `BUCKET_NAME`, ...), called in-process; a bounded stream ends right after its last ledger.

use std::collections::HashMap;
use std::io::Cursor;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::v1::source_service_server::{SourceService, SourceServiceServer};
use flowctl_proto::flowctl::v1::{
    ComponentHealth, ComponentInfo, ComponentType, Event, HealthCheckRequest, HealthCheckResponse,
    HealthStatus, SaveStateRequest, StateRequest, StateResponse, StellarCursor, StreamRequest,
};
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::RawLedgerService;
use flowctl_proto::raw_ledger_service::{RawLedger as LakeLedger, StreamLedgersRequest};
use flowctl_proto::stellar::v1::RawLedger;
use prost::Message;
use stellar_components::grpc;
use stellar_components::shutdown::Shutdown;
use stellar_components::source::backend;
use stellar_components::source::config::{BackendConfig, ObjectService};
use stellar_components::source::{LedgerSource, SourceConfig};
use stellar_xdr::{LedgerCloseMetaExt, LedgerHeaderHistoryEntry, Limited, Limits, ReadXdr};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::component::{self, V1Identity};
use crate::{content_types, event_types};

/// How the source describes itself.
pub const IDENTITY: V1Identity = V1Identity {
    name: "stellar-live-source-v1",
    description: "Streams the ledgers of a galexie data lake folder as stellar.ledger.v1 events",
    component_type: ComponentType::Source,
    input_event_types: &[],
    output_event_types: &[event_types::STELLAR_LEDGER],
    metric_keys: stellar_components::source::IDENTITY.metric_keys,
    port_variables: &["PORT"],
    default_port: stellar_components::source::DEFAULT_LISTEN,
};

/// The same source under upstream's name and contract (obsrvr-stellar-components'
/// `raw-ledger-source`, which upstream's pipeline files start as `./bin/raw-ledger-source`):
/// the gRPC port in `GRPC_PORT` (else `PORT`); the backend variables (`BACKEND_TYPE`,
/// `ARCHIVE_STORAGE_TYPE`, `ARCHIVE_BUCKET_NAME`, `ARCHIVE_PATH`, ...) are read by both names.
pub const UPSTREAM_IDENTITY: V1Identity = V1Identity {
    name: "raw-ledger-source",
    description: "Streams the ledgers of a galexie data lake (folder, S3, GCS) or a Stellar RPC \
                  server as stellar.ledger.v1 events",
    port_variables: &["GRPC_PORT", "PORT"],
    ..IDENTITY
};

/// The source's settings.
#[derive(Debug, Clone)]
pub struct SourceV1Config {
    /// The data lake and how to read it (the first generation's variables).
    pub lake: SourceConfig,
    /// `START_LEDGER`: the start when a request has no `start_ledger` param.
    pub start_ledger: Option<u32>,
    /// `END_LEDGER`: the end when a request has no `end_ledger` param (`0` = live).
    pub end_ledger: Option<u32>,
}

impl SourceV1Config {
    /// Reads the process environment. The error names the variable.
    pub fn from_env() -> Result<SourceV1Config, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`SourceV1Config::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SourceV1Config, String> {
        let ledger = |key: &str| {
            lookup(key)
                .filter(|value| !value.trim().is_empty())
                .map(|value| parse_ledger(key, &value))
                .transpose()
        };
        Ok(SourceV1Config {
            start_ledger: ledger("START_LEDGER")?,
            end_ledger: ledger("END_LEDGER")?,
            lake: SourceConfig::from_lookup(&lookup)?,
        })
    }
}

fn parse_ledger(name: &str, value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}: {value:?} is not a ledger sequence number"))
}

/// The ledgers one `StreamEvents` call asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    pub start: u32,
    /// Inclusive; `None` is live.
    pub end: Option<u32>,
}

impl StreamRange {
    /// The range of `request`: `resume` with a `resume_token` (from `GetState`) gives the start,
    /// else `params.start_ledger`, else `defaults.start_ledger`; `params.end_ledger`, else
    /// `defaults.end_ledger`, gives the end. Errors are `INVALID_ARGUMENT` naming the param.
    pub fn of_request(
        request: &StreamRequest,
        defaults: &SourceV1Config,
    ) -> Result<StreamRange, Status> {
        let param = |key: &str| {
            request
                .params
                .get(key)
                .filter(|value| !value.trim().is_empty())
                .map(|value| parse_ledger(&format!("params.{key}"), value))
                .transpose()
                .map_err(Status::invalid_argument)
        };
        let start = if request.resume && !request.resume_token.is_empty() {
            Some(
                parse_ledger("resume_token", &request.resume_token)
                    .map_err(Status::invalid_argument)?,
            )
        } else {
            param("start_ledger")?.or(defaults.start_ledger)
        };
        let start = start.ok_or_else(|| {
            Status::invalid_argument(
                "params.start_ledger is required (or resume with a resume_token from GetState; \
                 the source has no START_LEDGER default)",
            )
        })?;
        if start == 0 {
            return Err(Status::invalid_argument(
                "params.start_ledger must be at least 1 (ledger 1 is the genesis ledger)",
            ));
        }
        let end = param("end_ledger")?
            .or(defaults.end_ledger)
            .filter(|end| *end != 0);
        if let Some(end) = end.filter(|end| *end < start) {
            return Err(Status::invalid_argument(format!(
                "params.end_ledger {end} is before start_ledger {start}"
            )));
        }
        Ok(StreamRange { start, end })
    }
}

/// The last ledger a stream sent, for `GetState`.
#[derive(Debug, Clone, Copy)]
struct Position {
    last_sent: u32,
    at: SystemTime,
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct LedgerEventSource {
    ledgers: Arc<LedgerSource>,
    config: SourceV1Config,
    /// The network passphrase the lake's manifest (or the environment) gives.
    network: String,
    info: Arc<ComponentInfo>,
    metrics: Metrics,
    position: Arc<Mutex<Option<Position>>>,
}

impl LedgerEventSource {
    /// A service reading `config`'s lake (opened here: its `.config.json` is read), reporting
    /// into `metrics`, answering `GetInfo` with `info`; its streams end when `shutdown` starts.
    pub async fn open(
        config: SourceV1Config,
        info: Arc<ComponentInfo>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> anyhow::Result<LedgerEventSource> {
        let opened = backend::open(&config.lake).await?;
        for note in &opened.notes {
            log::warn!("{note}");
        }
        let ledgers = LedgerSource::new(&config.lake, opened.backend, metrics.clone(), shutdown);
        Ok(LedgerEventSource {
            ledgers: Arc::new(ledgers),
            network: opened.network_passphrase,
            config,
            info,
            metrics,
            position: Arc::new(Mutex::new(None)),
        })
    }

    fn position(&self) -> MutexGuard<'_, Option<Position>> {
        // A panic while holding the lock leaves a plain position behind; it is still usable.
        self.position
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[tonic::async_trait]
impl SourceService for LedgerEventSource {
    type StreamEventsStream = LedgerEvents;

    async fn get_info(&self, _request: Request<()>) -> Result<Response<ComponentInfo>, Status> {
        Ok(Response::new(self.info.as_ref().clone()))
    }

    async fn health_check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let root = match &self.config.lake.backend {
            BackendConfig::Folder { root } => root.clone(),
            // Remote backends report their own failures on the stream.
            _ => std::path::PathBuf::from("/"),
        };
        let details = || {
            let (status, message) = if root.is_dir() {
                (
                    HealthStatus::Healthy,
                    format!("{} is readable", root.display()),
                )
            } else {
                (
                    HealthStatus::Unhealthy,
                    format!("{} is not a folder (BUCKET_NAME)", root.display()),
                )
            };
            vec![ComponentHealth {
                component_name: "data_lake".to_string(),
                status: status as i32,
                message,
            }]
        };
        let include_details = request.into_inner().include_details;
        Ok(Response::new(component::health_check(
            &self.metrics,
            include_details,
            details,
        )))
    }

    async fn stream_events(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let client = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "client".to_string());
        let request = request.into_inner();
        let range = StreamRange::of_request(&request, &self.config)?;
        let ignored: Vec<&String> = request
            .params
            .keys()
            .filter(|key| !matches!(key.as_str(), "start_ledger" | "end_ledger"))
            .collect();
        if !ignored.is_empty() {
            log::warn!("{client}: ignoring unknown params {ignored:?} (start_ledger, end_ledger)");
        }
        log::info!(
            "{client}: streaming stellar.ledger.v1 events for ledgers {}-{}",
            range.start,
            range
                .end
                .map_or_else(|| "live".to_string(), |end| end.to_string())
        );
        let ledgers = self
            .ledgers
            .stream_raw_ledgers(Request::new(StreamLedgersRequest {
                start_ledger: range.start,
            }))
            .await?
            .into_inner();
        Ok(Response::new(LedgerEvents {
            ledgers: Box::pin(ledgers),
            range,
            network: self.network.clone(),
            component_id: self.info.id.clone(),
            position: self.position.clone(),
            done: false,
        }))
    }

    async fn get_state(
        &self,
        _request: Request<StateRequest>,
    ) -> Result<Response<StateResponse>, Status> {
        let Some(position) = *self.position() else {
            return Ok(Response::new(StateResponse::default()));
        };
        let next = position.last_sent.saturating_add(1);
        let updated = position
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        Ok(Response::new(StateResponse {
            state: HashMap::from([
                ("last_ledger".to_string(), position.last_sent.to_string()),
                ("next_ledger".to_string(), next.to_string()),
            ]),
            resume_token: next.to_string(),
            last_updated_unix: updated,
        }))
    }

    async fn save_state(
        &self,
        _request: Request<SaveStateRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(format!(
            "SaveState: {} keeps no checkpoints; resume with the resume_token of GetState",
            IDENTITY.name
        )))
    }
}

/// One `StreamEvents` response: the data lake's ledgers as events, ending after the range's last
/// ledger (dropping the lake stream, which stops its reader) or at the first error.
pub struct LedgerEvents {
    ledgers: Pin<Box<dyn Stream<Item = Result<LakeLedger, Status>> + Send>>,
    range: StreamRange,
    network: String,
    component_id: String,
    position: Arc<Mutex<Option<Position>>>,
    done: bool,
}

impl Stream for LedgerEvents {
    type Item = Result<Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let ledger = match self.ledgers.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                return Poll::Ready(Some(Err(status)));
            }
            Poll::Ready(Some(Ok(ledger))) => ledger,
        };
        let sequence = ledger.sequence;
        // A lake with a gap could jump past the end; nothing beyond it belongs here.
        if self.range.end.is_some_and(|end| sequence > end) {
            self.done = true;
            return Poll::Ready(None);
        }
        if self.range.end == Some(sequence) {
            self.done = true;
        }
        let event = ledger_event(ledger, &self.network, &self.component_id);
        if event.is_err() {
            self.done = true;
        } else {
            *self
                .position
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Position {
                last_sent: sequence,
                at: SystemTime::now(),
            });
        }
        Poll::Ready(Some(event))
    }
}

/// The `stellar.ledger.v1` event of one data lake ledger. The XDR's header must name the same
/// sequence (`DATA_LOSS` otherwise: the lake is corrupt).
pub fn ledger_event(
    ledger: LakeLedger,
    network: &str,
    component_id: &str,
) -> Result<Event, Status> {
    let sequence = ledger.sequence;
    let (header_sequence, close_time) = ledger_header(&ledger.ledger_close_meta_xdr)
        .map_err(|e| Status::data_loss(format!("ledger {sequence}: {e}")))?;
    if header_sequence != sequence {
        return Err(Status::data_loss(format!(
            "the data lake's object for ledger {sequence} holds ledger {header_sequence}"
        )));
    }
    let xdr_size = ledger.ledger_close_meta_xdr.len();
    let closed_at = i64::try_from(close_time).unwrap_or(i64::MAX);
    let payload = RawLedger {
        sequence,
        ledger_close_meta_xdr: ledger.ledger_close_meta_xdr,
        network: network.to_string(),
        closed_at,
    }
    .encode_to_vec();
    Ok(Event {
        id: format!("stellar-ledger-{sequence}"),
        r#type: event_types::STELLAR_LEDGER.to_string(),
        payload,
        metadata: HashMap::from([
            ("ledger_sequence".to_string(), sequence.to_string()),
            ("xdr_size".to_string(), xdr_size.to_string()),
        ]),
        timestamp: Some(prost_types::Timestamp {
            seconds: closed_at,
            nanos: 0,
        }),
        source_component_id: component_id.to_string(),
        content_type: content_types::RAW_LEDGER.to_string(),
        stellar_cursor: Some(StellarCursor {
            ledger_sequence: u64::from(sequence),
            index_in_ledger: 0,
        }),
    })
}

/// The sequence and close time (Unix seconds) in a `LedgerCloseMeta`'s header, read without
/// decoding the (much larger) rest.
pub fn ledger_header(xdr: &[u8]) -> Result<(u32, u64), String> {
    let mut reader = Limited::new(Cursor::new(xdr), Limits::none());
    let version =
        i32::read_xdr(&mut reader).map_err(|e| format!("not an XDR LedgerCloseMeta: {e}"))?;
    // V0 starts with the header; V1 and V2 with a `LedgerCloseMetaExt` first: void (arm 0) or
    // `LedgerCloseMetaExtV1` (arm 1: an extension point and `sorobanFeeWrite1KB`, as mainnet
    // ledgers of protocol 21 carry).
    match version {
        0 => {}
        1 | 2 => {
            LedgerCloseMetaExt::read_xdr(&mut reader)
                .map_err(|e| format!("LedgerCloseMeta v{version} extension: {e}"))?;
        }
        other => return Err(format!("unknown LedgerCloseMeta version {other}")),
    }
    let entry = LedgerHeaderHistoryEntry::read_xdr(&mut reader)
        .map_err(|e| format!("LedgerCloseMeta header: {e}"))?;
    Ok((entry.header.ledger_seq, entry.header.scp_value.close_time.0))
}

/// The gRPC server for `service` on `listener`, until `shutdown` starts.
pub async fn serve(
    listener: TcpListener,
    service: LedgerEventSource,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let server = SourceServiceServer::new(service)
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES);
    component::serve(listener, component::server().add_service(server), shutdown).await
}

/// `FS`, `S3`, `GCS` or `RPC`, for the registration metadata.
fn storage_type(backend: &BackendConfig) -> &'static str {
    match backend {
        BackendConfig::Folder { .. } => "FS",
        BackendConfig::ObjectStore(store) => match store.service {
            ObjectService::S3(_) => "S3",
            ObjectService::Gcs(_) => "GCS",
        },
        BackendConfig::Rpc(_) => "RPC",
    }
}

/// The entry point of the binary that runs as `identity` ([`IDENTITY`] or
/// [`UPSTREAM_IDENTITY`]); `args` excludes the program name.
pub fn main(identity: &'static V1Identity, args: &[String]) -> ExitCode {
    component::main(
        identity,
        args,
        SourceV1Config::from_env,
        |config| {
            HashMap::from([
                (
                    "network_passphrase".to_string(),
                    config
                        .lake
                        .env_lake
                        .network_passphrase
                        .clone()
                        .unwrap_or_default(),
                ),
                (
                    "storage_type".to_string(),
                    storage_type(&config.lake.backend).to_string(),
                ),
            ])
        },
        |listener, config, running, shutdown| async move {
            let listen = component::bound_address(&listener, &running);
            let service =
                LedgerEventSource::open(config, running.info, running.metrics, shutdown.clone())
                    .await;
            match service {
                Ok(service) => {
                    log::info!("serving flowctl.v1.SourceService on {listen}");
                    serve(listener, service, shutdown).await
                }
                Err(error) => {
                    // The data lake cannot be read: nothing to serve. The message names the
                    // variable, the bucket or the file.
                    log::error!("{error:#}");
                    std::process::exit(1)
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    use base64::Engine as _;
    use stellar_xdr::LedgerCloseMeta;

    fn ledgers_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ledgers")
    }

    /// Every data lake object under `dir`, recursively.
    fn lake_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                lake_files(&path, found);
            } else if path.to_string_lossy().ends_with(".xdr.zst")
                || path.to_string_lossy().ends_with(".xdr.zstd")
            {
                found.push(path);
            }
        }
    }

    /// What the full decoder says of the header, to compare the quick read with.
    fn decoded_header(xdr: &[u8]) -> (u32, u64, &'static str) {
        let meta = LedgerCloseMeta::from_xdr(xdr, Limits::none()).unwrap();
        let (entry, shape) = match &meta {
            LedgerCloseMeta::V0(v0) => (&v0.ledger_header, "v0"),
            LedgerCloseMeta::V1(v1) => (
                &v1.ledger_header,
                match v1.ext {
                    LedgerCloseMetaExt::V0 => "v1, ext v0",
                    LedgerCloseMetaExt::V1(_) => "v1, ext v1",
                },
            ),
            LedgerCloseMeta::V2(v2) => (
                &v2.ledger_header,
                match v2.ext {
                    LedgerCloseMetaExt::V0 => "v2, ext v0",
                    LedgerCloseMetaExt::V1(_) => "v2, ext v1",
                },
            ),
        };
        (
            entry.header.ledger_seq,
            entry.header.scp_value.close_time.0,
            shape,
        )
    }

    /// The quick header read agrees with the full decoder on every real ledger in
    /// `examples/ledgers`: each `LedgerCloseMeta` version and extension arm they hold.
    #[test]
    fn the_header_of_every_real_ledger_is_read_as_the_full_decoder_reads_it() {
        let mut files = Vec::new();
        lake_files(&ledgers_dir(), &mut files);
        assert!(files.len() >= 5, "no data lake files found: {files:?}");
        let mut ledgers: Vec<Vec<u8>> = files
            .iter()
            .flat_map(|path| stellar_components::source::read_object(path).unwrap())
            .map(|ledger| ledger.ledger_close_meta_xdr)
            .collect();
        let base64 =
            std::fs::read_to_string(ledgers_dir().join("pubnet-ttp-example/ledgers-base64.txt"))
                .unwrap();
        for line in base64.lines().filter(|l| !l.trim().is_empty()) {
            ledgers.push(
                base64::engine::general_purpose::STANDARD
                    .decode(line.trim())
                    .unwrap(),
            );
        }
        let mut shapes = std::collections::BTreeSet::new();
        for xdr in &ledgers {
            let (sequence, close_time, shape) = decoded_header(xdr);
            assert_eq!(
                ledger_header(xdr),
                Ok((sequence, close_time)),
                "ledger {sequence} ({shape})"
            );
            shapes.insert(shape);
        }
        // The shapes the real data covers, so a lost dataset cannot silently narrow the test.
        assert_eq!(
            shapes.into_iter().collect::<Vec<_>>(),
            ["v0", "v1, ext v0", "v1, ext v1", "v2, ext v0"]
        );
    }

    #[test]
    fn an_unknown_version_or_extension_arm_is_named() {
        assert_eq!(
            ledger_header(&[0, 0, 0, 3]),
            Err("unknown LedgerCloseMeta version 3".to_string())
        );
        let bad_arm = [0, 0, 0, 1, 0, 0, 0, 7];
        let error = ledger_header(&bad_arm).unwrap_err();
        assert!(
            error.starts_with("LedgerCloseMeta v1 extension: "),
            "{error}"
        );
    }
}
