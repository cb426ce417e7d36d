//! Where a stream's ledgers come from: a data lake folder ([`fs`]), an S3 or GCS bucket
//! ([`object_store`]) or a Stellar RPC server ([`rpc`]). Each backend is opened once at start-up
//! ([`open`]: the lake's `.config.json` is read, the server must answer) and hands every stream
//! its own [`Feed`], which the stream's reader thread pulls from in ledger order.
//!
//! Invariant: a feed never skips a ledger. It answers for exactly the ledger asked for: the
//! object or page holding it, "not there yet" (live mode: the reader waits and asks again), or an
//! error that ends the stream and names the endpoint, bucket and key.

pub mod fs;
pub mod object_store;
pub mod rpc;
pub mod window;

use std::sync::Arc;

use flowctl_proto::raw_ledger_service::RawLedger;
use stellar_ttp::datalake::{DataLake, Layout};

use super::config::{BackendConfig, LakeSettings, Prefetch, SourceConfig, DEFAULT_PREFETCH};

/// What a feed has for the ledger asked for.
pub enum Chunk<'a> {
    /// A compressed galexie object holding it; `name` (path or `s3://bucket/key`) is for errors.
    Object { name: &'a str, compressed: &'a [u8] },
    /// Ledgers already cut (RPC), the first one the ledger asked for.
    Ledgers(Vec<RawLedger>),
    /// Not there yet. `later`: a later ledger that is there, which makes this one a gap rather
    /// than the live edge; `name` says what was looked for.
    NotYet { name: String, later: Option<u32> },
}

/// A failure that ends a stream: the gRPC code the client gets and a message naming what failed.
#[derive(Debug, Clone)]
pub struct FeedError {
    pub code: tonic::Code,
    pub message: String,
}

impl FeedError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> FeedError {
        FeedError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A task spawned to run ahead of a stream, aborted when dropped (a closed stream stops its
/// requests).
pub(crate) struct Spawned<T>(pub tokio::task::JoinHandle<Result<T, FeedError>>);

impl<T> Spawned<T> {
    pub async fn join(mut self) -> Result<T, FeedError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) => Err(FeedError::new(
                tonic::Code::Internal,
                format!("a read-ahead task failed: {e}"),
            )),
        }
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One stream's view of a backend. Blocking: called from the stream's reader thread.
pub trait Feed: Send {
    /// What holds `ledger`.
    fn next(&mut self, ledger: u32) -> Result<Chunk<'_>, FeedError>;

    /// Drops anything fetched ahead, so that the next [`Feed::next`] fetches anew (after a
    /// corrupt object, which a live exporter may still have been writing).
    fn forget(&mut self) {}
}

/// An opened backend, shared by every stream.
#[derive(Debug, Clone)]
pub enum Backend {
    Folder(DataLake),
    Objects(Arc<object_store::ObjectLake>),
    Rpc(Arc<rpc::RpcLedgers>),
}

impl Backend {
    /// A new stream's feed; remote backends fetch objects (pages) ahead as `prefetch` says.
    pub fn feed(&self, prefetch: Prefetch) -> Box<dyn Feed> {
        match self {
            Backend::Folder(lake) => Box::new(fs::FolderFeed::new(lake.clone())),
            Backend::Objects(lake) => {
                Box::new(object_store::ObjectFeed::new(lake.clone(), prefetch))
            }
            Backend::Rpc(rpc) => {
                let pages = if prefetch.adapts {
                    DEFAULT_PREFETCH
                } else {
                    prefetch.objects
                };
                Box::new(rpc::RpcFeed::new(rpc.clone(), pages))
            }
        }
    }

    /// The archive layout, `None` for RPC.
    pub fn layout(&self) -> Option<Layout> {
        match self {
            Backend::Folder(lake) => Some(lake.layout()),
            Backend::Objects(lake) => Some(lake.layout()),
            Backend::Rpc(_) => None,
        }
    }

    /// Where ledgers come from, for logs (never a credential).
    pub fn describe(&self) -> String {
        match self {
            Backend::Folder(lake) => format!("data lake folder {}", lake.root().display()),
            Backend::Objects(lake) => lake.describe(),
            Backend::Rpc(rpc) => rpc.describe(),
        }
    }

    /// `storage_type` in the control plane registration's metadata.
    pub fn storage_type(&self) -> &'static str {
        match self {
            Backend::Folder(_) => "FS",
            Backend::Objects(lake) => lake.storage_type(),
            Backend::Rpc(_) => "RPC",
        }
    }
}

/// A backend ready to stream, with the network it serves.
#[derive(Debug, Clone)]
pub struct Opened {
    pub backend: Backend,
    pub network_passphrase: String,
    /// Where the lake's manifest overrode the environment, to be logged at start-up.
    pub notes: Vec<String>,
}

/// Opens `config`'s backend: reads the lake's `.config.json` (or, for RPC, asks the server for
/// its ledger range). Must run inside the tokio runtime: remote feeds run tasks on it.
pub async fn open(config: &SourceConfig) -> anyhow::Result<Opened> {
    match &config.backend {
        BackendConfig::Folder { root } => {
            let (lake, settings) = fs::open(root, &config.env_lake)?;
            Ok(opened(Backend::Folder(lake), settings))
        }
        BackendConfig::ObjectStore(store) => {
            let (lake, settings) = object_store::ObjectLake::open(store, &config.env_lake).await?;
            Ok(opened(Backend::Objects(Arc::new(lake)), settings))
        }
        BackendConfig::Rpc(rpc) => {
            let network_passphrase =
                config.env_lake.network_passphrase.clone().ok_or_else(|| {
                    anyhow::anyhow!("NETWORK_PASSPHRASE is required with BACKEND_TYPE=RPC")
                })?;
            let ledgers = rpc::RpcLedgers::open(rpc).await?;
            Ok(Opened {
                backend: Backend::Rpc(Arc::new(ledgers)),
                network_passphrase,
                notes: Vec::new(),
            })
        }
    }
}

fn opened(backend: Backend, settings: LakeSettings) -> Opened {
    Opened {
        backend,
        network_passphrase: settings.network_passphrase,
        notes: settings.notes,
    }
}
