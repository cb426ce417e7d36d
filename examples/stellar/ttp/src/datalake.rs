//! A galexie-layout data lake in a local folder (docs/contract.md §6).
//!
//! Each object holds the zstd-compressed XDR of one `LedgerCloseMetaBatch`. Object keys encode
//! `0xFFFFFFFF - start` in hex so that newer ledgers sort first, inside partition folders when a
//! partition holds more than one file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch, Limits, ReadXdr, WriteXdr};

/// File extensions galexie has written, newest first; readers accept both.
pub const EXTENSIONS: [&str; 2] = ["xdr.zst", "xdr.zstd"];

/// The extension this crate writes (the one in docs/contract.md's examples).
pub const WRITE_EXTENSION: &str = "xdr.zstd";

/// Name of the manifest newer exporters write at the root of the lake.
pub const MANIFEST_FILE: &str = ".config.json";

/// How ledgers are grouped into files and files into partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub ledgers_per_file: u32,
    pub files_per_partition: u32,
}

impl Default for Layout {
    /// The upstream defaults: `LEDGERS_PER_FILE=64`, `FILES_PER_PARTITION=10`.
    fn default() -> Self {
        Layout {
            ledgers_per_file: 64,
            files_per_partition: 10,
        }
    }
}

impl Layout {
    /// Checks the layout can address ledgers at all.
    pub fn validate(&self) -> Result<()> {
        if self.ledgers_per_file == 0 {
            bail!("LEDGERS_PER_FILE must be at least 1");
        }
        if self.files_per_partition == 0 {
            bail!("FILES_PER_PARTITION must be at least 1");
        }
        Ok(())
    }

    /// First ledger of the file holding `ledger`.
    pub fn file_start(&self, ledger: u32) -> u32 {
        ledger - ledger % self.ledgers_per_file
    }

    /// Ledgers per partition, as u64 since the product can exceed u32.
    fn partition_size(&self) -> u64 {
        u64::from(self.ledgers_per_file) * u64::from(self.files_per_partition)
    }

    /// The object key (relative path, `/`-separated) of the file holding `ledger`, with `ext`.
    pub fn object_key(&self, ledger: u32, ext: &str) -> String {
        let start = self.file_start(ledger);
        let end = start.saturating_add(self.ledgers_per_file - 1);
        let file = if self.ledgers_per_file == 1 {
            format!("{:08X}--{start}.{ext}", u32::MAX - start)
        } else {
            format!("{:08X}--{start}-{end}.{ext}", u32::MAX - start)
        };
        if self.files_per_partition <= 1 {
            return file;
        }
        let size = self.partition_size();
        let part_start = u64::from(ledger) - u64::from(ledger) % size;
        let part_end = (part_start + size - 1).min(u64::from(u32::MAX));
        // part_start <= ledger, so it fits in u32.
        let hex = u32::MAX - part_start as u32;
        format!("{hex:08X}--{part_start}-{part_end}/{file}")
    }
}

/// The `.config.json` manifest of newer exporters. Unknown keys are ignored.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub network_passphrase: Option<String>,
    pub compression: Option<String>,
    pub ledgers_per_batch: Option<u32>,
    pub batches_per_partition: Option<u32>,
}

impl Manifest {
    /// Reads `<root>/.config.json`; `Ok(None)` when the lake has none.
    pub fn read(root: &Path) -> Result<Option<Manifest>> {
        let path = root.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(compression) = &manifest.compression {
            if compression != "zstd" {
                bail!(
                    "{}: unsupported compression {compression:?} (only zstd)",
                    path.display()
                );
            }
        }
        Ok(Some(manifest))
    }

    /// The manifest's layout where it gives one, else `fallback` field by field.
    pub fn layout_or(&self, fallback: Layout) -> Layout {
        Layout {
            ledgers_per_file: self.ledgers_per_batch.unwrap_or(fallback.ledgers_per_file),
            files_per_partition: self
                .batches_per_partition
                .unwrap_or(fallback.files_per_partition),
        }
    }
}

/// A data lake rooted at a local folder.
#[derive(Debug, Clone)]
pub struct DataLake {
    root: PathBuf,
    layout: Layout,
}

impl DataLake {
    /// A lake at `root` with a known layout.
    pub fn new(root: impl Into<PathBuf>, layout: Layout) -> Result<DataLake> {
        layout.validate()?;
        Ok(DataLake {
            root: root.into(),
            layout,
        })
    }

    /// Root folder of the lake.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Path of the existing file holding `ledger`, trying every known extension.
    pub fn find_file(&self, ledger: u32) -> Option<PathBuf> {
        EXTENSIONS
            .iter()
            .map(|ext| self.root.join(self.layout.object_key(ledger, ext)))
            .find(|path| path.is_file())
    }

    /// Reads and decodes the batch holding `ledger`; `Ok(None)` when its file does not exist
    /// (yet: a live lake grows).
    pub fn read_batch(&self, ledger: u32) -> Result<Option<LedgerCloseMetaBatch>> {
        let Some(path) = self.find_file(ledger) else {
            return Ok(None);
        };
        let compressed = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        decode_batch(&compressed)
            .with_context(|| format!("decoding {}", path.display()))
            .map(Some)
    }

    /// Writes `batch` at the key of its first ledger (creating the partition folder) and returns
    /// the path written. The batch must fit the layout's file boundaries.
    pub fn write_batch(&self, batch: &LedgerCloseMetaBatch) -> Result<PathBuf> {
        let start = batch.start_sequence;
        if self.layout.file_start(start) != start
            || batch.end_sequence < start
            || batch.end_sequence - start >= self.layout.ledgers_per_file
        {
            bail!(
                "batch {start}-{} does not match a file of {} ledgers",
                batch.end_sequence,
                self.layout.ledgers_per_file
            );
        }
        let path = self
            .root
            .join(self.layout.object_key(start, WRITE_EXTENSION));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, encode_batch(batch)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Decompresses and XDR-decodes one data lake object.
pub fn decode_batch(compressed: &[u8]) -> Result<LedgerCloseMetaBatch> {
    let mut xdr = Vec::with_capacity(compressed.len() * 8);
    zstd::stream::read::Decoder::new(compressed)
        .context("starting zstd decoder")?
        .read_to_end(&mut xdr)
        .context("zstd decompression")?;
    LedgerCloseMetaBatch::from_xdr(&xdr, Limits::none()).context("XDR LedgerCloseMetaBatch")
}

/// XDR-encodes and zstd-compresses one data lake object.
pub fn encode_batch(batch: &LedgerCloseMetaBatch) -> Result<Vec<u8>> {
    let xdr = batch
        .to_xdr(Limits::none())
        .context("encoding LedgerCloseMetaBatch")?;
    zstd::encode_all(xdr.as_slice(), 3).context("zstd compression")
}

/// Ledger sequence of a `LedgerCloseMeta`, whatever its version.
pub fn ledger_sequence(meta: &LedgerCloseMeta) -> u32 {
    match meta {
        LedgerCloseMeta::V0(v) => v.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(v) => v.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(v) => v.ledger_header.header.ledger_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_key_matches_contract_examples() {
        let layout = Layout {
            ledgers_per_file: 64,
            files_per_partition: 10,
        };
        assert_eq!(
            layout.object_key(1000, "xdr.zstd"),
            "FFFFFD7F--640-1279/FFFFFC3F--960-1023.xdr.zstd"
        );
        let layout = Layout {
            ledgers_per_file: 1,
            files_per_partition: 64000,
        };
        assert_eq!(
            layout.object_key(5000, "xdr.zstd"),
            "FFFFFFFF--0-63999/FFFFEC77--5000.xdr.zstd"
        );
    }

    #[test]
    fn object_key_without_partitions_has_no_folder() {
        let layout = Layout {
            ledgers_per_file: 1,
            files_per_partition: 1,
        };
        assert_eq!(layout.object_key(2, "xdr.zst"), "FFFFFFFD--2.xdr.zst");
    }

    #[test]
    fn object_key_at_the_top_of_the_range_does_not_overflow() {
        let layout = Layout {
            ledgers_per_file: 64,
            files_per_partition: 64000,
        };
        let key = layout.object_key(u32::MAX, "xdr.zstd");
        assert!(key.ends_with("--4294967232-4294967295.xdr.zstd"), "{key}");
    }

    #[test]
    fn zero_sized_layouts_are_rejected() {
        let zero_files = Layout {
            ledgers_per_file: 0,
            files_per_partition: 1,
        };
        assert!(DataLake::new("/nonexistent", zero_files).is_err());
        let zero_parts = Layout {
            ledgers_per_file: 1,
            files_per_partition: 0,
        };
        assert!(DataLake::new("/nonexistent", zero_parts).is_err());
    }

    #[test]
    fn manifest_overrides_layout_field_by_field() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"networkPassphrase":"Test SDF Network ; September 2015","version":"1.0",
                "compression":"zstd","ledgersPerBatch":1,"batchesPerPartition":64000}"#,
        )
        .unwrap();
        assert_eq!(
            manifest.network_passphrase.as_deref(),
            Some("Test SDF Network ; September 2015")
        );
        let layout = manifest.layout_or(Layout::default());
        assert_eq!(
            layout,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000
            }
        );
    }

    fn testnet_lake() -> DataLake {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ledgers/testnet-997-999");
        let manifest = Manifest::read(&root).unwrap().expect("manifest");
        DataLake::new(root, manifest.layout_or(Layout::default())).unwrap()
    }

    #[test]
    fn reads_real_testnet_ledgers_and_round_trips_them() {
        let lake = testnet_lake();
        for seq in 997..=999 {
            let batch = lake.read_batch(seq).unwrap().expect("file exists");
            assert_eq!((batch.start_sequence, batch.end_sequence), (seq, seq));
            assert_eq!(batch.ledger_close_metas.len(), 1);
            assert_eq!(ledger_sequence(&batch.ledger_close_metas[0]), seq);
            let again = decode_batch(&encode_batch(&batch).unwrap()).unwrap();
            assert_eq!(again, batch);
        }
        assert!(lake.read_batch(1000).unwrap().is_none());
    }

    #[test]
    fn write_then_read_in_both_extensions() {
        let batch = testnet_lake().read_batch(998).unwrap().unwrap();
        let dir = std::env::temp_dir().join(format!("stellar-ttp-lake-{}", std::process::id()));
        let lake = DataLake::new(
            &dir,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000,
            },
        )
        .unwrap();
        let written = lake.write_batch(&batch).unwrap();
        assert!(written.ends_with("FFFFFFFF--0-63999/FFFFFC19--998.xdr.zstd"));
        assert_eq!(lake.read_batch(998).unwrap().unwrap(), batch);
        // Newer exporters write `.xdr.zst`: readers must find those too.
        let newer = written.with_extension("zst");
        fs::rename(&written, &newer).unwrap();
        assert_eq!(lake.read_batch(998).unwrap().unwrap(), batch);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_rejects_a_batch_off_the_file_boundary() {
        let mut batch = testnet_lake().read_batch(998).unwrap().unwrap();
        let lake = DataLake::new(
            "/nonexistent",
            Layout {
                ledgers_per_file: 64,
                files_per_partition: 1,
            },
        )
        .unwrap();
        batch.start_sequence = 998;
        assert!(lake.write_batch(&batch).is_err());
    }
}
