//! The data path's lake: generated once per invocation into the work folder (not timed) by
//! `datalake-gen` in galexie's mainnet layout (one ledger per file, 64,000 files per
//! partition), several hundred transactions per ledger. `BENCH_DATAPATH_LEDGERS` sets its size.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::bench::Bench;
use crate::pipelines::Range;

pub const FIRST: u32 = 1024;

/// A generated lake and what `datalake-gen` said of it.
#[derive(Debug, Clone)]
pub struct Lake {
    pub range: Range,
    pub files: u64,
    pub bytes: u64,
    pub transactions: u64,
    /// Events the pipeline must deliver for the whole range.
    pub expected_events: u64,
}

impl Lake {
    /// The lake line of the sections that read it.
    pub fn describe(&self) -> String {
        let ledgers = self.range.ledgers() as u64;
        format!(
            "   lake: datalake-gen --profile mainnet-like, {ledgers} ledgers {}-{}, {} txs/ledger ({}), {} events\n         {} files of 1 ledger (galexie's mainnet layout), {} MiB zstd; generated once, not timed",
            self.range.first,
            self.range.last,
            self.transactions / ledgers.max(1),
            self.transactions,
            self.expected_events,
            self.files,
            self.bytes / 1_048_576
        )
    }
}

fn ledgers() -> Result<u32> {
    match std::env::var("BENCH_DATAPATH_LEDGERS") {
        Ok(n) => n
            .parse()
            .ok()
            .filter(|&n: &u32| n > 1)
            .with_context(|| format!("BENCH_DATAPATH_LEDGERS={n}: a number of ledgers above 1")),
        Err(_) => Ok(1024),
    }
}

/// Generates a lake into `out`.
pub fn generate(bench: &Bench, out: &Path) -> Result<Lake> {
    let gen = bench.binary("datalake-gen")?;
    let ledgers = ledgers()?;
    let result = Command::new(&gen)
        .arg("--out")
        .arg(out)
        .args([
            "--start",
            &FIRST.to_string(),
            "--ledgers",
            &ledgers.to_string(),
        ])
        .args(["--profile", "mainnet-like", "--ledgers-per-file", "1"])
        .args(["--files-per-partition", "64000"])
        .output()
        .with_context(|| format!("running {}", gen.display()))?;
    let log = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        bail!("datalake-gen failed ({}): {log}", result.status);
    }
    let config = std::fs::read_to_string(out.join(".config.json"))
        .context("datalake-gen wrote no .config.json")?;
    let config: serde_json::Value = serde_json::from_str(&config)?;
    let passphrase = config["networkPassphrase"]
        .as_str()
        .context("no networkPassphrase in the lake's .config.json")?
        .to_string();
    Ok(Lake {
        range: Range {
            lake: out.to_path_buf(),
            first: FIRST,
            last: FIRST + ledgers - 1,
            passphrase,
        },
        files: number_before(&log, " files").context("datalake-gen: no file count")?,
        bytes: number_before(&log, " bytes").context("datalake-gen: no byte count")?,
        transactions: number_after(&log, "transactions: ")
            .context("datalake-gen: no transactions")?,
        expected_events: expected_events(&log).context("datalake-gen: no expected events")?,
    })
}

/// The data path's lake, generated on first use and shared by the sections that read it.
pub fn shared(bench: &Bench) -> Result<Lake> {
    static LAKE: OnceLock<Lake> = OnceLock::new();
    if let Some(lake) = LAKE.get() {
        return Ok(lake.clone());
    }
    let lake = generate(bench, &bench.file("lake"))?;
    Ok(LAKE.get_or_init(|| lake).clone())
}

/// The number right before `unit` in `text` ("in 1024 files").
fn number_before(text: &str, unit: &str) -> Option<u64> {
    let end = text.find(unit)?;
    let start = text[..end].rfind(|c: char| !c.is_ascii_digit())? + 1;
    text[start..end].parse().ok()
}

/// The number right after `label` in `text`.
fn number_after(text: &str, label: &str) -> Option<u64> {
    let rest = &text[text.find(label)? + label.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The sum of `kind=N` on the "expected events:" line.
fn expected_events(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("expected events:"))?;
    let counts = line.split_once("expected events:")?.1;
    counts
        .split_whitespace()
        .map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse::<u64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_datalake_gen_prints() {
        let log =
            "datalake-gen: 1024 ledgers (1024-2047) in 1024 files, 136314880 bytes, 9.12s\n  \
                   transactions: 450000 (1 failed, 2 soroban, 3 refunds, 4 fee bumps)\n  \
                   operations: payment=3\n  expected events: fee=10 transfer=5 mint=1\n";
        assert_eq!(number_before(log, " files"), Some(1024));
        assert_eq!(number_before(log, " bytes"), Some(136_314_880));
        assert_eq!(number_after(log, "transactions: "), Some(450_000));
        assert_eq!(expected_events(log), Some(16));
        assert_eq!(expected_events("expected events: x=y"), None);
    }
}
