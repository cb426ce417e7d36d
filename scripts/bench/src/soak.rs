//! soak: the live example pipeline for a number of minutes, flowctl sampled every 30 s (RSS,
//! high-water mark, CPU seconds, each component's last heartbeat as `flowctl status` shows it),
//! then stopped as Ctrl+C would; the warnings it printed meanwhile.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::bench::{output, Bench};
use crate::pipelines::{self, Range};
use crate::sample::{cpu_seconds, status_kb};

pub fn run(bench: &Bench, minutes: u64) -> Result<()> {
    println!("== soak: live example pipeline for {minutes} min, sampling flowctl every 30 s");
    let range = Range::real(bench);
    let pipeline = pipelines::example(bench, "soak.yaml", &range, 0, &[])?;
    let project = bench.name("soak");
    let live = bench.flowctl_live(&project, &pipeline)?;
    let pid = live.pid();
    println!(
        "  {:>6} {:>9} {:>9} {:>9}  heartbeats (component: last heartbeat)",
        "t (s)", "RSS MB", "HWM MB", "CPU s"
    );
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mb = |kb: Option<u64>| kb.map_or("?".into(), |kb| format!("{:.1}", kb as f64 / 1024.0));
    let mut peak_rss = 0;
    loop {
        let status = output(
            &bench.flowctl.to_string_lossy(),
            &[
                "status",
                "--project",
                &project,
                "--docker-bin",
                &bench.docker,
            ],
        )
        .unwrap_or_else(|e| format!("{e:#}"));
        let heartbeats: Vec<String> = status
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "ago")?;
                Some(format!(
                    "{}: {} ago",
                    words.first()?,
                    words.get(at.checked_sub(1)?)?
                ))
            })
            .collect();
        let rss = status_kb(pid, "VmRSS");
        peak_rss = peak_rss.max(rss.unwrap_or(0));
        println!(
            "  {:>6} {:>9} {:>9} {:>9}  {}",
            started.elapsed().as_secs(),
            mb(rss),
            mb(status_kb(pid, "VmHWM")),
            cpu_seconds(pid).map_or("?".into(), |c| format!("{c:.2}")),
            heartbeats.join("  ")
        );
        if Instant::now() >= end {
            break;
        }
        thread::sleep(Duration::from_secs(30).min(end - Instant::now()));
    }
    let cpu = cpu_seconds(pid);
    let text = live.text();
    let warnings = text
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("warning") || l.contains("unhealthy")
        })
        .count();
    println!("   warnings during the soak: {warnings}");
    let rc = live.stop()?;
    println!("   flowctl's exit code after SIGINT: {rc}");
    bench.record("soak", "minutes", minutes);
    bench.record("soak", "warnings", warnings);
    bench.record("soak", "peak_rss_mb", peak_rss as f64 / 1024.0);
    bench.record_opt("soak", "cpu_s", cpu);
    if rc != 130 {
        bail!("the soak's flowctl exited {rc} after SIGINT, not 130");
    }
    Ok(())
}
