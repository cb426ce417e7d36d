//! `datalake-gen`: writes a deterministic protocol-23 data lake in the galexie layout, and
//! optionally the token transfer events a processor must produce for it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use stellar_datagen::{generate, lake_from_base64, Config, Profile, STANDALONE_PASSPHRASE};
use stellar_ttp::datalake::Layout;

/// Generate a Stellar data lake (galexie layout, protocol 23) with known token transfer events.
#[derive(Debug, Parser)]
#[command(name = "datalake-gen", version)]
struct Args {
    /// Folder to write the lake into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// First ledger sequence (a multiple of --ledgers-per-file).
    #[arg(long, required_unless_present = "from_base64")]
    start: Option<u32>,
    /// Number of ledgers (rounded up to whole files, as galexie writes them).
    #[arg(long, required_unless_present = "from_base64")]
    ledgers: Option<u32>,
    /// Instead of generating: write the real ledgers of this file (one base64
    /// `LedgerCloseMeta` per line) as the lake, one per file.
    #[arg(long, conflicts_with_all = ["start", "ledgers", "expected", "profile", "seed"])]
    from_base64: Option<PathBuf>,
    /// `small` (a few dozen transactions per ledger) or `mainnet-like` (several hundred).
    #[arg(long, default_value = "small")]
    profile: String,
    /// Seed of the random stream; the same arguments always give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ledgers per file (galexie LEDGERS_PER_FILE).
    #[arg(long, default_value_t = 1)]
    ledgers_per_file: u32,
    /// Files per partition folder (galexie FILES_PER_PARTITION).
    #[arg(long, default_value_t = 64_000)]
    files_per_partition: u32,
    /// Network passphrase recorded in .config.json and used for transaction hashes and
    /// contract ids.
    #[arg(long, default_value = STANDALONE_PASSPHRASE)]
    network_passphrase: String,
    /// Also write the expected token transfer events here (JSON lines).
    #[arg(long)]
    expected: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("datalake-gen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let layout = Layout {
        ledgers_per_file: args.ledgers_per_file,
        files_per_partition: args.files_per_partition,
    };
    if let Some(file) = &args.from_base64 {
        let sequences = lake_from_base64(file, &args.out, &args.network_passphrase, layout)?;
        let listed: Vec<String> = sequences.iter().map(u32::to_string).collect();
        eprintln!(
            "datalake-gen: wrote {} real ledger(s) into {}: {}",
            sequences.len(),
            args.out.display(),
            listed.join(", ")
        );
        return Ok(());
    }
    let config = Config {
        out: args.out,
        // Both required by clap without --from-base64.
        start: args.start.unwrap_or_default(),
        ledgers: args.ledgers.unwrap_or_default(),
        profile: Profile::parse(&args.profile)?,
        seed: args.seed,
        layout,
        passphrase: args.network_passphrase,
        expected: args.expected,
    };
    let started = Instant::now();
    let summary = generate(&config)?;
    let s = &summary.stats;
    let per_kind = |m: &std::collections::BTreeMap<&str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "datalake-gen: {} ledgers ({}-{}) in {} files, {} bytes, {:.2}s\n  transactions: {} \
         ({} failed, {} soroban, {} refunds, {} fee bumps)\n  operations: {}\n  expected events: {}",
        s.ledgers,
        summary.first,
        summary.last,
        summary.files,
        summary.compressed_bytes,
        started.elapsed().as_secs_f64(),
        s.transactions,
        s.failed,
        s.soroban,
        s.refunds,
        s.fee_bumps,
        per_kind(&s.ops),
        per_kind(&s.events),
    );
    Ok(())
}
