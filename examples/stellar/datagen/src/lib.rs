//! A deterministic generator of Stellar data lakes for flowctl's example pipeline.
//!
//! It simulates a small network (accounts, issued assets with trustlines, market makers) and
//! writes protocol-23 ledgers (`LedgerCloseMeta` V2, transaction meta V4) in the galexie layout,
//! using [`stellar_ttp::datalake`] for keys and files. Each ledger holds payments (XLM and
//! issued, including mints from and burns to the issuer), batch payouts, create account, path
//! payments crossing offers, account merges, clawbacks, failed transactions, and Soroban calls
//! of Stellar Asset Contracts (transfer, mint, burn) with their CAP-67 events and fee refunds.
//!
//! Alongside, it can write the token transfer events a processor must produce for those ledgers
//! ([`expected`]), computed from what it generated (the plan of each transaction) by the
//! upstream rules, never by running the extractor.
//!
//! Same arguments, same bytes: all randomness comes from one [`rng::SplitMix64`] stream.

pub mod expected;
pub mod ledger;
pub mod plan;
pub mod rng;
pub mod world;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stellar_ttp::datalake::{DataLake, Layout, MANIFEST_FILE};
use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch};

pub use ledger::Stats;

/// The standalone network's passphrase (the default: generated ledgers belong to no real
/// network).
pub const STANDALONE_PASSPHRASE: &str = "Standalone Network ; February 2017";

/// How busy the generated ledgers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A few dozen transactions per ledger.
    Small,
    /// Several hundred transactions per ledger, as mainnet in 2025.
    MainnetLike,
}

impl Profile {
    /// Parses `small` or `mainnet-like`.
    pub fn parse(s: &str) -> Result<Profile> {
        match s {
            "small" => Ok(Profile::Small),
            "mainnet-like" => Ok(Profile::MainnetLike),
            other => bail!("unknown profile {other:?} (expected small or mainnet-like)"),
        }
    }

    fn population(self) -> world::Population {
        match self {
            Profile::Small => world::Population {
                users: 60,
                issuers: 3,
                assets: 5,
                makers: 2,
            },
            Profile::MainnetLike => world::Population {
                users: 5_000,
                issuers: 8,
                assets: 14,
                makers: 12,
            },
        }
    }

    /// Classic and Soroban transaction counts per ledger (inclusive ranges).
    fn tx_counts(self) -> ((i64, i64), (i64, i64)) {
        match self {
            Profile::Small => ((16, 32), (4, 10)),
            Profile::MainnetLike => ((250, 420), (40, 110)),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    pub out: PathBuf,
    pub start: u32,
    /// Ledgers to write; rounded up to whole files.
    pub ledgers: u32,
    pub profile: Profile,
    pub seed: u64,
    pub layout: Layout,
    pub passphrase: String,
    pub expected: Option<PathBuf>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// First and last ledger written (`--ledgers` is rounded up to whole files).
    pub first: u32,
    pub last: u32,
    pub stats: Stats,
    pub files: u64,
    pub compressed_bytes: u64,
}

/// Generates the lake (and the expected events) described by `config`.
pub fn generate(config: &Config) -> Result<Summary> {
    let layout = config.layout;
    layout.validate()?;
    if config.ledgers == 0 {
        bail!("--ledgers must be at least 1");
    }
    if config.start < 2 {
        bail!("--start must be at least 2 (ledger 1 is the genesis ledger)");
    }
    if layout.file_start(config.start) != config.start {
        bail!(
            "--start {} is not the first ledger of a file of {} ledgers (galexie files start at \
             multiples of LEDGERS_PER_FILE); use a multiple of {}",
            config.start,
            layout.ledgers_per_file,
            layout.ledgers_per_file
        );
    }
    // galexie only writes whole files, and a reader may treat a missing ledger inside an
    // existing file as an error rather than the live edge: round up to whole files.
    let per_file = layout.ledgers_per_file;
    let count = config.ledgers.div_ceil(per_file).saturating_mul(per_file);
    let end = config
        .start
        .checked_add(count - 1)
        .context("--start + --ledgers overflows a ledger sequence")?;
    fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    write_manifest(&config.out, &config.passphrase, layout)?;
    let lake = DataLake::new(&config.out, layout)?;
    let mut expected = match &config.expected {
        Some(path) => Some(BufWriter::new(
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };

    let mut generator = Generator::new(
        config.profile,
        config.seed,
        &config.passphrase,
        config.start,
    )?;
    let mut summary = Summary {
        first: config.start,
        last: end,
        stats: Stats::default(),
        files: 0,
        compressed_bytes: 0,
    };
    let mut batch: Vec<LedgerCloseMeta> = Vec::new();
    let mut line = String::new();
    for seq in config.start..=end {
        let ledger = generator.next_ledger(seq)?;
        if let Some(out) = expected.as_mut() {
            for event in &ledger.events {
                line.clear();
                line.push_str(&event.to_json_line());
                line.push('\n');
                out.write_all(line.as_bytes())
                    .context("writing the expected events")?;
            }
        }
        batch.push(ledger.meta);
        let file_end = layout
            .file_start(seq)
            .saturating_add(layout.ledgers_per_file - 1);
        if seq == file_end || seq == end {
            let start = seq + 1 - batch.len() as u32;
            let metas = std::mem::take(&mut batch);
            let path = lake.write_batch(&LedgerCloseMetaBatch {
                start_sequence: start,
                end_sequence: seq,
                ledger_close_metas: metas.try_into().context("batch too large")?,
            })?;
            summary.files += 1;
            summary.compressed_bytes += fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
        }
    }
    if let Some(mut out) = expected {
        out.flush().context("writing the expected events")?;
    }
    summary.stats = generator.stats;
    Ok(summary)
}

/// Writes the real ledgers of `file` (one base64 `LedgerCloseMeta` per line, as
/// `examples/ledgers/pubnet-ttp-example` holds them) as a lake at `out`, one ledger per object
/// whatever gaps lie between them; returns their sequences in file order.
pub fn lake_from_base64(
    file: &Path,
    out: &Path,
    passphrase: &str,
    layout: Layout,
) -> Result<Vec<u32>> {
    use base64::Engine as _;
    use stellar_xdr::{Limits, ReadXdr};
    layout.validate()?;
    if layout.ledgers_per_file != 1 {
        bail!("--from-base64 writes one ledger per file: --ledgers-per-file must be 1");
    }
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_manifest(out, passphrase, layout)?;
    let lake = DataLake::new(out, layout)?;
    let mut sequences = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", file.display(), index + 1);
        let xdr = base64::engine::general_purpose::STANDARD
            .decode(line)
            .with_context(|| format!("{}: not base64", at()))?;
        let meta = LedgerCloseMeta::from_xdr(&xdr, Limits::none())
            .with_context(|| format!("{}: not an XDR LedgerCloseMeta", at()))?;
        let sequence = match &meta {
            LedgerCloseMeta::V0(m) => m.ledger_header.header.ledger_seq,
            LedgerCloseMeta::V1(m) => m.ledger_header.header.ledger_seq,
            LedgerCloseMeta::V2(m) => m.ledger_header.header.ledger_seq,
        };
        lake.write_batch(&LedgerCloseMetaBatch {
            start_sequence: sequence,
            end_sequence: sequence,
            ledger_close_metas: vec![meta].try_into().context("batch too large")?,
        })?;
        sequences.push(sequence);
    }
    Ok(sequences)
}

/// Writes `.config.json` as newer galexie versions do.
fn write_manifest(root: &Path, passphrase: &str, layout: Layout) -> Result<()> {
    let text = format!(
        "{{\n  \"networkPassphrase\": {},\n  \"version\": \"1.0\",\n  \"compression\": \"zstd\",\n  \
         \"ledgersPerBatch\": {},\n  \"batchesPerPartition\": {}\n}}\n",
        json_string(passphrase),
        layout.ledgers_per_file,
        layout.files_per_partition
    );
    let path = root.join(MANIFEST_FILE);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Generates ledgers one after the other from a seeded world.
pub struct Generator {
    rng: rng::SplitMix64,
    world: world::World,
    chain: ledger::Chain,
    profile: Profile,
    /// Counts of everything generated so far.
    pub stats: Stats,
}

impl Generator {
    /// A generator whose first ledger will be `start`.
    pub fn new(profile: Profile, seed: u64, passphrase: &str, start: u32) -> Result<Generator> {
        let mut rng = rng::SplitMix64::new(seed ^ 0x5354_454c_4c41_5221);
        let world = world::World::new(&mut rng, passphrase, profile.population(), start - 1)?;
        let chain = ledger::Chain {
            prev_hash: rng.bytes32(),
            // 2025-09-03T00:00:00Z, around protocol 23 on mainnet.
            close_time: 1_756_857_600,
            fee_pool: 40_000_000_000_000,
            total_coins: 1_000_000_000_000_000_000,
            id_pool: 300_000_000 + rng.below(1_000_000),
            soroban_state_bytes: 500_000_000,
        };
        Ok(Generator {
            rng,
            world,
            chain,
            profile,
            stats: Stats::default(),
        })
    }

    /// Generates ledger `seq` (call with consecutive sequences).
    pub fn next_ledger(&mut self, seq: u32) -> Result<ledger::Ledger> {
        let ((c_lo, c_hi), (s_lo, s_hi)) = self.profile.tx_counts();
        let classic = self.rng.range(c_lo, c_hi);
        let soroban = self.rng.range(s_lo, s_hi);
        // Surge pricing in a third of the busy ledgers.
        let surge = (self.profile == Profile::MainnetLike && self.rng.chance(330))
            .then(|| self.rng.range(101, 200));
        let mut plans = Vec::with_capacity((classic + soroban) as usize);
        for _ in 0..classic {
            plans.push(plan::classic_tx(&mut self.rng, &mut self.world, seq));
        }
        for _ in 0..soroban {
            plans.push(plan::soroban_tx(&mut self.rng, &mut self.world));
        }
        ledger::build_ledger(
            &mut self.rng,
            &mut self.world,
            &mut self.chain,
            &mut self.stats,
            seq,
            plans,
            surge,
        )
    }
}
