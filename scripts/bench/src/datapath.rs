//! Section 3, data path: ledgers/s and events/s through the three containers (the consumer's own
//! summary, from its request to its last event, containers already up) against the in-process
//! floor `ttp-processor events --datalake` (the same files in one process: read, decompress,
//! decode, extract, JSON to /dev/null), on the generated lake; and the same pipeline with one
//! decoding thread in the processor, no more parallel than the floor.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::bench::Bench;
use crate::lake;
use crate::pipelines;
use crate::runs::{run_logged, Stop};
use crate::stats::{Samples, Table};

pub fn run(bench: &Bench) -> Result<()> {
    println!("== 3. data path: three containers end to end vs the in-process floor");
    let lake = lake::shared(bench)?;
    let range = &lake.range;
    let pipeline = pipelines::example(bench, "datapath.yaml", range, range.last, &[])?;
    let one_thread = pipelines::example(
        bench,
        "datapath-1.yaml",
        range,
        range.last,
        &[("TTP_WORKERS", "1")],
    )?;
    println!("{}", lake.describe());
    let ttp = bench.binary("ttp-processor")?;
    let ledgers = range.ledgers() as f64;
    let mut samples = Samples::default();
    for _ in 0..bench.effort.runs {
        let mut floor = Command::new(&ttp);
        floor.args(["events", "--datalake"]).arg(&range.lake).args([
            "--start",
            &range.first.to_string(),
            "--end",
            &range.last.to_string(),
        ]);
        floor.stdout(Stdio::null());
        let logged = run_logged(floor, Stop::AtEnd, |_| {})?;
        logged.check("ttp-processor events")?;
        let events = logged
            .lines
            .iter()
            .find_map(|(_, l)| {
                let before = &l[..l.find(" events")?];
                before.rsplit(' ').next()?.parse::<f64>().ok()
            })
            .context("ttp-processor events did not say how many events it wrote")?;
        let seconds = logged.seconds();
        samples.push("floor", "ledgers/s", ledgers / seconds);
        samples.push("floor", "events/s", events / seconds);
        samples.push("floor", "seconds", seconds);
        samples.push("floor", "events", events);
        for (label, file) in [("pipeline", &pipeline), ("pipeline1", &one_thread)] {
            let project = bench.name("d");
            let (logged, _) = bench.flowctl_run(
                &bench.docker,
                &project,
                file,
                &["--no-verify"],
                Stop::AtEnd,
                |_| {},
            )?;
            logged.check("flowctl run")?;
            let summary = logged
                .consumer_summary("consumer-app")
                .context("consumer-app printed no summary")?;
            for field in [
                "ledgers_per_second",
                "events_per_second",
                "elapsed_seconds",
                "events",
            ] {
                let value = summary[field]
                    .as_f64()
                    .with_context(|| format!("consumer-app's summary has no {field}"))?;
                let name = match field {
                    "ledgers_per_second" => "ledgers/s",
                    "events_per_second" => "events/s",
                    "elapsed_seconds" => "seconds",
                    _ => "events",
                };
                samples.push(label, name, value);
            }
        }
    }
    let mut table = Table::new([
        &format!("median of {}", bench.effort.runs),
        "pipeline",
        "floor",
        "ratio",
    ]);
    for (field, name) in [
        ("ledgers/s", "ledgers/s"),
        ("events/s", "events/s"),
        ("seconds", "seconds for the range"),
    ] {
        table.compare(
            name,
            samples.median("pipeline", field),
            samples.median("floor", field),
            1,
        );
    }
    let one = samples.median("pipeline1", "ledgers/s");
    let floor = samples.median("floor", "ledgers/s");
    table.compare("ledgers/s, processor with 1 decoding thread", one, floor, 1);
    table.print();
    let pipeline_rate = samples.median("pipeline", "ledgers/s");
    bench.record_opt("datapath", "pipeline_ledgers_per_s", pipeline_rate);
    bench.record_opt("datapath", "floor_ledgers_per_s", floor);
    bench.record_opt(
        "datapath",
        "pipeline_per_floor",
        crate::stats::ratio(pipeline_rate, floor),
    );
    bench.record_opt(
        "datapath",
        "one_thread_per_floor",
        crate::stats::ratio(one, floor),
    );
    println!(
        "   events per run (expected {}): pipeline {} | 1 thread {} | floor {}",
        lake.expected_events,
        samples.listed("pipeline", "events"),
        samples.listed("pipeline1", "events"),
        samples.listed("floor", "events")
    );
    println!("   (pipeline: consumer request to last event, containers already up, processor with one decoding");
    println!(
        "   thread per core unless said; floor: process start to exit; the three run in turn)"
    );
    for label in ["pipeline", "pipeline1", "floor"] {
        if samples
            .values(label, "events")
            .iter()
            .any(|&e| e != lake.expected_events as f64)
        {
            bail!(
                "a {label} run did not deliver the {} expected events",
                lake.expected_events
            );
        }
    }
    Ok(())
}
