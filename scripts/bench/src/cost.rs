//! Section 4, flowctl's own cost: its peak RSS (VmHWM, sampled every 100 ms until it exits) for the
//! example run and a 30-component fan-out; idle supervision of a live pipeline that has caught
//! up (CPU per minute of flowctl, and with its docker children, against an attached
//! `docker-compose up` on the same pipeline over the same window); the stripped binary's size;
//! and `flowctl --version` start time against `docker --version`.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::{output, Bench};
use crate::pipelines::{self, Range};
use crate::runs::{Stop, IS_UP};
use crate::sample::{status_kb, tree_cpu_seconds, ProcessSampler};
use crate::stats::{fmt, median, ratio, Table};

pub fn run(bench: &Bench) -> Result<()> {
    println!("== 4. flowctl's own cost");
    let range = Range::real(bench);
    let example = pipelines::example(bench, "example.yaml", &range, range.last, &[])?;
    let fanout = pipelines::fanout(bench, 30)?;
    let peak_example = peak_rss(bench, &example, "r3", Stop::AtEnd)?;
    let peak_fanout = peak_rss(bench, &fanout, "r30", Stop::When(IS_UP))?;

    // Idle supervision: a live pipeline (consumer end ledger 0) that has caught up.
    let idle = bench.effort.idle;
    let live_file = pipelines::example(bench, "live.yaml", &range, 0, &[])?;
    let live = bench.flowctl_live(&bench.name("i"), &live_file)?;
    thread::sleep(Duration::from_secs(3));
    let pid = live.pid();
    let (self_before, tree_before) = (cpu(pid)?, tree_cpu_seconds(pid));
    thread::sleep(idle);
    let per_minute = 60.0 / idle.as_secs_f64();
    let flowctl_self = (cpu(pid)? - self_before) * per_minute;
    let flowctl_tree = (tree_cpu_seconds(pid) - tree_before) * per_minute;
    let rss = status_kb(pid, "VmRSS").map(|kb| kb as f64 / 1024.0);
    let live_rc = live.stop()?;

    let compose_tree = compose_idle(bench, &live_file, idle)? * per_minute;

    // Size and start time.
    let stripped = bench.file("flowctl.stripped");
    output(
        "strip",
        &[
            "-o",
            &stripped.to_string_lossy(),
            &bench.flowctl.to_string_lossy(),
        ],
    )?;
    let size = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1_048_576.0)
            .ok()
    };
    let (mut f, mut d) = (Vec::new(), Vec::new());
    for _ in 0..bench.effort.version_runs {
        f.push(start_ms(&bench.flowctl.to_string_lossy())?);
        d.push(start_ms(&bench.docker)?);
    }
    let (version_f, version_d) = (median(&f), median(&d));

    let mut table = Table::new(["", "flowctl", "reference", "ratio"]);
    table
        .row([
            "peak RSS, example run (MB, VmHWM)",
            &fmt(peak_example, 1),
            "",
            "",
        ])
        .row([
            "peak RSS, 30-component run (MB, VmHWM)",
            &fmt(peak_fanout, 1),
            "",
            "",
        ])
        .row([
            &format!("RSS after {}s idle supervision (MB)", idle.as_secs()),
            &fmt(rss, 1),
            "",
            "",
        ])
        .row([
            "idle CPU s/min, flowctl process",
            &format!("{flowctl_self:.3}"),
            "",
            "",
        ])
        .compare(
            "idle CPU s/min, incl. its docker children",
            Some(flowctl_tree),
            Some(compose_tree),
            3,
        )
        .row([
            "binary size (MB), stripped",
            &fmt(size(&stripped), 1),
            "",
            "",
        ])
        .row([
            "binary size (MB), as built",
            &fmt(size(&bench.flowctl), 1),
            "",
            "",
        ])
        .compare(
            &format!(
                "--version start (ms, median of {})",
                bench.effort.version_runs
            ),
            version_f,
            version_d,
            2,
        );
    table.print();
    bench.record_opt("cost", "peak_rss_example_mb", peak_example);
    bench.record_opt("cost", "peak_rss_30_components_mb", peak_fanout);
    bench.record_opt("cost", "idle_rss_mb", rss);
    bench.record("cost", "idle_cpu_s_per_min", flowctl_self);
    bench.record("cost", "idle_cpu_tree_s_per_min", flowctl_tree);
    bench.record("cost", "compose_idle_cpu_tree_s_per_min", compose_tree);
    bench.record_opt(
        "cost",
        "idle_cpu_flowctl_per_compose",
        ratio(Some(flowctl_tree), Some(compose_tree)),
    );
    bench.record_opt("cost", "stripped_mb", size(&stripped));
    bench.record_opt("cost", "version_ms", version_f);
    bench.record_opt(
        "cost",
        "version_flowctl_per_docker",
        ratio(version_f, version_d),
    );
    println!("   reference: idle CPU of an attached 'docker-compose up' (with its children) on the same live pipeline;");
    println!(
        "   --version: 'docker --version'. Idle window {}s, one sample each; flowctl's exit code after SIGINT: {live_rc}",
        idle.as_secs()
    );
    if live_rc != 130 {
        bail!("the live run exited {live_rc} after SIGINT, not 130");
    }
    Ok(())
}

fn cpu(pid: u32) -> Result<f64> {
    crate::sample::cpu_seconds(pid).context("the live flowctl run is gone")
}

/// Runs `pipeline` (stopped as `stop` says) and returns flowctl's VmHWM in MB: the mark only
/// grows, so the last reading before it exits is the peak.
fn peak_rss(
    bench: &Bench,
    pipeline: &std::path::Path,
    suffix: &str,
    stop: Stop,
) -> Result<Option<f64>> {
    let mut sampler = ProcessSampler::default();
    let (logged, summary) = bench.flowctl_run(
        &bench.docker,
        &bench.name(suffix),
        pipeline,
        &[],
        stop,
        |pid| sampler.sample(pid, &[]),
    )?;
    if stop == Stop::AtEnd {
        logged.check("flowctl run")?;
    } else if summary.outcome != "interrupted" {
        bail!(
            "the run stopped once up ended as {}:\n{}",
            summary.outcome,
            logged.tail(20)
        );
    }
    Ok((sampler.hwm_kb > 0).then(|| sampler.hwm_kb as f64 / 1024.0))
}

/// CPU seconds an attached `docker-compose up` of `pipeline`'s translation (with its children)
/// takes over `window` once every service is healthy.
fn compose_idle(bench: &Bench, pipeline: &std::path::Path, window: Duration) -> Result<f64> {
    let project = bench.name("k");
    let file = pipelines::compose(bench, pipeline, &project, "1s", None)?;
    let log = std::fs::File::create(bench.file("compose-idle.log"))?;
    let mut up = Command::new(&bench.compose)
        .args(["-p", &project, "-f"])
        .arg(&file)
        .args(["up", "--no-color"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting docker-compose (v1.29; is it installed?)")?;
    let label = format!("label=com.docker.compose.project={project}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let healthy = output(
            &bench.docker,
            &["ps", "-q", "--filter", &label, "--filter", "health=healthy"],
        )?;
        if healthy.lines().count() == 3 {
            break;
        }
        if Instant::now() > deadline || up.try_wait()?.is_some() {
            let _ = up.kill();
            bail!(
                "docker-compose up did not get three healthy services:\n{}",
                std::fs::read_to_string(bench.file("compose-idle.log")).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    thread::sleep(Duration::from_secs(3));
    let before = tree_cpu_seconds(up.id());
    thread::sleep(window);
    let used = tree_cpu_seconds(up.id()) - before;
    let mut down = Command::new(&bench.compose);
    down.args(["-p", &project, "-f"])
        .arg(&file)
        .args(["down", "-v"]);
    let _ = down.stdout(Stdio::null()).stderr(Stdio::null()).status();
    let _ = up.wait();
    Ok(used)
}

/// Milliseconds from spawning `program --version` to its exit.
fn start_ms(program: &str) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{program} --version failed");
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}
