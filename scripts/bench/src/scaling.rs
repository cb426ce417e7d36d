//! Section 2, scaling: fan-outs of 3, 10 and 30 test components (1 source -> N-2 processors -> 1 sink,
//! depth 3), each stopped with SIGINT once up: flowctl's time to all-healthy against the
//! engine's own floor for starting N containers (a network and N parallel `run -d`).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::{output, Bench};
use crate::pipelines;
use crate::runs::{Stop, IS_UP};
use crate::stats::{fmt, ratio, Samples};

const SIZES: [usize; 3] = [3, 10, 30];

pub fn run(bench: &Bench) -> Result<()> {
    println!(
        "== 2. start-up scaling: fan-out of test components (1 source -> N-2 processors -> 1 sink)"
    );
    let files: Vec<_> = SIZES
        .iter()
        .map(|&n| pipelines::fanout(bench, n))
        .collect::<Result<_>>()?;
    let mut samples = Samples::default();
    for _ in 0..bench.effort.runs {
        for (n, file) in SIZES.iter().zip(&files) {
            let label = n.to_string();
            let project = bench.name(&format!("s{n}"));
            let (logged, _) = bench.flowctl_run(
                &bench.docker,
                &project,
                file,
                &[],
                Stop::When(IS_UP),
                |_| {},
            )?;
            let up = logged.seconds_to(IS_UP).with_context(|| {
                format!("the fan-out of {n} did not come up:\n{}", logged.tail(20))
            })?;
            // flowctl's own figure, from after its checks: "... is up: N component(s) in M ms".
            let own = logged.line(IS_UP).and_then(|l| {
                l.split(" in ")
                    .nth(1)?
                    .split(" ms")
                    .next()?
                    .parse::<f64>()
                    .ok()
            });
            samples.push(&label, "flowctl", up * 1000.0);
            if let Some(own) = own {
                samples.push(&label, "own", own);
            }
            samples.push(&label, "floor", engine_floor(bench, *n)? * 1000.0);
        }
    }
    println!(
        "  {:<30} {:>12} {:>8} {:>14} {:>8} {:>12}",
        format!("median of {} (ms)", bench.effort.runs),
        "flowctl",
        "vs 3",
        "engine floor",
        "vs 3",
        "flowctl/floor"
    );
    let (m3, e3) = (samples.median("3", "flowctl"), samples.median("3", "floor"));
    for n in SIZES {
        let label = n.to_string();
        let (m, e) = (
            samples.median(&label, "flowctl"),
            samples.median(&label, "floor"),
        );
        println!(
            "  {:<30} {:>12} {:>8} {:>14} {:>8} {:>12}",
            format!("{n} components (depth 3)"),
            fmt(m, 0),
            fmt(ratio(m, m3), 2),
            fmt(e, 0),
            fmt(ratio(e, e3), 2),
            fmt(ratio(m, e), 2)
        );
        bench.record_opt("scaling", &format!("flowctl_{n}_ms"), m);
        bench.record_opt("scaling", &format!("floor_{n}_ms"), e);
    }
    let (m30, e30) = (
        samples.median("30", "flowctl"),
        samples.median("30", "floor"),
    );
    bench.record_opt("scaling", "flowctl_30_per_3", ratio(m30, m3));
    bench.record_opt("scaling", "floor_30_per_3", ratio(e30, e3));
    println!(
        "   30/3 ratio (target <= 2): flowctl {}, engine floor {}",
        fmt(ratio(m30, m3), 2),
        fmt(ratio(e30, e3), 2)
    );
    let own: Vec<String> = SIZES
        .iter()
        .map(|n| fmt(samples.median(&n.to_string(), "own"), 0))
        .collect();
    println!(
        "   flowctl: process start to its 'is up' line (its own figure, from after the checks: {} ms).",
        own.join(" / ")
    );
    println!(
        "   engine floor: network create + N parallel 'run -d' of the same image, no health wait."
    );
    Ok(())
}

/// The engine's floor for starting `n` containers, in seconds: a network and `n` parallel
/// `run -d` (what flowctl must do at least). Removed afterwards, not timed.
fn engine_floor(bench: &Bench, n: usize) -> Result<f64> {
    let label = format!("io.flowctl.bench={}", bench.tag);
    let net = bench.name("e-net");
    let image = bench.image("test-component");
    let started = Instant::now();
    output(
        &bench.docker,
        &["network", "create", "--label", &label, &net],
    )?;
    let children: Vec<_> = (1..=n)
        .map(|i| {
            Command::new(&bench.docker)
                .args(["run", "-d", "--name", &bench.name(&format!("e-{i}"))])
                .args(["--label", &label, "--network", &net, &image])
                .stdout(std::process::Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut failed = 0;
    for mut child in children {
        if !child.wait()?.success() {
            failed += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    bench.remove_floor(&bench.docker);
    if failed > 0 {
        bail!("{failed} of {n} 'run -d' of the engine floor failed");
    }
    Ok(seconds)
}
