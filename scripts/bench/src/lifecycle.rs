//! Section 1, lifecycle: the example pipeline (3 images, the real 30-ledger lake, a bounded range) on
//! each engine, in turns: `flowctl run`, `docker-compose up --abort-on-container-exit` +
//! `down -v` on the same pipeline translated by `flowctl translate --to compose` (health
//! checks: each image's own `healthcheck` subcommand every 100 ms, BENCH_COMPOSE_INTERVAL), and
//! the bare CLI floor (what any tool must at least do with the engine).
//!
//! flowctl's times come from its own record (`--summary`: the sink's exit) and its "is up" line;
//! Compose's from the engine's events (health_status, die). Compose runs against Docker; against
//! Podman it talks to `podman system service` on a socket of the work folder, as a user of
//! Compose with Podman would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::bench::{output, Bench};
use crate::pipelines::{self, Range};
use crate::runs::{parse_time, run_logged, seconds_between, Stop, IS_UP};
use crate::stats::{ratio, Samples, Table};

const SECTION: &str = "lifecycle";

pub fn run(bench: &Bench, engines: &[String]) -> Result<()> {
    println!("== 1. lifecycle: flowctl run vs docker-compose up --abort-on-container-exit + down vs the bare CLI");
    let range = Range::real(bench);
    let interval = std::env::var("BENCH_COMPOSE_INTERVAL").unwrap_or_else(|_| "100ms".into());
    let pipeline = pipelines::example(bench, "example.yaml", &range, range.last, &[])?;
    println!(
        "   pipeline: 3 example images, ledgers {}-{} of {}, PRINT_EVENTS=false; Compose health checks every {interval}",
        range.first,
        range.last,
        range.lake.file_name().unwrap_or_default().to_string_lossy()
    );
    for engine in engines {
        let section = format!("{SECTION}.{engine}");
        let compose_engine = ComposeEngine::start(bench, engine)?;
        let project = bench.name(&format!("c{}", engine.chars().next().unwrap_or('e')));
        let compose = match &compose_engine {
            Some(on) => Some(pipelines::compose(
                bench,
                &pipeline,
                &project,
                &interval,
                on.host.as_deref(),
            )?),
            None => None,
        };
        let mut samples = Samples::default();
        for i in 0..bench.effort.runs {
            flowctl_once(bench, engine, &pipeline, &mut samples)
                .with_context(|| format!("flowctl run {} on {engine}", i + 1))?;
            if let (Some(on), Some(compose)) = (&compose_engine, &compose) {
                compose_once(bench, on, &project, compose, &mut samples)
                    .with_context(|| format!("docker-compose run {} on {engine}", i + 1))?;
            }
            let floor = cli_floor(bench, engine, &range)
                .with_context(|| format!("the CLI floor, run {} on {engine}", i + 1))?;
            samples.push("floor", "total", floor);
        }
        let compose_measured = compose_engine.is_some();
        drop(compose_engine);
        println!("   -- {engine} ({})", engine_version(engine));
        let mut table = Table::new([
            &format!("median of {} (ms)", bench.effort.runs),
            "flowctl",
            "compose",
            "ratio",
        ]);
        for (field, name) in [
            ("up", "time to all-healthy"),
            ("total", "total wall (start..cleaned up)"),
            ("teardown", "teardown (sink exit..all removed)"),
        ] {
            let (f, c) = (
                samples.median("flowctl", field),
                samples.median("compose", field),
            );
            table.compare(name, f.map(ms), c.map(ms), 0);
            bench.record_opt(&section, &format!("flowctl_{field}_ms"), f.map(ms));
            bench.record_opt(&section, &format!("compose_{field}_ms"), c.map(ms));
            bench.record_opt(
                &section,
                &format!("{field}_flowctl_per_compose"),
                ratio(f, c),
            );
        }
        let (f, floor) = (
            samples.median("flowctl", "total"),
            samples.median("floor", "total"),
        );
        table.row(["", "flowctl", "CLI floor", "ratio"]);
        table.compare(
            "total wall (start..cleaned up)",
            f.map(ms),
            floor.map(ms),
            0,
        );
        let (fc, cc) = (
            samples.median("flowctl", "cpu"),
            samples.median("compose", "cpu"),
        );
        table.row(["", "flowctl", "compose", "ratio"]);
        table.compare("CPU s of the whole run (with children)", fc, cc, 2);
        table.print();
        bench.record_opt(&section, "floor_total_ms", floor.map(ms));
        bench.record_opt(&section, "total_flowctl_per_floor", ratio(f, floor));
        bench.record_opt(&section, "flowctl_cpu_s", fc);
        bench.record_opt(&section, "compose_cpu_s", cc);
        bench.record_opt(&section, "cpu_flowctl_per_compose", ratio(fc, cc));
        println!(
            "   events delivered per run: flowctl {} | compose {} (expected 15480 each)",
            samples.listed("flowctl", "events"),
            samples.listed("compose", "events")
        );
        if !compose_measured {
            println!("   Compose on {engine}: not measured. {NO_PODMAN_HEALTH}");
        }
        for label in ["flowctl", "compose"] {
            if samples
                .values(label, "events")
                .iter()
                .any(|&e| e != 15480.0)
            {
                bail!("a {label} run on {engine} did not deliver every event");
            }
        }
    }
    println!("   CLI floor: network create, each 'run -d' once what it reads answers GET /health (every 20 ms),");
    println!("   'wait' for the sink, 'rm -f', network rm; no control plane, checks, verification or graceful stop.");
    println!("   CPU: user+system seconds of flowctl / docker-compose and every process they waited for (the CLI calls),");
    println!("   not the engine's own. flowctl also waits for registrations and verifies both gRPC streams.");
    Ok(())
}

fn ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round()
}

/// CPU seconds (user + system) of the children this process has waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn flowctl_once(
    bench: &Bench,
    engine: &str,
    pipeline: &std::path::Path,
    samples: &mut Samples,
) -> Result<()> {
    let project = bench.name("f");
    let cpu = children_cpu();
    let (logged, summary) =
        bench.flowctl_run(engine, &project, pipeline, &[], Stop::AtEnd, |_| {})?;
    let cpu = children_cpu() - cpu;
    logged.check("flowctl run")?;
    let up = logged
        .seconds_to(IS_UP)
        .context("flowctl never said it was up")?;
    let exited = summary
        .component("consumer-app")?
        .exited_at
        .as_deref()
        .and_then(parse_time)
        .context("the summary has no exit time of consumer-app")?;
    let ended = logged.started_wall + (logged.ended - logged.started);
    let events = logged
        .consumer_summary("consumer-app")
        .and_then(|s| s["events"].as_f64())
        .context("consumer-app printed no summary")?;
    samples.push("flowctl", "up", up);
    samples.push("flowctl", "total", logged.seconds());
    samples.push("flowctl", "teardown", seconds_between(exited, ended));
    samples.push("flowctl", "cpu", cpu);
    samples.push("flowctl", "events", events);
    Ok(())
}

/// Where Compose and `docker events` reach an engine: Docker as it is, Podman through the
/// Docker-compatible API of `podman system service` on a socket of the work folder.
struct ComposeEngine {
    host: Option<String>,
    service: Option<Child>,
}

/// Why Compose is not measured against Podman on a machine without systemd.
const NO_PODMAN_HEALTH: &str = "Podman runs a container's health check only from a systemd \
    timer, and this machine has no systemd: the source stays `starting` and Compose's \
    `depends_on: service_healthy` never holds.";

impl ComposeEngine {
    /// Where Compose reaches `engine`; `None` for Podman on a machine without systemd
    /// ([`NO_PODMAN_HEALTH`]).
    fn start(bench: &Bench, engine: &str) -> Result<Option<ComposeEngine>> {
        if !engine.contains("podman") {
            return Ok(Some(ComposeEngine {
                host: None,
                service: None,
            }));
        }
        output(engine, &["--version"])
            .context("podman is not installed (.ci/install-podman.sh sets it up)")?;
        if !std::path::Path::new("/run/systemd/system").is_dir() {
            return Ok(None);
        }
        let socket = bench.file("podman.sock");
        let host = format!("unix://{}", socket.display());
        let service = Command::new(engine)
            .args(["system", "service", "--time=0", &host])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting podman system service")?;
        let mut started = ComposeEngine {
            host: Some(host),
            service: Some(service),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while started.docker(&["version"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "podman system service did not answer on {}",
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Some(started))
    }

    fn apply(&self, command: &mut Command) {
        if let Some(host) = &self.host {
            command.env("DOCKER_HOST", host);
        }
    }

    /// The docker CLI against this engine's API.
    fn docker(&mut self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("docker");
        self.apply(&mut command);
        let out = command.args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for ComposeEngine {
    fn drop(&mut self) {
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
    }
}

#[derive(Debug, Deserialize)]
struct EngineEvent {
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "timeNano", default)]
    time_nano: i64,
    #[serde(rename = "Actor", default)]
    actor: Actor,
}

#[derive(Debug, Default, Deserialize)]
struct Actor {
    #[serde(rename = "Attributes", default)]
    attributes: std::collections::BTreeMap<String, String>,
}

fn unix_seconds(t: SystemTime) -> String {
    format!(
        "{:.6}",
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    )
}

fn compose_once(
    bench: &Bench,
    engine: &ComposeEngine,
    project: &str,
    file: &std::path::Path,
    samples: &mut Samples,
) -> Result<()> {
    let compose = |args: &[&str]| {
        let mut command = Command::new(&bench.compose);
        engine.apply(&mut command);
        command.args(["-p", project, "-f"]).arg(file).args(args);
        command
    };
    let cpu = children_cpu();
    let up = run_logged(
        compose(&["up", "--no-color", "--abort-on-container-exit"]),
        Stop::AtEnd,
        |_| {},
    )
    .context("running docker-compose (v1.29; is it installed?)")?;
    let down = run_logged(compose(&["down", "-v"]), Stop::AtEnd, |_| {})?;
    let cpu = children_cpu() - cpu;
    down.check("docker-compose down")?;
    let t0 = up.started_wall;
    let t1 = t0 + (down.ended - up.started);
    let mut events_cli = Command::new("docker");
    engine.apply(&mut events_cli);
    let label = format!("label=com.docker.compose.project={project}");
    let events = events_cli
        .args([
            "events",
            "--since",
            &unix_seconds(t0),
            "--until",
            &unix_seconds(t1 + Duration::from_millis(10)),
        ])
        .args([
            "--filter",
            &label,
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        ])
        .output()?;
    let events: Vec<EngineEvent> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let at = |e: &EngineEvent| UNIX_EPOCH + Duration::from_nanos(e.time_nano.max(0) as u64);
    let name = |e: &EngineEvent| e.actor.attributes.get("name").cloned().unwrap_or_default();
    let mut ready = std::collections::BTreeMap::new();
    let mut sink_died = None;
    for event in &events {
        // Docker: "health_status: healthy"; Podman: "health_status" with the state as attribute.
        let healthy = event.action == "health_status: healthy"
            || (event.action == "health_status"
                && event
                    .actor
                    .attributes
                    .get("health_status")
                    .map(String::as_str)
                    == Some("healthy"));
        let sink_exit = event.action == "die" && name(event).ends_with("consumer-app");
        if sink_exit && sink_died.is_none() {
            sink_died = Some(at(event));
        }
        if healthy || sink_exit {
            ready.entry(name(event)).or_insert_with(|| at(event));
        }
    }
    let (Some(died), 3) = (sink_died, ready.len()) else {
        bail!(
            "no health or exit events of the three services ({} events):\n{}",
            events.len(),
            up.tail(25)
        );
    };
    let all_ready = ready.values().max().copied().unwrap_or(t0);
    let delivered = up
        .consumer_summary("consumer-app")
        .and_then(|s| s["events"].as_f64())
        .context("consumer-app printed no summary under Compose")?;
    samples.push("compose", "up", seconds_between(t0, all_ready));
    samples.push("compose", "total", seconds_between(t0, t1));
    samples.push("compose", "teardown", seconds_between(died, t1));
    samples.push("compose", "cpu", cpu);
    samples.push("compose", "events", delivered);
    Ok(())
}

fn engine_version(engine: &str) -> String {
    output(engine, &["version", "--format", "{{.Server.Version}}"])
        .or_else(|_| output(engine, &["--version"]))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The bare CLI's floor for the example, in seconds: network create; `run -d` of each
/// container once what it reads answers `GET /health`; `wait` for the sink; `rm -f`; network rm.
fn cli_floor(bench: &Bench, engine: &str, range: &Range) -> Result<f64> {
    let label = format!("io.flowctl.bench={}", bench.tag);
    let net = bench.name("l-net");
    let (src, proc, sink) = (
        bench.name("l-src"),
        bench.name("l-proc"),
        bench.name("l-sink"),
    );
    let passphrase = format!("NETWORK_PASSPHRASE={}", range.passphrase);
    let lake = format!("{}:/data/ledgers:ro", range.lake.display());
    let (first, last) = (range.first.to_string(), range.last.to_string());
    let started = Instant::now();
    output(engine, &["network", "create", "--label", &label, &net])?;
    let run = |name: &str, alias: Option<&str>, rest: &[&str]| -> Result<()> {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--label",
            &label,
            "--network",
            &net,
        ];
        if let Some(alias) = alias {
            args.extend(["--network-alias", alias, "-p", "127.0.0.1::8088"]);
        }
        args.extend(rest);
        output(engine, &args).map(drop)
    };
    let source_image = bench.image("stellar-live-source-datalake");
    run(
        &src,
        Some("stellar-live-source-datalake"),
        &[
            "-e",
            "STORAGE_TYPE=FS",
            "-e",
            "BUCKET_NAME=/data/ledgers",
            "-e",
            &passphrase,
            "-v",
            &lake,
            &source_image,
        ],
    )?;
    wait_healthy(engine, &src)?;
    let processor_image = bench.image("ttp-processor");
    run(
        &proc,
        Some("ttp-processor"),
        &[
            "-e",
            &passphrase,
            "-e",
            "SOURCE_SERVICE_ADDRESS=stellar-live-source-datalake:50052",
            "-e",
            "PORT=:50051",
            &processor_image,
        ],
    )?;
    wait_healthy(engine, &proc)?;
    let consumer_image = bench.image("consumer-app");
    run(
        &sink,
        None,
        &[
            "-e",
            "TTP_SERVICE_ADDRESS=ttp-processor:50051",
            "-e",
            "PRINT_EVENTS=false",
            &consumer_image,
            &first,
            &last,
        ],
    )?;
    let code = output(engine, &["wait", &sink])?;
    // Killed, not stopped: Docker's `rm -f` kills; Podman's stops with the container's stop
    // timeout unless told `-t 0` (10 s when a component is slow to take SIGTERM).
    let mut remove = vec!["rm", "-f"];
    if engine.contains("podman") {
        remove.extend(["-t", "0"]);
    }
    remove.extend([sink.as_str(), &proc, &src]);
    output(engine, &remove)?;
    output(engine, &["network", "rm", &net])?;
    let seconds = started.elapsed().as_secs_f64();
    if code.trim() != "0" {
        bail!("the floor's consumer exited {}", code.trim());
    }
    Ok(seconds)
}

/// Polls `GET /health` of `container`'s published 8088 every 20 ms, for up to 30 s.
fn wait_healthy(engine: &str, container: &str) -> Result<()> {
    let port = output(engine, &["port", container, "8088/tcp"])?;
    let address = port
        .lines()
        .next()
        .context("no published health port")?
        .trim()
        .to_string();
    let url = format!("http://{address}/health");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(&url).call().is_err() {
        if Instant::now() > deadline {
            bail!("{container} never answered {url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::fmt;

    #[test]
    fn engine_events_are_read_from_the_cli_json() {
        let line = r#"{"status":"die","id":"x","Type":"container","Action":"die","Actor":{"ID":"x","Attributes":{"name":"p-consumer-app"}},"time":1,"timeNano":1500000000}"#;
        let event: EngineEvent = serde_json::from_str(line).unwrap();
        assert_eq!(event.action, "die");
        assert_eq!(event.time_nano, 1_500_000_000);
        assert_eq!(event.actor.attributes["name"], "p-consumer-app");
        assert_eq!(fmt(ratio(Some(1.0), Some(2.0)), 2), "0.50");
    }
}
