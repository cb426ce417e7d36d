//! Sections 6, relay, and 7, processes, on the generated lake, in turns:
//! - relay: the first-generation pipeline (components dialing each other) against the same
//!   pipeline of flowctl.v1 components (examples/ttp-pipeline-v1.yaml) relayed by flowctl;
//! - processes: that flowctl.v1 pipeline as host processes (`driver: process`) against it as
//!   containers.
//!
//! Events/s come from counts that prove every event arrived (the consumer's summary; the
//! ConsumeResponse flowctl prints for a relayed consumer), time from each consumer's own
//! summary (its call to its last event); flowctl's CPU seconds (the process, and its gRPC
//! threads: the relay and the tokio workers it runs on) and VmHWM are sampled every 100 ms
//! until it exits.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::bench::Bench;
use crate::lake::{self, Lake};
use crate::pipelines;
use crate::runs::Stop;
use crate::sample::ProcessSampler;
use crate::stats::{fmt, ratio, Samples, Table};

/// The threads of flowctl that carry relayed events.
const RELAY_THREADS: &[&str] = &["relay", "flowctl-tokio"];

pub fn run_relay(bench: &Bench) -> Result<()> {
    println!("== 6. relay: flowctl.v1 components relayed by flowctl vs the first generation dialing each other");
    let lake = lake::shared(bench)?;
    let direct = pipelines::example(
        bench,
        "relay-direct.yaml",
        &lake.range,
        lake.range.last,
        &[],
    )?;
    let relayed = pipelines::v1(bench, "relay-v1.yaml", &lake.range)?;
    println!("{}", lake.describe());
    compare(
        bench,
        "relay",
        &lake,
        Side("relayed", &relayed, Consumer::Relayed),
        Side("direct", &direct, Consumer::Direct),
    )?;
    println!("   goals: relayed/direct events/s >= 0.8, flowctl RSS while relaying < 50 MB");
    Ok(())
}

pub fn run_processes(bench: &Bench) -> Result<()> {
    println!("== 7. processes: the flowctl.v1 pipeline as host processes (driver: process) vs as containers");
    let lake = lake::shared(bench)?;
    let containers = pipelines::v1(bench, "proc-containers.yaml", &lake.range)?;
    let processes = pipelines::processes(bench, "proc-processes.yaml", &lake.range)?;
    println!("{}", lake.describe());
    compare(
        bench,
        "processes",
        &lake,
        Side("processes", &processes, Consumer::Relayed),
        Side("containers", &containers, Consumer::Relayed),
    )?;
    println!("   goal: processes/containers ledgers/s >= 1 (the process path is not slower)");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Consumer {
    /// consumer-app, dialing the processor; its summary counts.
    Direct,
    /// consumer-app-v1, relayed; the count is its ConsumeResponse as flowctl prints it.
    Relayed,
}

/// One side of a comparison: its label, its pipeline and how its consumer's count is read.
struct Side<'p>(&'static str, &'p Path, Consumer);

/// Runs `b` and `a` in turns, the bench's number of times, and reports `a` against `b` as
/// figures of `section`.
fn compare(bench: &Bench, section: &str, lake: &Lake, a: Side, b: Side) -> Result<()> {
    let mut samples = Samples::default();
    for _ in 0..bench.effort.runs {
        for Side(label, pipeline, consumer) in [&b, &a] {
            measure(bench, lake, label, pipeline, *consumer, &mut samples)?;
        }
    }
    report(bench, section, lake, &samples, (a.0, b.0))
}

fn measure(
    bench: &Bench,
    lake: &Lake,
    label: &str,
    pipeline: &Path,
    consumer: Consumer,
    samples: &mut Samples,
) -> Result<()> {
    let mut sampler = ProcessSampler::default();
    let project = bench.name("r");
    let (logged, _) = bench.flowctl_run(
        &bench.docker,
        &project,
        pipeline,
        &["--no-verify"],
        Stop::AtEnd,
        |pid| sampler.sample(pid, RELAY_THREADS),
    )?;
    logged.check(&format!("flowctl run ({label})"))?;
    let (events, summary) = match consumer {
        Consumer::Direct => {
            let summary = logged
                .consumer_summary("consumer-app")
                .context("consumer-app printed no summary")?;
            (summary["events"].as_f64(), summary)
        }
        Consumer::Relayed => {
            const ANSWERED: &str = "relay: consumer-app-v1 answered: ";
            let events = logged.line(ANSWERED).and_then(|l| {
                let rest = &l[l.find(ANSWERED)? + ANSWERED.len()..];
                let (count, tail) = rest.split_once(" event(s) consumed, ")?;
                (tail.trim() == "0 failed").then(|| count.parse::<f64>().ok())?
            });
            let summary = logged
                .consumer_summary("consumer-app-v1")
                .context("consumer-app-v1 printed no summary")?;
            (events, summary)
        }
    };
    let events = events.with_context(|| format!("no proven event count in the {label} run"))?;
    let seconds = summary["elapsed_seconds"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .context("the consumer's summary has no elapsed_seconds")?;
    samples.push(label, "events", events);
    samples.push(label, "events/s", events / seconds);
    samples.push(label, "ledgers/s", lake.range.ledgers() as f64 / seconds);
    samples.push(label, "seconds", seconds);
    samples.push(label, "cpu", sampler.cpu_seconds);
    samples.push(label, "relay cpu", sampler.named_cpu_seconds());
    samples.push(label, "hwm", sampler.hwm_kb as f64 / 1024.0);
    Ok(())
}

fn report(
    bench: &Bench,
    section: &str,
    lake: &Lake,
    samples: &Samples,
    (a, b): (&str, &str),
) -> Result<()> {
    let mut table = Table::new([&format!("median of {}", bench.effort.runs), a, b, "ratio"]);
    for (field, name, decimals) in [
        ("events/s", "events/s", 1),
        ("ledgers/s", "ledgers/s", 1),
        ("seconds", "seconds for the range", 2),
        ("cpu", "flowctl CPU s per run (process)", 2),
        (
            "relay cpu",
            "flowctl CPU s per run (relay and tokio threads)",
            2,
        ),
    ] {
        let (x, y) = (samples.median(a, field), samples.median(b, field));
        table.compare(name, x, y, decimals);
        let key = field.replace([' ', '/'], "_");
        bench.record_opt(section, &format!("{a}_{key}"), x);
        bench.record_opt(section, &format!("{b}_{key}"), y);
        bench.record_opt(section, &format!("{key}_{a}_per_{b}"), ratio(x, y));
    }
    let (x, y) = (samples.max(a, "hwm"), samples.max(b, "hwm"));
    table.row([
        "flowctl peak RSS (MB, VmHWM, max of runs)",
        &fmt(x, 1),
        &fmt(y, 1),
        "",
    ]);
    table.print();
    bench.record_opt(section, &format!("{a}_peak_rss_mb"), x);
    bench.record_opt(section, &format!("{b}_peak_rss_mb"), y);
    println!(
        "   events per run (expected {}): {a} {} | {b} {}",
        lake.expected_events,
        samples.listed(a, "events"),
        samples.listed(b, "events")
    );
    let all = [a, b].iter().all(|l| {
        samples
            .values(l, "events")
            .iter()
            .all(|&e| e == lake.expected_events as f64)
    });
    println!(
        "   every run delivered every expected event: {}",
        if all { "yes" } else { "NO" }
    );
    bench.record(section, "every_event_delivered", all);
    if !all {
        bail!("a run did not deliver every expected event");
    }
    Ok(())
}
