//! Turning a galexie data lake object into ledgers: zstd decompression with a reused context
//! and buffers ([`ObjectReader`]), then cutting the XDR `LedgerCloseMetaBatch` into one
//! `RawLedger` per `LedgerCloseMeta` ([`split_batch`]). Shared by every archive backend (folder,
//! S3, GCS); the invariant: a ledger handed out holds exactly its own `LedgerCloseMeta` XDR.

use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use flowctl_proto::raw_ledger_service::RawLedger;
use stellar_ttp::datalake::ledger_sequence;
use stellar_xdr::{LedgerCloseMeta, Limited, Limits, ReadXdr};

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

/// Reads, decompresses and splits one data lake file (a one-off [`ObjectReader`]).
pub fn read_object(path: &Path) -> Result<Vec<RawLedger>> {
    let compressed = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ObjectReader::new()?.ledgers(&path.display().to_string(), &compressed)
}

/// Decompresses and splits data lake objects one after the other, reusing its zstd context and
/// buffer: a fresh multi-megabyte buffer per object costs a page fault (and the kernel zeroing a
/// page) for every 4 KiB decompressed, which was a fifth of the source's CPU.
pub struct ObjectReader {
    decompressor: zstd::bulk::Decompressor<'static>,
    xdr: Vec<u8>,
    /// The largest buffer a one-shot decompression is tried with.
    max_one_shot: usize,
}

impl ObjectReader {
    /// A reader with an empty buffer (it grows to the largest object read).
    pub fn new() -> Result<ObjectReader> {
        Ok(ObjectReader {
            decompressor: zstd::bulk::Decompressor::new()
                .context("creating a zstd decompression context")?,
            xdr: Vec::new(),
            max_one_shot: 256 << 20,
        })
    }

    /// The ledgers of the object `name` (its path or key, for errors) holding `compressed`.
    pub fn ledgers(&mut self, name: &str, compressed: &[u8]) -> Result<Vec<RawLedger>> {
        self.decompress(compressed)
            .with_context(|| format!("zstd-decompressing {name}"))?;
        split_batch(&self.xdr).with_context(|| format!("splitting {name}"))
    }

    /// Decompresses `compressed` into `xdr`. Galexie's frames do not record their size, so a
    /// one-shot decompression (about twice as fast as streaming) is tried into the buffer grown
    /// to a generous guess, then to the largest size allowed (only the pages written are ever
    /// touched); streaming handles whatever does not fit.
    fn decompress(&mut self, compressed: &[u8]) -> std::io::Result<()> {
        let guess = compressed
            .len()
            .saturating_mul(16)
            .clamp(1 << 20, self.max_one_shot);
        for size in [guess, self.max_one_shot] {
            self.xdr.clear();
            self.xdr.reserve(size);
            if self
                .decompressor
                .decompress_to_buffer(compressed, &mut self.xdr)
                .is_ok()
            {
                return Ok(());
            }
        }
        self.xdr.clear();
        zstd::stream::read::Decoder::new(compressed)?.read_to_end(&mut self.xdr)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use stellar_ttp::datalake::{DataLake, Layout};

    pub fn real_lake(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ledgers")
            .join(name)
    }

    pub fn testnet() -> DataLake {
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

    /// The hand-read header offsets hold for every real ledger in `examples/ledgers`, whatever
    /// `LedgerCloseMeta` version and extension arm it has (mainnet's protocol 21 ledger carries
    /// `LedgerCloseMetaExtV1`).
    #[test]
    fn the_header_is_found_in_every_real_ledger() {
        fn files(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, found);
                } else if path.to_string_lossy().contains(".xdr.zst") {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        files(&real_lake(""), &mut found);
        assert!(found.len() >= 5, "{found:?}");
        for path in found {
            for ledger in read_object(&path).unwrap() {
                let xdr = &ledger.ledger_close_meta_xdr;
                let hash_at = header_hash_offset(xdr, 0).expect("a known LedgerCloseMeta shape");
                assert_eq!(
                    header_sequence(xdr, hash_at),
                    Some(ledger.sequence),
                    "{}",
                    path.display()
                );
            }
        }
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

    #[test]
    fn decompression_falls_back_to_streaming_when_the_guesses_are_too_small() {
        let mut reader = ObjectReader::new().unwrap();
        reader.max_one_shot = 4 << 20;
        let mut decompress =
            |compressed: &[u8]| reader.decompress(compressed).map(|()| reader.xdr.clone());
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
}
