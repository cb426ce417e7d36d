//! `ttp-processor events`: the extraction run offline, in one process, over a data lake folder
//! or a file of base64 `LedgerCloseMeta` lines, printing one JSON line per event. It is also the
//! in-process floor of the data-path benchmark ([`count_datalake_range`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine;
use flowctl_proto::token_transfer::TokenTransferEvent;
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};

use crate::datalake::{ledger_sequence, DataLake, Layout, Manifest};
use crate::events::balances::verify_ledger;
use crate::events::{event_kind, Extractor};
use crate::json::write_event_json;

/// Passphrase of the public network, the default for `--base64-file`.
pub const MAINNET_PASSPHRASE: &str = "Public Global Stellar Network ; September 2015";

const USAGE: &str = "usage:
  ttp-processor events --datalake DIR --start S --end E [--network-passphrase P] [--verify]
  ttp-processor events --base64-file FILE [--network-passphrase P] [--verify]

Prints one JSON object per token transfer event on stdout and a summary on stderr.
--datalake reads a galexie-layout folder (layout and passphrase from its .config.json when
present; without one: 64 ledgers per file, 10 files per partition, and --network-passphrase is
required). --base64-file reads one base64 LedgerCloseMeta per line (mainnet by default).
--verify also checks, transaction by transaction, that the events account for every balance
change in the ledger (upstream's VerifyEvents) and fails on the first mismatch.";

/// What a run read and produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeCounts {
    pub ledgers: u64,
    /// Ledgers of the range that the lake does not hold (gaps are real in some lakes).
    pub missing_ledgers: Vec<u32>,
    pub transactions: u64,
    pub events: u64,
    /// Events per kind (`fee`, `transfer`, `mint`, `burn`, `clawback`).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Transactions whose events passed the balance verification (`--verify`).
    pub verified_transactions: u64,
}

impl RangeCounts {
    fn add(&mut self, events: &[TokenTransferEvent]) {
        self.events += events.len() as u64;
        for event in events {
            *self.by_kind.entry(event_kind(event)).or_insert(0) += 1;
        }
    }

    /// One line for humans: `3 ledgers, 17 txs, 22 events (fee 17, transfer 5)`.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut line = format!(
            "{} ledgers, {} transactions, {} events ({})",
            self.ledgers,
            self.transactions,
            self.events,
            kinds.join(", ")
        );
        if self.verified_transactions > 0 {
            line.push_str(&format!(
                "; balances verified for {} transactions",
                self.verified_transactions
            ));
        }
        if !self.missing_ledgers.is_empty() {
            line.push_str(&format!("; not in the lake: {:?}", self.missing_ledgers));
        }
        line
    }
}

/// A data lake folder opened the way the source opens it: the manifest's layout and passphrase
/// win; `passphrase` is needed only when there is no manifest (or overrides it, with a warning).
pub fn open_datalake(dir: &Path, passphrase: Option<&str>) -> Result<(DataLake, String)> {
    if !dir.is_dir() {
        bail!("data lake {} is not a folder", dir.display());
    }
    let manifest = Manifest::read(dir)?;
    let layout = manifest
        .as_ref()
        .map_or(Layout::default(), |m| m.layout_or(Layout::default()));
    let from_manifest = manifest.and_then(|m| m.network_passphrase);
    let passphrase = match (passphrase, from_manifest) {
        (Some(given), Some(lake)) if given != lake => {
            eprintln!(
                "warning: --network-passphrase {given:?} differs from {lake:?} in {}/.config.json; using {given:?}",
                dir.display()
            );
            given.to_string()
        }
        (Some(given), _) => given.to_string(),
        (None, Some(lake)) => lake,
        (None, None) => bail!(
            "{} has no .config.json naming the network: pass --network-passphrase",
            dir.display()
        ),
    };
    Ok((DataLake::new(dir, layout)?, passphrase))
}

/// Reads ledgers `start..=end` of a lake in order and hands each to `each`; ledgers the lake
/// lacks are recorded in `missing`. Reading and decompressing run on a second thread, a few
/// ledgers ahead, so decoding overlaps what `each` does.
pub fn for_each_ledger(
    lake: &DataLake,
    start: u32,
    end: u32,
    missing: &mut Vec<u32>,
    mut each: impl FnMut(&LedgerCloseMeta) -> Result<()>,
) -> Result<()> {
    if end < start {
        bail!("--end {end} is before --start {start}");
    }
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Read>>(4);
        scope.spawn(move || {
            let result = read_range(lake, start, end, |item| sender.send(Ok(item)).is_ok());
            if let Err(e) = result {
                let _ = sender.send(Err(e));
            }
        });
        // Returning early drops the receiver, which stops the reader at its next send.
        for item in receiver {
            match item? {
                Read::Ledger(meta) => each(&meta)?,
                Read::Missing(seq) => missing.push(seq),
            }
        }
        Ok(())
    })
}

/// What the reader thread finds, in ledger order.
enum Read {
    Ledger(Box<LedgerCloseMeta>),
    Missing(u32),
}

/// Walks `start..=end` file by file; stops early (without error) when `send` returns false.
fn read_range(
    lake: &DataLake,
    start: u32,
    end: u32,
    mut send: impl FnMut(Read) -> bool,
) -> Result<()> {
    let mut next = start;
    while next <= end {
        let Some(batch) = lake.read_batch(next)? else {
            if !send(Read::Missing(next)) {
                return Ok(());
            }
            next += 1;
            continue;
        };
        let before = next;
        let batch_end = batch.end_sequence.min(end);
        for meta in batch.ledger_close_metas.into_vec() {
            let seq = ledger_sequence(&meta);
            if seq < next || seq > end {
                continue;
            }
            // Inside a batch ledgers are contiguous; anything skipped is a gap.
            for gap in next..seq {
                if !send(Read::Missing(gap)) {
                    return Ok(());
                }
            }
            if !send(Read::Ledger(Box::new(meta))) {
                return Ok(());
            }
            next = seq + 1;
        }
        if next == before {
            // The file for `next` exists but does not hold it.
            if !send(Read::Missing(next)) {
                return Ok(());
            }
            next += 1;
        }
        while next <= batch_end {
            if !send(Read::Missing(next)) {
                return Ok(());
            }
            next += 1;
        }
    }
    Ok(())
}

/// Extracts the events of `start..=end` from a lake, handing each ledger's events to `each`.
pub fn extract_datalake_range(
    dir: &Path,
    start: u32,
    end: u32,
    passphrase: Option<&str>,
    each: impl FnMut(&[TokenTransferEvent]) -> Result<()>,
) -> Result<RangeCounts> {
    extract_datalake_range_with(dir, start, end, passphrase, false, each)
}

/// [`extract_datalake_range`], with `verify` running upstream's balance verification on every
/// ledger (an error on the first transaction whose events do not match its balance changes).
pub fn extract_datalake_range_with(
    dir: &Path,
    start: u32,
    end: u32,
    passphrase: Option<&str>,
    verify: bool,
    mut each: impl FnMut(&[TokenTransferEvent]) -> Result<()>,
) -> Result<RangeCounts> {
    let (lake, passphrase) = open_datalake(dir, passphrase)?;
    let mut extractor = Extractor::new(&passphrase);
    let mut counts = RangeCounts::default();
    let mut missing = Vec::new();
    for_each_ledger(&lake, start, end, &mut missing, |meta| {
        let (events, txs) = extractor
            .ledger_events_and_tx_count(meta)
            .with_context(|| format!("extracting ledger {}", ledger_sequence(meta)))?;
        counts.ledgers += 1;
        counts.transactions += txs as u64;
        counts.add(&events);
        if verify {
            counts.verified_transactions += verify_ledger(meta, &passphrase)? as u64;
        }
        each(&events)
    })?;
    counts.missing_ledgers = missing;
    Ok(counts)
}

/// The benchmark's in-process floor: read, zstd-decode, XDR-decode and extract `start..=end`
/// with no network and no output, returning what was counted.
pub fn count_datalake_range(
    dir: &Path,
    start: u32,
    end: u32,
    passphrase: Option<&str>,
) -> Result<RangeCounts> {
    extract_datalake_range(dir, start, end, passphrase, |_| Ok(()))
}

/// Decodes a file of base64 `LedgerCloseMeta` lines (blank lines ignored).
pub fn read_base64_ledgers(path: &Path) -> Result<Vec<LedgerCloseMeta>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line)
            .with_context(|| format!("{}:{}: invalid base64", path.display(), n + 1))?;
        let meta = LedgerCloseMeta::from_xdr(&bytes, Limits::none()).with_context(|| {
            format!("{}:{}: invalid LedgerCloseMeta XDR", path.display(), n + 1)
        })?;
        out.push(meta);
    }
    Ok(out)
}

/// Extracts the events of every ledger of a base64 file.
pub fn extract_base64_file(
    path: &Path,
    passphrase: &str,
    each: impl FnMut(&[TokenTransferEvent]) -> Result<()>,
) -> Result<RangeCounts> {
    extract_base64_file_with(path, passphrase, false, each)
}

/// [`extract_base64_file`], with `verify` as in [`extract_datalake_range_with`].
pub fn extract_base64_file_with(
    path: &Path,
    passphrase: &str,
    verify: bool,
    mut each: impl FnMut(&[TokenTransferEvent]) -> Result<()>,
) -> Result<RangeCounts> {
    let mut extractor = Extractor::new(passphrase);
    let mut counts = RangeCounts::default();
    for meta in read_base64_ledgers(path)? {
        let (events, txs) = extractor
            .ledger_events_and_tx_count(&meta)
            .with_context(|| format!("extracting ledger {}", ledger_sequence(&meta)))?;
        counts.ledgers += 1;
        counts.transactions += txs as u64;
        counts.add(&events);
        if verify {
            counts.verified_transactions += verify_ledger(&meta, passphrase)? as u64;
        }
        each(&events)?;
    }
    Ok(counts)
}

/// Parsed `events` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsArgs {
    DataLake {
        dir: PathBuf,
        start: u32,
        end: u32,
        passphrase: Option<String>,
        verify: bool,
    },
    Base64File {
        file: PathBuf,
        passphrase: Option<String>,
        verify: bool,
    },
    Help,
}

/// Parses the arguments after `events` (a leading `events` is accepted too).
pub fn parse_events_args(args: &[String]) -> Result<EventsArgs> {
    let mut args = args.iter().peekable();
    if args.peek().map(|a| a.as_str()) == Some("events") {
        args.next();
    }
    let (mut dir, mut file, mut start, mut end, mut passphrase) = (None, None, None, None, None);
    let mut verify = false;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(EventsArgs::Help);
        }
        if name == "--verify" {
            verify = true;
            continue;
        }
        let mut value = || -> Result<String> {
            match inline.clone().or_else(|| args.next().cloned()) {
                Some(v) => Ok(v),
                None => bail!("{name} needs a value\n{USAGE}"),
            }
        };
        let ledger = |v: String| -> Result<u32> {
            v.parse()
                .with_context(|| format!("{name}: {v:?} is not a ledger sequence"))
        };
        match name {
            "--datalake" => dir = Some(PathBuf::from(value()?)),
            "--base64-file" => file = Some(PathBuf::from(value()?)),
            "--start" => start = Some(ledger(value()?)?),
            "--end" => end = Some(ledger(value()?)?),
            "--network-passphrase" => passphrase = Some(value()?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    match (dir, file) {
        (Some(dir), None) => {
            let (Some(start), Some(end)) = (start, end) else {
                bail!("--datalake needs --start and --end\n{USAGE}");
            };
            if end < start {
                bail!("--end {end} is before --start {start}");
            }
            Ok(EventsArgs::DataLake {
                dir,
                start,
                end,
                passphrase,
                verify,
            })
        }
        (None, Some(file)) => {
            if start.is_some() || end.is_some() {
                bail!("--start/--end apply to --datalake only (a base64 file is read whole)");
            }
            Ok(EventsArgs::Base64File {
                file,
                passphrase,
                verify,
            })
        }
        (Some(_), Some(_)) => bail!("give either --datalake or --base64-file, not both\n{USAGE}"),
        (None, None) => bail!("missing --datalake or --base64-file\n{USAGE}"),
    }
}

/// `ttp-processor events ...`: prints one JSON line per event on stdout (buffered) and a
/// summary on stderr. A closed stdout (e.g. `| head`) ends the run quietly.
pub fn run_events_command(args: &[String]) -> Result<()> {
    let parsed = parse_events_args(args)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut line = String::with_capacity(1024);
    let mut print = |events: &[TokenTransferEvent]| -> Result<()> {
        for event in events {
            line.clear();
            write_event_json(event, &mut line);
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    };
    let result = match parsed {
        EventsArgs::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        EventsArgs::DataLake {
            dir,
            start,
            end,
            passphrase,
            verify,
        } => {
            extract_datalake_range_with(&dir, start, end, passphrase.as_deref(), verify, &mut print)
        }
        EventsArgs::Base64File {
            file,
            passphrase,
            verify,
        } => extract_base64_file_with(
            &file,
            passphrase.as_deref().unwrap_or(MAINNET_PASSPHRASE),
            verify,
            &mut print,
        ),
    };
    let flushed = out.flush();
    let counts = match result {
        Ok(counts) => counts,
        Err(e) if is_broken_pipe(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    match flushed {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing events to stdout")?,
    }
    eprintln!("{}", counts.summary());
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn meta(seq: u32) -> LedgerCloseMeta {
        let mut v0 = stellar_xdr::LedgerCloseMetaV0::default();
        v0.ledger_header.header.ledger_seq = seq;
        LedgerCloseMeta::V0(v0)
    }

    /// A scratch lake, removed on drop.
    struct ScratchLake(std::path::PathBuf);

    impl Drop for ScratchLake {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scratch_lake() -> (ScratchLake, DataLake) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "stellar-ttp-offline-{}-{nanos}",
            std::process::id()
        ));
        let layout = Layout {
            ledgers_per_file: 4,
            files_per_partition: 2,
        };
        let lake = DataLake::new(&dir, layout).expect("lake");
        let batch = |start: u32, end: u32, seqs: &[u32]| stellar_xdr::LedgerCloseMetaBatch {
            start_sequence: start,
            end_sequence: end,
            ledger_close_metas: seqs
                .iter()
                .map(|s| meta(*s))
                .collect::<Vec<_>>()
                .try_into()
                .expect("metas"),
        };
        // 4..7 lacks 6; no file for 8..11; 12..15 complete.
        lake.write_batch(&batch(4, 7, &[4, 5, 7])).expect("write");
        lake.write_batch(&batch(12, 15, &[12, 13, 14, 15]))
            .expect("write");
        (ScratchLake(dir), lake)
    }

    #[test]
    fn reading_a_range_reports_gaps_inside_and_between_files() {
        let (_guard, lake) = scratch_lake();
        let mut seen = Vec::new();
        let mut missing = Vec::new();
        for_each_ledger(&lake, 5, 13, &mut missing, |m| {
            seen.push(ledger_sequence(m));
            Ok(())
        })
        .expect("read");
        assert_eq!(seen, vec![5, 7, 12, 13]);
        assert_eq!(missing, vec![6, 8, 9, 10, 11]);
    }

    #[test]
    fn an_error_from_the_consumer_stops_the_reader() {
        let (_guard, lake) = scratch_lake();
        let mut seen = Vec::new();
        let mut missing = Vec::new();
        let err = for_each_ledger(&lake, 4, 15, &mut missing, |m| {
            seen.push(ledger_sequence(m));
            if seen.len() == 2 {
                bail!("stop here");
            }
            Ok(())
        })
        .expect_err("consumer error");
        assert_eq!(format!("{err}"), "stop here");
        assert_eq!(seen, vec![4, 5]);
    }

    #[test]
    fn parses_datalake_and_base64_forms() {
        assert_eq!(
            parse_events_args(&args("events --datalake /l --start 5 --end=7")).expect("valid"),
            EventsArgs::DataLake {
                dir: "/l".into(),
                start: 5,
                end: 7,
                passphrase: None,
                verify: false
            }
        );
        assert_eq!(
            parse_events_args(&args("--base64-file f.txt --verify")).expect("valid"),
            EventsArgs::Base64File {
                file: "f.txt".into(),
                passphrase: None,
                verify: true
            }
        );
        let with_passphrase = vec![
            "--datalake".to_string(),
            "/l".into(),
            "--start".into(),
            "1".into(),
            "--end".into(),
            "1".into(),
            "--network-passphrase".into(),
            "Test SDF Network ; September 2015".into(),
        ];
        assert!(matches!(
            parse_events_args(&with_passphrase).expect("valid"),
            EventsArgs::DataLake { passphrase: Some(p), .. } if p == "Test SDF Network ; September 2015"
        ));
    }

    #[test]
    fn rejects_bad_arguments_with_the_reason() {
        let err = |s: &str| format!("{:#}", parse_events_args(&args(s)).expect_err("invalid"));
        assert!(err("--datalake /l --start 5").contains("--start and --end"));
        assert!(err("--datalake /l --start 9 --end 5").contains("before --start"));
        assert!(err("--datalake /l --start x --end 5").contains("not a ledger sequence"));
        assert!(err("--bogus 1").contains("unknown argument"));
        assert!(err("").contains("missing --datalake"));
        assert!(err("--datalake /l --base64-file f").contains("not both"));
        assert!(err("--base64-file f --start 1").contains("--datalake only"));
    }
}
