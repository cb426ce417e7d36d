//! `jsonl-sink`, under upstream's name and contract: consumes `stellar.ledger.batch.v1` events
//! and appends each batch to `JSONL_PATH` (default `ledger_batches.jsonl`, relative to the
//! working directory; missing folders are created) as one line of protobuf JSON, as upstream's
//! sink writes it (every field, lowerCamelCase, 64-bit integers as strings; see
//! [`crate::batch::rows`]). The file is opened (and created) at start, so a path that cannot be
//! written fails the sink before it reports healthy; lines are appended whole, one `write` each.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context as _;

use crate::batch::rows::LedgerBatch;
use crate::component::V1Identity;
use crate::sink::{self, BatchWriter};

/// How the sink describes itself.
pub const IDENTITY: V1Identity = sink::identity(
    "jsonl-sink",
    "Appends each stellar.ledger.batch.v1 batch to JSONL_PATH as one protobuf JSON line",
);

/// Upstream's default `JSONL_PATH`.
pub const DEFAULT_PATH: &str = "ledger_batches.jsonl";

/// The file the lines go to.
pub struct JsonlWriter {
    path: PathBuf,
    file: Mutex<File>,
}

impl JsonlWriter {
    /// Opens `path` for appending, creating it and its folders.
    pub fn open(path: PathBuf) -> anyhow::Result<JsonlWriter> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("JSONL_PATH: cannot create {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("JSONL_PATH: cannot open {} to append", path.display()))?;
        log::info!("appending ledger batches to {}", path.display());
        Ok(JsonlWriter {
            path,
            file: Mutex::new(file),
        })
    }
}

#[tonic::async_trait]
impl BatchWriter for JsonlWriter {
    async fn write(&self, batch: &LedgerBatch) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(batch).context("encoding the batch as JSON")?;
        line.push(b'\n');
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .write_all(&line)
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}

/// `JSONL_PATH`, else [`DEFAULT_PATH`].
pub fn path_from_env() -> Result<PathBuf, String> {
    Ok(std::env::var_os("JSONL_PATH")
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from))
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    sink::main(&IDENTITY, args, path_from_env, |path| async move {
        JsonlWriter::open(path)
    })
}
