//! flowctl's benchmarks. Every figure is a ratio of two things measured in turns in the same
//! invocation (medians of the runs), because shared machines are noisy; no figure is a
//! threshold anything fails on. Each section is a module of its own; the tables are printed as
//! they are measured and every figure also goes to a JSON file of results (`--json`, default
//! `target/bench/results.json`).
//!
//! Needs the release binaries and the flowctl/*:dev images (scripts/build-images.sh; another
//! tag: FLOWCTL_IMAGE_TAG for both), the engine (`FLOWCTL_DOCKER_BIN`, default docker), and per
//! section what it names (docker-compose v1, podman, s3s-fs, curl). A missing tool fails the
//! section with what to install: nothing is skipped or replaced by a fallback. Everything it
//! creates carries a name unique to this invocation (`fb<pid>`...) and is removed on exit, also
//! on Ctrl+C.

mod backends;
mod bench;
mod cost;
mod datapath;
mod lake;
mod lifecycle;
mod pipelines;
mod relay;
mod runs;
mod sample;
mod scaling;
mod soak;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use bench::{output, Bench, Effort};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Section {
    /// Every section but the soak (which may be named beside it).
    All,
    /// The example pipeline: flowctl run vs docker-compose up + down vs the bare CLI floor,
    /// on each engine of --engines.
    Lifecycle,
    /// Fan-outs of 3, 10 and 30 test components: time to all-healthy vs the engine's floor.
    Scaling,
    /// Three containers end to end vs the in-process floor (ttp-processor events).
    Datapath,
    /// flowctl's own cost: peak RSS, idle CPU, binary size, start time.
    Cost,
    /// The source alone from S3 (s3s-fs) vs the folder vs the server's ceiling (curl x64).
    Backends,
    /// flowctl.v1 components relayed by flowctl vs the first generation dialing each other.
    Relay,
    /// The flowctl.v1 pipeline as host processes (driver: process) vs as containers.
    Processes,
    /// A live pipeline for --soak-minutes, sampled every 30 s.
    Soak,
}

/// flowctl's benchmarks: ratios of things measured in turns in one run.
#[derive(Debug, Parser)]
#[command(name = "flowctl-bench")]
struct Args {
    /// What to measure (default: all).
    #[arg(value_enum)]
    sections: Vec<Section>,
    /// 3 runs per figure, 20 s idle windows.
    #[arg(long, conflicts_with = "once")]
    quick: bool,
    /// 1 run per figure, 10 s idle windows: to try the bench out, or in CI so it cannot rot.
    #[arg(long)]
    once: bool,
    /// The engines of the lifecycle section, in turns (the other sections use
    /// FLOWCTL_DOCKER_BIN, default docker).
    #[arg(long, value_delimiter = ',', default_value = "docker,podman")]
    engines: Vec<String>,
    /// How long the soak runs.
    #[arg(long, default_value_t = 10)]
    soak_minutes: u64,
    /// Where the JSON results go.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("flowctl-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let root = checkout()?;
    let effort = if args.once {
        Effort::ONCE
    } else if args.quick {
        Effort::QUICK
    } else {
        Effort::FULL
    };
    let mut sections = args.sections.clone();
    if sections.is_empty() || sections.contains(&Section::All) {
        sections.retain(|s| *s == Section::Soak);
        sections.splice(
            0..0,
            [
                Section::Lifecycle,
                Section::Scaling,
                Section::Datapath,
                Section::Cost,
                Section::Backends,
                Section::Relay,
                Section::Processes,
            ],
        );
    }
    let bench = Arc::new(Bench::new(root, effort)?);
    let engines: Vec<String> = if sections.contains(&Section::Lifecycle) {
        args.engines.clone()
    } else {
        vec![bench.docker.clone()]
    };
    {
        let (bench, engines) = (bench.clone(), engines.clone());
        ctrlc::set_handler(move || {
            let engines: Vec<&str> = engines.iter().map(String::as_str).collect();
            bench.cleanup(&engines);
            bench.remove_work();
            std::process::exit(130);
        })
        .context("installing the Ctrl+C handler")?;
    }

    println!("flowctl benchmarks");
    let machine = machine_info(&bench);
    println!("{machine}");
    let started = Instant::now();
    let mut result = Ok(());
    for section in &sections {
        println!();
        let outcome = match section {
            Section::Lifecycle => lifecycle::run(&bench, &args.engines),
            Section::Scaling => scaling::run(&bench),
            Section::Datapath => datapath::run(&bench),
            Section::Cost => cost::run(&bench),
            Section::Backends => backends::run(&bench),
            Section::Relay => relay::run_relay(&bench),
            Section::Processes => relay::run_processes(&bench),
            Section::Soak => soak::run(&bench, args.soak_minutes),
            Section::All => unreachable!("expanded above"),
        };
        if let Err(e) = outcome {
            result = Err(e.context(format!("section {section:?}")));
            break;
        }
    }
    let engine_names: Vec<&str> = engines.iter().map(String::as_str).collect();
    let left = bench.cleanup(&engine_names);
    bench.remove_work();
    println!();
    println!(
        "leftover containers of this run: {left}; took {} s",
        started.elapsed().as_secs()
    );
    let json = args
        .json
        .unwrap_or_else(|| bench.root.join("target/bench/results.json"));
    write_results(&bench, &json, &machine, result.is_ok())?;
    println!("results: {}", json.display());
    result
}

/// The checkout the bench belongs to: the folder above its binary (target/.../release/) that
/// holds scripts/bench.
fn checkout() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the bench's own binary")?;
    exe.ancestors()
        .find(|dir| dir.join("scripts/bench/Cargo.toml").is_file())
        .map(PathBuf::from)
        .with_context(|| {
            format!(
                "{} is not inside a flowctl checkout (run it as scripts/bench.sh)",
                exe.display()
            )
        })
}

fn machine_info(bench: &Bench) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_string();
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1_048_576);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let docker = output(
        &bench.docker,
        &["version", "--format", "{{.Server.Version}}"],
    )
    .unwrap_or_else(|e| format!("? ({e})"));
    let compose = output(&bench.compose, &["version", "--short"]).unwrap_or_else(|_| "?".into());
    let flowctl = output(&bench.flowctl.to_string_lossy(), &["--version"]).unwrap_or_default();
    let commit = output(
        "git",
        &[
            "-C",
            &bench.root.to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    )
    .unwrap_or_default();
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    format!(
        "machine: {cores} cores ({model}), {mem_gb} GB RAM, kernel {}\nengine: {} {}, docker-compose {}; {} @ {}\ndate: {}, runs per figure: {} (in turns)",
        kernel.trim(),
        bench.docker,
        docker.trim(),
        compose.trim(),
        flowctl.trim(),
        commit.trim(),
        date.trim(),
        bench.effort.runs
    )
}

fn write_results(bench: &Bench, path: &PathBuf, machine: &str, complete: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "machine": machine,
        "runs": bench.effort.runs,
        "complete": complete,
        "sections": bench.results(),
    });
    std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
