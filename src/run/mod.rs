//! `flowctl run`: the lifecycle of one run, as a sequence of named steps. What each step does
//! lives in its own file: [`preflight`] (checks before anything exists), [`start`] (network,
//! control plane, containers, readiness), [`supervise`] (stream verification, waiting, restarts),
//! [`notices`] (what is reported meanwhile) and [`teardown`] (every exit: signals, the cleanup
//! guard, the stop order).

mod notices;
mod preflight;
mod start;
mod supervise;
pub mod teardown;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::engine::{Deadlines, Engine};
use crate::events::RunEvents;
use crate::labels;
use crate::logs::{Console, LogMux};
use crate::owner::RunOwner;
use crate::plan::{self, Naming};
use crate::reaper::Reaper;
use crate::spec::format_duration;
use notices::{Notices, StatusView};
use start::LiveRun;
use teardown::{ActiveRun, CleanupGuard, Halt, SignalPolicy};

pub use teardown::RunOutcome;

/// How long teardown waits for an exited component's log stream to be relayed completely.
const LOG_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Settings of one `flowctl run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pipeline: PathBuf,
    pub naming: Naming,
    pub docker_bin: PathBuf,
    /// Deadlines of the engine calls.
    pub deadlines: Deadlines,
    /// Colour in log prefixes and progress lines.
    pub color: bool,
    /// Control plane port on the network gateway; 0 picks a free one.
    pub control_plane_port: u16,
    /// `FLOWCTL_HEARTBEAT_INTERVAL` given to components.
    pub heartbeat_interval: Duration,
    /// Print the status table this often while running (it is always printed once all is
    /// up, and on SIGUSR1).
    pub status_interval: Option<Duration>,
    /// The width status tables are fitted to; `None` for full width.
    pub table_width: Option<usize>,
    /// Verify the declared gRPC streams after start-up (`--no-verify` turns it off).
    pub verify: bool,
    /// How long verification waits for a stream's first message.
    pub verify_timeout: Duration,
}

/// Runs a pipeline until it completes, is interrupted or fails; everything it created is
/// removed before this returns (or, on a panic, while unwinding). `signals` is the process's
/// signal policy, which `main` installed.
pub fn run(options: &RunOptions, signals: &SignalPolicy) -> Result<RunOutcome> {
    let console = Console {
        color: options.color,
    };
    let plan = plan::load(&options.pipeline, &options.naming)?;
    let engine = Engine::detect(&options.docker_bin, options.deadlines)
        .context("the container engine is not available")?;
    let events = Arc::new(RunEvents::default());
    let run_id = new_run_id();
    let _signals = signals.attach(ActiveRun {
        events: events.clone(),
        engine: engine.clone(),
        run_id: run_id.clone(),
        console,
    });

    preflight::check(&engine, &plan)?;
    if events.snapshot().interrupts > 0 {
        return Ok(RunOutcome::Interrupted);
    }
    let reaper = spawn_reaper(&engine, &run_id, console);
    let labels = labels::run_labels(
        &plan.pipeline,
        plan.project.as_deref(),
        &run_id,
        RunOwner::current().labels(),
    );
    let mut guard = CleanupGuard::new(&engine, &run_id, &plan, console, reaper);

    let started = Instant::now();
    let gateway = start::create_network(&engine, &plan, &labels, console)?;
    let control = start::start_control_plane(
        &plan,
        &gateway,
        options.control_plane_port,
        options.heartbeat_interval,
    )?;
    console.info(format!(
        "control plane listening on {} (heartbeat interval {})",
        control.endpoint,
        format_duration(options.heartbeat_interval)
    ));
    let host_ports = Arc::new(Mutex::new(BTreeMap::new()));
    let notices = Notices::start(
        StatusView {
            plan: plan.clone(),
            events: events.clone(),
            control: control.server.clone(),
            host_ports: host_ports.clone(),
            width: options.table_width,
        },
        console,
        options.status_interval,
    );
    let ids: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
    let logs = LogMux::new(&ids, options.color);
    let live = LiveRun {
        engine: &engine,
        plan: &plan,
        run_id: &run_id,
        labels: &labels,
        events: &events,
        logs: &logs,
        console,
        control: &control,
        heartbeat_interval: options.heartbeat_interval,
        host_ports: &host_ports,
    };

    let result = start::create_all(&live)
        .and_then(|()| start::start_all(&live, started))
        .and_then(|()| {
            notices.print_status();
            if options.verify {
                supervise::verify_streams(&live, options.verify_timeout)?;
            }
            supervise::supervise(&live)
        });

    // Components stop heartbeating while they are stopped: that is no news.
    notices.stop();
    drain_exited_logs(&live);
    guard.teardown();
    logs.finish(Duration::from_secs(2));
    match result {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Interrupted) => Ok(RunOutcome::Interrupted),
        Err(Halt::Exited(exit)) => Err(exit.into()),
        Err(Halt::Failed(error)) => Err(error),
    }
}

/// Starts the reaper that removes the run if flowctl is killed before it can (see reaper.rs).
fn spawn_reaper(engine: &Engine, run_id: &str, console: Console) -> Option<Reaper> {
    match Reaper::spawn(engine, run_id) {
        Ok(reaper) => {
            console.info(format!("reaper pid {} watches run {run_id}", reaper.pid()));
            Some(reaper)
        }
        Err(e) => {
            console.warn(format!(
                "cannot start the reaper ({e}): if flowctl is killed, `flowctl gc` removes what it leaves"
            ));
            None
        }
    }
}

/// Relays all that an exited component wrote before its container, and so its log, is
/// removed: `logs --follow` of a fast writer lags behind, and a sink's last lines are its
/// results. Only current containers: a restarted component's new container may still run.
fn drain_exited_logs(live: &LiveRun) {
    let state = live.events.snapshot();
    for component in &live.plan.components {
        if state.exit_of(&component.id).is_some() {
            live.logs.wait_drained(&component.id, LOG_DRAIN_LIMIT);
        }
    }
}

/// Unique per invocation: pid and start time.
fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}
