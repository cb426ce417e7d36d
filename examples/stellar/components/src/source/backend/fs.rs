//! The folder backend (`ARCHIVE_STORAGE_TYPE=FS`, ours): a galexie data lake mounted into the
//! container. Files are read one after the other into one reused buffer; the page cache makes
//! reading ahead pointless here.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use stellar_ttp::datalake::{DataLake, Manifest};

use super::{Chunk, Feed, FeedError};
use crate::source::config::{EnvLake, LakeSettings};

/// How many files past a missing one the folder feed looks at to tell a gap from the live edge.
const GAP_LOOKAHEAD_FILES: u32 = 64;

/// Reads the folder's `.config.json` and decides the layout and network.
pub fn open(root: &Path, env: &EnvLake) -> anyhow::Result<(DataLake, LakeSettings)> {
    let manifest = Manifest::read(root).map_err(|e| anyhow::anyhow!("BUCKET_NAME: {e:#}"))?;
    let settings = env
        .resolve(manifest.as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let lake = DataLake::new(root, settings.layout)?;
    Ok((lake, settings))
}

/// One stream's reads from a folder.
pub struct FolderFeed {
    lake: DataLake,
    compressed: Vec<u8>,
    name: String,
}

impl FolderFeed {
    pub fn new(lake: DataLake) -> FolderFeed {
        FolderFeed {
            lake,
            compressed: Vec::new(),
            name: String::new(),
        }
    }

    fn read(&mut self, path: &PathBuf) -> anyhow::Result<()> {
        self.compressed.clear();
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_end(&mut self.compressed))
            .with_context(|| format!("reading {}", path.display()))?;
        self.name = path.display().to_string();
        Ok(())
    }
}

impl Feed for FolderFeed {
    fn next(&mut self, ledger: u32) -> Result<Chunk<'_>, FeedError> {
        let Some(path) = self.lake.find_file(ledger) else {
            let step = self.lake.layout().ledgers_per_file;
            let later = (1..=GAP_LOOKAHEAD_FILES)
                .filter_map(|files| ledger.checked_add(files * step))
                .find(|later| self.lake.find_file(*later).is_some());
            let key = self
                .lake
                .layout()
                .object_key(ledger, stellar_ttp::datalake::EXTENSIONS[0]);
            return Ok(Chunk::NotYet {
                name: self.lake.root().join(key).display().to_string(),
                later,
            });
        };
        self.read(&path)
            .map_err(|e| FeedError::new(tonic::Code::Unavailable, format!("{e:#}")))?;
        Ok(Chunk::Object {
            name: &self.name,
            compressed: &self.compressed,
        })
    }
}
