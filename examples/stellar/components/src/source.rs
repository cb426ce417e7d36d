//! `stellar-live-source-datalake`: serves `raw_ledger_service.RawLedgerService` from a
//! galexie-layout data lake in a local folder (CONTRACT.md §1, §4, §6).
//!
//! Each stream has a reader thread that finds, reads, decompresses and splits data lake objects
//! ahead of the client into a bounded queue, so file and CPU work overlap sending. When the next
//! ledger's object does not exist yet the reader polls for it (live mode), until the client
//! goes away or the component shuts down.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flowctl_proto::component::{parse_duration, Metrics};
use flowctl_proto::flowctl::ServiceType;
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::{
    RawLedgerService, RawLedgerServiceServer,
};
use flowctl_proto::raw_ledger_service::{RawLedger, StreamLedgersRequest};
use stellar_ttp::datalake::{ledger_sequence, DataLake, Layout, Manifest, MANIFEST_FILE};
use stellar_xdr::{LedgerCloseMeta, Limited, Limits, ReadXdr};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::component::{self, Identity};
use crate::event_types;
use crate::grpc;
use crate::shutdown::{self, Shutdown, UntilShutdown};

/// How the source registers and what `/health` reports (CONTRACT.md §3).
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

/// Upstream's fixed listen address.
pub const DEFAULT_LISTEN: &str = ":50052";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_READ_AHEAD: usize = 16;
/// How many objects past a missing one the source looks at to tell a gap from the live edge.
const GAP_LOOKAHEAD_FILES: u32 = 64;
/// How often a stream logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The source's settings, from the environment and the lake's `.config.json`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `PORT` (ours; upstream always listens on `:50052`).
    pub listen: SocketAddr,
    /// `BUCKET_NAME` with the layout from `.config.json`, else `LEDGERS_PER_FILE` and
    /// `FILES_PER_PARTITION`.
    pub lake: DataLake,
    /// From `.config.json` when it names one, else `NETWORK_PASSPHRASE`.
    pub network_passphrase: String,
    /// `LEDGER_POLL_INTERVAL` (ours): how often a live stream looks for the next object.
    pub poll_interval: Duration,
    /// `READ_AHEAD_LEDGERS` (ours): ledgers read ahead of the client per stream.
    pub read_ahead: usize,
    /// Where the manifest overrode the environment, to be logged at start-up.
    pub notes: Vec<String>,
}

impl SourceConfig {
    /// Reads the process environment. The error names the variable.
    pub fn from_env() -> Result<SourceConfig, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`SourceConfig::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SourceConfig, String> {
        let get = |key: &str| {
            lookup(key)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let storage = get("STORAGE_TYPE").ok_or(
            "STORAGE_TYPE is required: FS, with BUCKET_NAME the data lake folder".to_string(),
        )?;
        match storage.to_ascii_uppercase().as_str() {
            "FS" => {}
            "GCS" | "S3" => {
                return Err(format!(
                    "STORAGE_TYPE={storage} is not supported by this build; use STORAGE_TYPE=FS \
                     and mount the data lake as a folder named by BUCKET_NAME"
                ))
            }
            _ => {
                return Err(format!(
                    "STORAGE_TYPE: unknown storage type {storage:?} (FS)"
                ))
            }
        }
        let bucket = get("BUCKET_NAME").ok_or(
            "BUCKET_NAME is required: for STORAGE_TYPE=FS, the data lake's base folder".to_string(),
        )?;
        let root = PathBuf::from(&bucket);
        if !root.is_dir() {
            return Err(format!(
                "BUCKET_NAME: {bucket} is not a folder (is the data lake mounted?)"
            ));
        }
        let env_ledgers_per_file =
            parse_number::<u32>(get("LEDGERS_PER_FILE"), "LEDGERS_PER_FILE")?;
        let env_files_per_partition =
            parse_number::<u32>(get("FILES_PER_PARTITION"), "FILES_PER_PARTITION")?;
        let env_layout = Layout {
            ledgers_per_file: env_ledgers_per_file.unwrap_or(64),
            files_per_partition: env_files_per_partition.unwrap_or(10),
        };
        let env_passphrase = get("NETWORK_PASSPHRASE");
        let manifest = Manifest::read(&root).map_err(|e| format!("BUCKET_NAME: {e:#}"))?;
        let mut notes = Vec::new();
        let (layout, network_passphrase) = match manifest {
            Some(manifest) => {
                let layout = manifest.layout_or(env_layout);
                for (variable, env_value, used, field) in [
                    (
                        "LEDGERS_PER_FILE",
                        env_ledgers_per_file,
                        layout.ledgers_per_file,
                        "ledgersPerBatch",
                    ),
                    (
                        "FILES_PER_PARTITION",
                        env_files_per_partition,
                        layout.files_per_partition,
                        "batchesPerPartition",
                    ),
                ] {
                    if let Some(value) = env_value.filter(|value| *value != used) {
                        notes.push(format!(
                            "{variable}={value} disagrees with {MANIFEST_FILE} ({field} {used}); \
                             using {MANIFEST_FILE}"
                        ));
                    }
                }
                let passphrase = match (manifest.network_passphrase, env_passphrase) {
                    (Some(from_manifest), Some(from_env)) => {
                        if from_manifest != from_env {
                            notes.push(format!(
                                "NETWORK_PASSPHRASE {from_env:?} disagrees with {MANIFEST_FILE} \
                                 ({from_manifest:?}); using {MANIFEST_FILE}"
                            ));
                        }
                        from_manifest
                    }
                    (Some(from_manifest), None) => from_manifest,
                    (None, Some(from_env)) => from_env,
                    (None, None) => {
                        return Err(format!(
                            "NETWORK_PASSPHRASE is required: the data lake's {MANIFEST_FILE} \
                             does not name one"
                        ))
                    }
                };
                (layout, passphrase)
            }
            None => {
                let passphrase = env_passphrase.ok_or(format!(
                    "NETWORK_PASSPHRASE is required: the data lake has no {MANIFEST_FILE}"
                ))?;
                (env_layout, passphrase)
            }
        };
        let lake = DataLake::new(root, layout).map_err(|e| format!("{e:#}"))?;
        let listen = grpc::listen_addr(
            "PORT",
            &get("PORT").unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        )?;
        let poll_interval = match get("LEDGER_POLL_INTERVAL") {
            Some(value) => {
                parse_duration(&value).map_err(|e| format!("LEDGER_POLL_INTERVAL: {e}"))?
            }
            None => DEFAULT_POLL_INTERVAL,
        };
        if poll_interval.is_zero() {
            return Err("LEDGER_POLL_INTERVAL: must be greater than zero".to_string());
        }
        let read_ahead = parse_number::<usize>(get("READ_AHEAD_LEDGERS"), "READ_AHEAD_LEDGERS")?
            .unwrap_or(DEFAULT_READ_AHEAD);
        if read_ahead == 0 {
            return Err("READ_AHEAD_LEDGERS: must be at least 1".to_string());
        }
        Ok(SourceConfig {
            listen,
            lake,
            network_passphrase,
            poll_interval,
            read_ahead,
            notes,
        })
    }
}

fn parse_number<T: std::str::FromStr>(
    value: Option<String>,
    variable: &str,
) -> Result<Option<T>, String> {
    value
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("{variable}: {value:?} is not a valid number"))
        })
        .transpose()
}

/// Cuts a decompressed data lake object (XDR `LedgerCloseMetaBatch`) into one `RawLedger` per
/// `LedgerCloseMeta`, each holding exactly that ledger's XDR (a copy: `xdr` is the reader's
/// reused buffer).
///
/// XDR carries no lengths. With one ledger per object (the usual galexie layout) the ledger is
/// simply the rest of the object after the batch header. With several, the ledgers are found by
/// their hash chain ([`split_by_hash_chain`]) and, when the chain does not hold, by decoding each
/// one ([`split_by_decoding`]), which costs as much as the processor's own decoding.
pub fn split_batch(xdr: &[u8]) -> Result<Vec<RawLedger>> {
    const HEADER: usize = 12;
    let (start, end, count) = match (read_u32(xdr, 0), read_u32(xdr, 4), read_u32(xdr, 8)) {
        (Some(start), Some(end), Some(count)) => (start, end, count as usize),
        _ => bail!("object is too short for a LedgerCloseMetaBatch header"),
    };
    if end < start || (end - start) as usize + 1 != count {
        bail!("batch header says ledgers {start}-{end} but holds {count} ledger(s)");
    }
    if count == 1 {
        // Cheap sanity check of the union discriminant (LedgerCloseMeta v0, v1 or v2).
        if !matches!(read_u32(xdr, HEADER), Some(0..=2)) {
            bail!("ledger {start} is not an XDR LedgerCloseMeta");
        }
        return Ok(vec![RawLedger {
            sequence: start,
            ledger_close_meta_xdr: xdr[HEADER..].to_vec(),
        }]);
    }
    let body = &xdr[HEADER..];
    let starts = match split_by_hash_chain(body, start, count) {
        Some(starts) => starts,
        None => {
            log::debug!("batch {start}-{end}: no hash chain to follow, cutting by decoding");
            split_by_decoding(body, start, end)?
        }
    };
    let ends = starts.iter().skip(1).copied().chain([body.len()]);
    Ok(starts
        .iter()
        .zip(ends)
        .zip(start..=end)
        .map(|((&from, to), sequence)| RawLedger {
            sequence,
            ledger_close_meta_xdr: body[from..to].to_vec(),
        })
        .collect())
}

/// Offset of `LedgerHeaderHistoryEntry.hash` in a `LedgerCloseMeta` starting at `at`: after the
/// union discriminant and, for v1 and v2, the `LedgerCloseMetaExt` (void, or an extension point
/// and an int64). `None` when the bytes there cannot start a `LedgerCloseMeta`.
fn header_hash_offset(body: &[u8], at: usize) -> Option<usize> {
    match read_u32(body, at)? {
        0 => Some(4),
        1 | 2 => match read_u32(body, at + 4)? {
            0 => Some(8),
            1 if read_u32(body, at + 8)? == 0 => Some(20),
            _ => None,
        },
        _ => None,
    }
}

/// `ledgerSeq` of the `LedgerHeader` whose `LedgerHeaderHistoryEntry.hash` is at `hash_at`,
/// reading only the fields before it: `ledgerVersion`, `previousLedgerHash`, the `StellarValue`
/// (tx set hash, close time, upgrades, basic or signed), `txSetResultHash`, `bucketListHash`.
fn header_sequence(body: &[u8], hash_at: usize) -> Option<u32> {
    let padded = |len: usize| len.div_ceil(4) * 4;
    let mut at = hash_at + 32 + 4 + 32 + 32 + 8;
    let upgrades = read_u32(body, at)? as usize;
    at += 4;
    for _ in 0..upgrades {
        let len = read_u32(body, at)? as usize;
        if len > 128 {
            return None;
        }
        at += 4 + padded(len);
    }
    match read_u32(body, at)? {
        0 => at += 4,
        1 => {
            // NodeID (key type + 32 bytes), then the signature (opaque<64>).
            at += 4 + 4 + 32;
            let len = read_u32(body, at)? as usize;
            if len > 64 {
                return None;
            }
            at += 4 + padded(len);
        }
        _ => return None,
    }
    read_u32(body, at + 32 + 32)
}

/// Where each of the `LedgerCloseMeta`s of ledgers `start..start + count` in `body` starts,
/// found without decoding them: ledger N+1's header begins with `ledgerVersion` and
/// `previousLedgerHash`, which is ledger N's hash, so the next ledger starts at a fixed distance
/// before a later place where that hash appears again. A candidate must also have the same
/// `LedgerCloseMeta` version and the next sequence number in its header (the hash appears once
/// more in each ledger's transaction set). `None` when the chain cannot be followed (the caller
/// then decodes). A wrong cut could not go unnoticed anyway: the processor decodes every ledger
/// exactly, to its last byte, and checks its sequence number.
pub fn split_by_hash_chain(body: &[u8], start: u32, count: usize) -> Option<Vec<usize>> {
    const HASH: usize = 32;
    // ledgerVersion + previousLedgerHash, the start of every LedgerHeader.
    const PREVIOUS_HASH_AT: usize = HASH + 4;
    let version = read_u32(body, 0)?;
    let mut at = 0usize;
    let mut sequence = start;
    let hash_offset = header_hash_offset(body, at)?;
    if header_sequence(body, at + hash_offset)? != sequence {
        return None;
    }
    let mut starts = Vec::with_capacity(count);
    starts.push(at);
    while starts.len() < count {
        let hash_at = at + header_hash_offset(body, at)?;
        let hash = body.get(hash_at..hash_at + HASH)?;
        let search_from = hash_at + PREVIOUS_HASH_AT + HASH;
        let rest = body.get(search_from..)?;
        let next_sequence = sequence.checked_add(1)?;
        let next = memchr::memmem::find_iter(rest, hash).find_map(|found| {
            // The next ledger's own hash sits just before its ledgerVersion.
            let next_hash_at = (search_from + found).checked_sub(PREVIOUS_HASH_AT)?;
            [4, 8, 20].into_iter().find_map(|offset| {
                let candidate = next_hash_at.checked_sub(offset)?;
                let fits = candidate > at
                    && read_u32(body, candidate) == Some(version)
                    && header_hash_offset(body, candidate) == Some(offset)
                    && header_sequence(body, next_hash_at) == Some(next_sequence);
                fits.then_some(candidate)
            })
        })?;
        starts.push(next);
        at = next;
        sequence = next_sequence;
    }
    Some(starts)
}

/// Where each `LedgerCloseMeta` of the batch `start..=end` starts, by decoding them one after
/// the other; also checks the sequence numbers and that nothing trails.
pub fn split_by_decoding(body: &[u8], start: u32, end: u32) -> Result<Vec<usize>> {
    let mut reader = Limited::new(Cursor::new(body), Limits::none());
    let mut starts = Vec::new();
    for expected in start..=end {
        starts.push(reader.inner.position() as usize);
        let meta = LedgerCloseMeta::read_xdr(&mut reader)
            .with_context(|| format!("decoding ledger {expected} of batch {start}-{end}"))?;
        let sequence = ledger_sequence(&meta);
        if sequence != expected {
            bail!("batch {start}-{end} holds ledger {sequence} where {expected} belongs");
        }
    }
    let used = reader.inner.position() as usize;
    if used != body.len() {
        bail!(
            "batch {start}-{end} has {} trailing bytes",
            body.len() - used
        );
    }
    Ok(starts)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// Reads, decompresses and splits one data lake object (a one-off [`ObjectReader`]).
pub fn read_object(path: &Path) -> Result<Vec<RawLedger>> {
    ObjectReader::new()?.read(path)
}

/// Reads, decompresses and splits data lake objects one after the other, reusing its zstd
/// context and buffers: a fresh multi-megabyte buffer per object costs a page fault (and the
/// kernel zeroing a page) for every 4 KiB decompressed, which was a fifth of the source's CPU.
pub struct ObjectReader {
    decompressor: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
    xdr: Vec<u8>,
    /// The largest buffer a one-shot decompression is tried with.
    max_one_shot: usize,
}

impl ObjectReader {
    /// A reader with empty buffers (they grow to the largest object read).
    pub fn new() -> Result<ObjectReader> {
        Ok(ObjectReader {
            decompressor: zstd::bulk::Decompressor::new()
                .context("creating a zstd decompression context")?,
            compressed: Vec::new(),
            xdr: Vec::new(),
            max_one_shot: 256 << 20,
        })
    }

    /// The ledgers of the object at `path`.
    pub fn read(&mut self, path: &Path) -> Result<Vec<RawLedger>> {
        self.compressed.clear();
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_end(&mut self.compressed))
            .with_context(|| format!("reading {}", path.display()))?;
        self.decompress()
            .with_context(|| format!("zstd-decompressing {}", path.display()))?;
        split_batch(&self.xdr).with_context(|| format!("splitting {}", path.display()))
    }

    /// Decompresses `compressed` into `xdr`. Galexie's frames do not record their size, so a
    /// one-shot decompression (about twice as fast as streaming) is tried into the buffer grown
    /// to a generous guess, then to the largest size allowed (only the pages written are ever
    /// touched); streaming handles whatever does not fit.
    fn decompress(&mut self) -> std::io::Result<()> {
        let guess = self
            .compressed
            .len()
            .saturating_mul(16)
            .clamp(1 << 20, self.max_one_shot);
        for size in [guess, self.max_one_shot] {
            self.xdr.clear();
            self.xdr.reserve(size);
            if self
                .decompressor
                .decompress_to_buffer(&self.compressed, &mut self.xdr)
                .is_ok()
            {
                return Ok(());
            }
        }
        self.xdr.clear();
        zstd::stream::read::Decoder::new(self.compressed.as_slice())?.read_to_end(&mut self.xdr)?;
        Ok(())
    }
}

/// What a stream's reader thread hands to the gRPC response, in order.
pub type LedgerReceiver = mpsc::Receiver<Result<RawLedger, Status>>;

/// The reader behind one stream.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    pub lake: DataLake,
    pub poll_interval: Duration,
    /// Capacity of the queue between the reader and the client.
    pub capacity: usize,
    pub metrics: Metrics,
}

impl ReadAhead {
    /// Starts a reader thread streaming ledgers from `start` on; it stops when the receiver is
    /// dropped (client cancelled) or after sending an error.
    pub fn spawn(
        &self,
        start: u32,
        client: String,
    ) -> std::io::Result<(LedgerReceiver, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let reader = self.clone();
        let thread = thread::Builder::new()
            .name(format!("read-ahead-{start}"))
            .spawn(move || reader.run(start, &client, &tx))?;
        Ok((rx, thread))
    }

    fn run(&self, start: u32, client: &str, tx: &mpsc::Sender<Result<RawLedger, Status>>) {
        let mut objects = match ObjectReader::new() {
            Ok(objects) => objects,
            Err(e) => {
                self.metrics.add("error_count", 1.0);
                log::error!("{client}: {e:#}");
                let _ = tx.blocking_send(Err(Status::resource_exhausted(format!("{e:#}"))));
                return;
            }
        };
        let mut next = start;
        let mut progress = Progress::new(start);
        let mut waiting = false;
        let mut retried_object = false;
        loop {
            let Some(path) = self.lake.find_file(next) else {
                if !waiting {
                    waiting = true;
                    progress.log(client, next);
                    log::info!(
                        "{client}: ledger {next} is not in the data lake yet; polling every {:?} \
                         (live mode)",
                        self.poll_interval
                    );
                    // A missing object followed by an existing one is a gap, which live mode
                    // cannot fill by waiting; say so rather than look stuck.
                    let step = self.lake.layout().ledgers_per_file;
                    let later = (1..=GAP_LOOKAHEAD_FILES)
                        .filter_map(|files| next.checked_add(files * step))
                        .find(|later| self.lake.find_file(*later).is_some());
                    if let Some(later) = later {
                        log::warn!(
                            "{client}: ledger {next} is missing although ledger {later} exists: a \
                             gap in the data lake? still waiting for it"
                        );
                    }
                }
                if tx.is_closed() {
                    log::info!("{client}: stream closed by the client at ledger {next}");
                    return;
                }
                thread::sleep(self.poll_interval);
                continue;
            };
            if waiting {
                waiting = false;
                log::info!("{client}: ledger {next} appeared in the data lake");
            }
            let ledgers = match objects.read(&path) {
                Ok(ledgers) => ledgers,
                // A live exporter may still be writing the newest object: look again once.
                Err(e) if !retried_object => {
                    log::warn!("{client}: {e:#}; retrying after {:?}", self.poll_interval);
                    retried_object = true;
                    thread::sleep(self.poll_interval);
                    continue;
                }
                Err(e) => {
                    self.metrics.add("error_count", 1.0);
                    log::error!("{client}: {e:#}");
                    let _ = tx.blocking_send(Err(Status::data_loss(format!("{e:#}"))));
                    return;
                }
            };
            retried_object = false;
            let before = next;
            for ledger in ledgers
                .into_iter()
                .filter(|ledger| ledger.sequence >= before)
            {
                let sequence = ledger.sequence;
                // Counted once read, before the hand-over, so a client that has a ledger
                // always finds it in the metrics.
                self.metrics.add("success_count", 1.0);
                self.metrics.add("total_processed", 1.0);
                self.metrics.add(
                    "total_bytes_processed",
                    ledger.ledger_close_meta_xdr.len() as f64,
                );
                self.metrics
                    .set("last_successful_sequence", f64::from(sequence));
                if tx.blocking_send(Ok(ledger)).is_err() {
                    progress.log(client, sequence);
                    log::info!("{client}: stream closed by the client at ledger {sequence}");
                    return;
                }
                progress.sent(client, sequence);
                match sequence.checked_add(1) {
                    Some(following) => next = following,
                    None => return,
                }
            }
            if next == before {
                self.metrics.add("error_count", 1.0);
                let message = format!("{} does not hold ledger {next}", path.display());
                log::error!("{client}: {message}");
                let _ = tx.blocking_send(Err(Status::data_loss(message)));
                return;
            }
        }
    }
}

/// Logs a stream's progress every few seconds so `docker logs` shows it moving.
struct Progress {
    first_unlogged: u32,
    count: u64,
    since: Instant,
}

impl Progress {
    fn new(start: u32) -> Progress {
        Progress {
            first_unlogged: start,
            count: 0,
            since: Instant::now(),
        }
    }

    fn sent(&mut self, client: &str, sequence: u32) {
        self.count += 1;
        if self.since.elapsed() >= PROGRESS_EVERY {
            self.log(client, sequence.saturating_add(1));
        }
    }

    /// Logs what was sent since the last line; `next` is the first ledger not yet sent.
    fn log(&mut self, client: &str, next: u32) {
        if self.count > 0 {
            let elapsed = self.since.elapsed().as_secs_f64().max(1e-6);
            log::info!(
                "{client}: sent ledgers {}-{} ({} ledgers, {:.0} ledgers/s)",
                self.first_unlogged,
                next.saturating_sub(1),
                self.count,
                self.count as f64 / elapsed
            );
        }
        self.first_unlogged = next;
        self.count = 0;
        self.since = Instant::now();
    }
}

/// The gRPC service.
#[derive(Debug)]
pub struct LedgerSource {
    read_ahead: ReadAhead,
    shutdown: Shutdown,
}

impl LedgerSource {
    /// A service reading `config`'s lake, reporting into `metrics`, whose streams end when
    /// `shutdown` starts.
    pub fn new(config: &SourceConfig, metrics: Metrics, shutdown: Shutdown) -> LedgerSource {
        LedgerSource {
            read_ahead: ReadAhead {
                lake: config.lake.clone(),
                poll_interval: config.poll_interval,
                capacity: config.read_ahead,
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

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    if let Some(code) = component::server_arguments(
        IDENTITY.name,
        args,
        "[healthcheck]",
        "configured by environment variables",
    ) {
        return code;
    }
    component::run(
        IDENTITY.name,
        SourceConfig::from_env,
        |env, config| async move {
            for note in &config.notes {
                log::warn!("{note}");
            }
            let layout = config.lake.layout();
            log::info!(
                "data lake {} ({} ledgers/file, {} files/partition), network {:?}, read-ahead {} \
                 ledgers, live poll every {:?}",
                config.lake.root().display(),
                layout.ledgers_per_file,
                layout.files_per_partition,
                config.network_passphrase,
                config.read_ahead,
                config.poll_interval
            );
            let metadata = HashMap::from([
                (
                    "network_passphrase".to_string(),
                    config.network_passphrase.clone(),
                ),
                ("storage_type".to_string(), "FS".to_string()),
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
            let service = LedgerSource::new(&config, running.metrics.clone(), shutdown.clone());
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
    use std::fs;

    fn real_lake(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ledgers")
            .join(name)
    }

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    fn config_error(pairs: &[(&str, &str)]) -> String {
        match SourceConfig::from_lookup(lookup(pairs)) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e,
        }
    }

    /// A folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "stellar-components-source-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn required_variables_are_named() {
        let err = config_error(&[]);
        assert!(err.starts_with("STORAGE_TYPE is required"), "{err}");
        let err = config_error(&[("STORAGE_TYPE", "FS")]);
        assert!(err.starts_with("BUCKET_NAME is required"), "{err}");
        let dir = TempDir::new("no-manifest");
        let err = config_error(&[("STORAGE_TYPE", "FS"), ("BUCKET_NAME", dir.path())]);
        assert!(err.starts_with("NETWORK_PASSPHRASE is required"), "{err}");
    }

    #[test]
    fn cloud_storage_is_refused_clearly() {
        for storage in ["GCS", "S3", "gcs"] {
            let err = config_error(&[("STORAGE_TYPE", storage), ("BUCKET_NAME", "bucket")]);
            assert!(
                err.contains("is not supported by this build") && err.starts_with("STORAGE_TYPE"),
                "{err}"
            );
        }
        let err = config_error(&[("STORAGE_TYPE", "FTP")]);
        assert!(err.starts_with("STORAGE_TYPE: unknown"), "{err}");
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let dir = TempDir::new("malformed");
        let base = [
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", dir.path()),
            ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
        ];
        for (variable, value) in [
            ("LEDGERS_PER_FILE", "many"),
            ("LEDGERS_PER_FILE", "0"),
            ("FILES_PER_PARTITION", "-1"),
            ("FILES_PER_PARTITION", "0"),
            ("PORT", "http"),
            ("LEDGER_POLL_INTERVAL", "often"),
            ("READ_AHEAD_LEDGERS", "0"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((variable, value));
            let err = config_error(&pairs);
            assert!(err.contains(variable), "{variable}={value}: {err}");
        }
        let err = config_error(&[("STORAGE_TYPE", "FS"), ("BUCKET_NAME", "/nonexistent/lake")]);
        assert!(err.starts_with("BUCKET_NAME: /nonexistent/lake"), "{err}");
    }

    #[test]
    fn env_layout_applies_without_a_manifest() {
        let dir = TempDir::new("env-layout");
        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "fs"),
            ("BUCKET_NAME", dir.path()),
            ("NETWORK_PASSPHRASE", "Standalone Network ; February 2017"),
        ]))
        .unwrap();
        assert_eq!(config.lake.layout(), Layout::default());
        assert_eq!(config.listen.port(), 50052);
        assert!(config.notes.is_empty());

        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", dir.path()),
            ("NETWORK_PASSPHRASE", "Standalone Network ; February 2017"),
            ("LEDGERS_PER_FILE", "1"),
            ("FILES_PER_PARTITION", "64000"),
            ("PORT", ":6000"),
        ]))
        .unwrap();
        assert_eq!(
            config.lake.layout(),
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000
            }
        );
        assert_eq!(config.listen.port(), 6000);
    }

    #[test]
    fn the_manifest_wins_and_disagreement_is_reported() {
        let lake = real_lake("testnet-997-999");
        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", lake.to_str().unwrap()),
            ("LEDGERS_PER_FILE", "64"),
            (
                "NETWORK_PASSPHRASE",
                "Public Global Stellar Network ; September 2015",
            ),
        ]))
        .unwrap();
        assert_eq!(
            config.lake.layout(),
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000
            }
        );
        assert_eq!(
            config.network_passphrase,
            "Test SDF Network ; September 2015"
        );
        assert_eq!(config.notes.len(), 2, "{:?}", config.notes);
        assert!(config.notes[0].starts_with("LEDGERS_PER_FILE=64 disagrees"));
        assert!(config.notes[1].starts_with("NETWORK_PASSPHRASE"));

        // Agreeing (or absent) variables give no note.
        let config = SourceConfig::from_lookup(lookup(&[
            ("STORAGE_TYPE", "FS"),
            ("BUCKET_NAME", lake.to_str().unwrap()),
            ("LEDGERS_PER_FILE", "1"),
        ]))
        .unwrap();
        assert!(config.notes.is_empty(), "{:?}", config.notes);
    }

    fn testnet() -> DataLake {
        DataLake::new(
            real_lake("testnet-997-999"),
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_one_ledger_object_is_the_ledger_after_the_header() {
        let lake = testnet();
        let path = lake.find_file(998).unwrap();
        let ledgers = read_object(&path).unwrap();
        assert_eq!(ledgers.len(), 1);
        assert_eq!(ledgers[0].sequence, 998);
        let meta =
            LedgerCloseMeta::from_xdr(&ledgers[0].ledger_close_meta_xdr, Limits::none()).unwrap();
        let batch = lake.read_batch(998).unwrap().unwrap();
        assert_eq!(meta, batch.ledger_close_metas[0]);
    }

    #[test]
    fn a_multi_ledger_object_is_cut_at_each_ledger() {
        use stellar_xdr::{LedgerCloseMetaBatch, WriteXdr};
        let lake = testnet();
        let metas: Vec<LedgerCloseMeta> = (997..=999)
            .map(|seq| lake.read_batch(seq).unwrap().unwrap().ledger_close_metas[0].clone())
            .collect();
        let batch = LedgerCloseMetaBatch {
            start_sequence: 997,
            end_sequence: 999,
            ledger_close_metas: metas.clone().try_into().unwrap(),
        };
        let xdr = batch.to_xdr(Limits::none()).unwrap();
        // Real consecutive ledgers: the hash chain finds the cuts without decoding, and they are
        // the cuts decoding finds.
        let by_chain = split_by_hash_chain(&xdr[12..], 997, 3).expect("the chain holds");
        assert_eq!(by_chain, split_by_decoding(&xdr[12..], 997, 999).unwrap());
        let ledgers = split_batch(&xdr).unwrap();
        assert_eq!(ledgers.len(), 3);
        for (ledger, meta) in ledgers.iter().zip(&metas) {
            assert_eq!(ledger.sequence, ledger_sequence(meta));
            assert_eq!(
                ledger.ledger_close_meta_xdr,
                meta.to_xdr(Limits::none()).unwrap()
            );
        }

        // A header that lies about its ledgers is refused.
        let mut wrong = batch.clone();
        wrong.end_sequence = 1000;
        let err = split_batch(&wrong.to_xdr(Limits::none()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("997-1000"), "{err:#}");
        let mut shuffled = batch;
        shuffled.ledger_close_metas = vec![metas[1].clone(), metas[0].clone(), metas[2].clone()]
            .try_into()
            .unwrap();
        let err = split_batch(&shuffled.to_xdr(Limits::none()).unwrap()).unwrap_err();
        assert!(
            format!("{err:#}").contains("holds ledger 998 where 997"),
            "{err:#}"
        );
        assert!(split_batch(&[0, 0, 0]).is_err());
    }

    #[test]
    fn the_hash_chain_cuts_protocol_25_ledgers_like_decoding() {
        use stellar_xdr::{LedgerCloseMetaBatch, WriteXdr};
        let lake = DataLake::new(
            real_lake("standalone-p25-10048-10077"),
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000,
            },
        )
        .unwrap();
        let metas: Vec<LedgerCloseMeta> = (10048..=10055)
            .map(|seq| lake.read_batch(seq).unwrap().unwrap().ledger_close_metas[0].clone())
            .collect();
        assert!(matches!(metas[0], LedgerCloseMeta::V2(_)));
        let batch = LedgerCloseMetaBatch {
            start_sequence: 10048,
            end_sequence: 10055,
            ledger_close_metas: metas.try_into().unwrap(),
        };
        let xdr = batch.to_xdr(Limits::none()).unwrap();
        let by_chain = split_by_hash_chain(&xdr[12..], 10048, 8).expect("the chain holds");
        assert_eq!(
            by_chain,
            split_by_decoding(&xdr[12..], 10048, 10055).unwrap()
        );
        // A batch claiming other sequence numbers is not cut by the chain.
        assert_eq!(split_by_hash_chain(&xdr[12..], 10047, 8), None);
    }

    #[test]
    fn a_broken_hash_chain_falls_back_to_decoding() {
        use stellar_xdr::{LedgerCloseMetaBatch, WriteXdr};
        let lake = testnet();
        let mut metas: Vec<LedgerCloseMeta> = (997..=999)
            .map(|seq| lake.read_batch(seq).unwrap().unwrap().ledger_close_metas[0].clone())
            .collect();
        let LedgerCloseMeta::V1(v1) = &mut metas[1] else {
            panic!("testnet 998 is LedgerCloseMeta v1");
        };
        v1.ledger_header.header.previous_ledger_hash.0 = [7; 32];
        let batch = LedgerCloseMetaBatch {
            start_sequence: 997,
            end_sequence: 999,
            ledger_close_metas: metas.clone().try_into().unwrap(),
        };
        let xdr = batch.to_xdr(Limits::none()).unwrap();
        assert_eq!(split_by_hash_chain(&xdr[12..], 997, 3), None);
        let ledgers = split_batch(&xdr).unwrap();
        for (ledger, meta) in ledgers.iter().zip(&metas) {
            assert_eq!(
                ledger.ledger_close_meta_xdr,
                meta.to_xdr(Limits::none()).unwrap()
            );
        }
    }

    fn copy_ledger(from: &DataLake, to: &DataLake, seq: u32) {
        let source = from.find_file(seq).unwrap();
        let key = to
            .layout()
            .object_key(seq, stellar_ttp::datalake::WRITE_EXTENSION);
        let target = to.root().join(key);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        // Write then rename, as an exporter publishing an object would.
        let partial = target.with_extension("partial");
        fs::copy(source, &partial).unwrap();
        fs::rename(partial, target).unwrap();
    }

    fn recv(rx: &mut mpsc::Receiver<Result<RawLedger, Status>>) -> RawLedger {
        rx.blocking_recv()
            .expect("stream ended")
            .expect("stream failed")
    }

    /// Polls `condition` (for at most a minute, so a broken reader fails instead of hanging).
    fn wait_for(condition: impl Fn() -> bool) {
        for _ in 0..60_000 {
            if condition() {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("condition not met");
    }

    #[test]
    fn reads_ahead_then_polls_for_ledgers_that_appear_later() {
        let real = testnet();
        let dir = TempDir::new("live");
        let lake = DataLake::new(&dir.0, real.layout()).unwrap();
        copy_ledger(&real, &lake, 997);
        copy_ledger(&real, &lake, 998);
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let reader = ReadAhead {
            lake: lake.clone(),
            poll_interval: Duration::from_millis(20),
            capacity: 1,
            metrics: metrics.clone(),
        };
        let (mut rx, thread) = reader.spawn(997, "test".into()).unwrap();
        assert_eq!(recv(&mut rx).sequence, 997);
        assert_eq!(recv(&mut rx).sequence, 998);
        // 999 is not there yet: the reader waits (live mode) until it appears.
        assert!(rx.try_recv().is_err());
        copy_ledger(&real, &lake, 999);
        let ledger = recv(&mut rx);
        assert_eq!(ledger.sequence, 999);
        assert_eq!(metrics.get("success_count"), 3.0);
        assert_eq!(metrics.get("last_successful_sequence"), 999.0);
        assert!(metrics.get("total_bytes_processed") > 0.0);
        // The client going away ends the reader while it polls for 1000.
        drop(rx);
        thread.join().unwrap();
    }

    #[test]
    fn the_read_ahead_queue_is_bounded() {
        let real = real_lake("standalone-p25-10048-10077");
        let lake = DataLake::new(
            real,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000,
            },
        )
        .unwrap();
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let reader = ReadAhead {
            lake,
            poll_interval: Duration::from_millis(20),
            capacity: 2,
            metrics: metrics.clone(),
        };
        let (mut rx, thread) = reader.spawn(10048, "test".into()).unwrap();
        assert_eq!(recv(&mut rx).sequence, 10048);
        // With nobody receiving, the reader stops once the queue is full: the queue's two
        // ledgers and the one it is blocked handing over are all it reads past what was
        // received.
        wait_for(|| metrics.get("success_count") >= 4.0);
        // Give a reader that ignored the bound ample time to run ahead, then check it did not.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(metrics.get("success_count"), 4.0);
        assert_eq!(rx.len(), 2);
        assert_eq!(recv(&mut rx).sequence, 10049);
        drop(rx);
        thread.join().unwrap();
    }

    #[test]
    fn decompression_falls_back_to_streaming_when_the_guesses_are_too_small() {
        let mut reader = ObjectReader::new().unwrap();
        reader.max_one_shot = 4 << 20;
        let mut decompress = |compressed: &[u8]| {
            reader.compressed = compressed.to_vec();
            reader.decompress().map(|()| reader.xdr.clone())
        };
        // Zeros compress far beyond both guesses.
        let data = vec![0u8; 8 << 20];
        let compressed = zstd::encode_all(data.as_slice(), 3).unwrap();
        assert_eq!(decompress(&compressed).unwrap(), data);
        // Beyond the first guess, within the second; then a small object in the grown buffer.
        let data = vec![7u8; 3 << 20];
        let compressed = zstd::encode_all(data.as_slice(), 3).unwrap();
        assert!(compressed.len() * 16 < 1 << 20);
        assert_eq!(decompress(&compressed).unwrap(), data);
        let small = zstd::encode_all(&b"ledger"[..], 3).unwrap();
        assert_eq!(decompress(&small).unwrap(), b"ledger");
        assert!(decompress(b"not zstd").is_err());
    }

    #[test]
    fn a_corrupt_object_is_an_error_not_a_skip() {
        let dir = TempDir::new("corrupt");
        let lake = DataLake::new(
            &dir.0,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 1,
            },
        )
        .unwrap();
        fs::write(
            dir.0.join(lake.layout().object_key(5, "xdr.zst")),
            b"not zstd",
        )
        .unwrap();
        let reader = ReadAhead {
            lake,
            poll_interval: Duration::from_millis(5),
            capacity: 1,
            metrics: Metrics::with_keys(IDENTITY.metric_keys),
        };
        let (mut rx, thread) = reader.spawn(5, "test".into()).unwrap();
        let status = rx.blocking_recv().unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(rx.blocking_recv().is_none());
        thread.join().unwrap();
        assert_eq!(reader.metrics.get("error_count"), 1.0);
    }
}
