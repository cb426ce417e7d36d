//! `flowctl run`: the lifecycle of one run, on one screen in [`run`]. [`Prepared::new`]
//! fixes the plan before anything exists (checks, pulls, image metadata); [`Prepared::start`]
//! creates the network and control plane and returns the [`Run`], which owns everything the run
//! made, as fields in teardown order; [`Run::bring_up`] creates and starts the containers,
//! [`Run::supervise`] waits for the end, and [`Run::teardown`] (or, on a panic, its `Drop`) ends
//! it all in one order. What each step does lives in its own file: [`prepare`], [`preflight`]
//! (checks), [`pull`], [`network`] (network and control plane), [`start`] (containers and
//! readiness), [`supervise`] (stream verification, waiting, restarts), [`relay`] (flowctl.v1
//! components), [`notices`] (what is reported meanwhile) and [`teardown`] (signals, the cleanup
//! guard, the stop order).

mod edge_queue;
mod env_file;
mod lifecycle;
mod network;
mod notices;
mod preflight;
mod prepare;
mod process;
mod pull;
mod reach;
mod record;
mod relay;
mod start;
mod supervise;
mod swarm;
pub mod teardown;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::engine::{Deadlines, Engine};
use crate::events::RunEvents;
use crate::location::{Location, LocationSetting};
use crate::logs::{Console, LogMux};
use crate::plan::{Naming, RunPlan};
use crate::processes::Reservations;
use env_file::EnvDir;
use network::RunControlPlane;
use notices::Notices;
use reach::Reachable;
use record::{Recorder, SummaryWriter};
use start::LiveRun;
use teardown::{Attached, CleanupGuard, Halt, SignalPolicy, EXIT_INTERRUPTED};

pub use prepare::Prepared;
pub use pull::PullPolicy;
pub use teardown::RunOutcome;

/// The control plane's port on the network gateway unless `--control-plane-port` says.
pub const DEFAULT_CONTROL_PLANE_PORT: u16 = 8080;

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
    /// Where flowctl runs relative to the engine (`--engine-location`).
    pub location: LocationSetting,
    /// The image that runs the control plane when it cannot run in flowctl (remote engines).
    pub control_plane_image: String,
    /// `--logs-dir`: each component's whole output in `DIR/<id>.log`.
    pub logs_dir: Option<PathBuf>,
    /// `--summary`: a JSON record of the run, written on every exit path.
    pub summary: Option<PathBuf>,
    /// Colour in log prefixes and progress lines.
    pub color: bool,
    /// Control plane port (`--control-plane-port`); 0 picks a free one, `None` the default
    /// ([`DEFAULT_CONTROL_PLANE_PORT`] on the network gateway; for processes, see
    /// `process/check.rs`).
    pub control_plane_port: Option<u16>,
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
    /// `--pull`: which images are pulled before anything is created.
    pub pull: PullPolicy,
    /// Progress lines are redrawn in place (stderr is a terminal).
    pub progress_in_place: bool,
    /// `--swarm`: run on the Swarm the engine manages, one service per component.
    pub swarm: bool,
}

/// Runs a pipeline until it completes, is interrupted or fails; everything it created is
/// removed before this returns (or, on a panic, while unwinding), and `--summary` is written
/// whatever happened. `signals` is the process's signal policy, which `main` installed.
pub fn run(options: &RunOptions, signals: &SignalPolicy) -> Result<RunOutcome> {
    let recorder = Recorder::default();
    recorder.lock().file = options.pipeline.display().to_string();
    let _summary = SummaryWriter::new(recorder.clone(), options.summary.clone());
    let lifecycle = || -> Result<RunOutcome, Halt> {
        recorder.lock().started_at = Some(SystemTime::now());
        let plan = crate::plan::load(&options.pipeline, &options.naming)?;
        if let Some(process) = plan.components.iter().find(|c| c.process.is_some()) {
            if options.swarm {
                return Err(anyhow::anyhow!(
                    "{}: component `{}`: spec.driver is `process`: it is a process of this \
                     machine, which a Swarm cannot schedule; run the file without --swarm (or \
                     give it an image)",
                    options.pipeline.display(),
                    process.id
                )
                .into());
            }
            if !plan.is_mixed() {
                return process::run(options, signals, &recorder, plan);
            }
        }
        if options.swarm {
            return swarm::run(options, signals, &recorder);
        }
        let prepared = Prepared::new(options, signals, &recorder, plan)?;
        let mut run = prepared.start()?;
        let result = run.bring_up().and_then(|()| run.supervise());
        run.teardown(result)
    };
    let result = match lifecycle() {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Interrupted) => Ok(RunOutcome::Interrupted),
        Err(Halt::Exited(exit)) => Err(exit.into()),
        Err(Halt::Failed(error)) => Err(error),
    };
    let mut record = recorder.lock();
    let (outcome, code) = match &result {
        Ok(RunOutcome::Completed) => ("completed", 0),
        Ok(RunOutcome::Interrupted) => ("interrupted", EXIT_INTERRUPTED),
        Err(error) => {
            record.error = Some(format!("{error:#}"));
            ("failed", 1)
        }
    };
    record.outcome = Some(outcome);
    record.exit_code = Some(code);
    result
}

/// A run that exists: what it made, as fields in the order teardown ends them, and what its
/// steps share. [`Run::teardown`] ends it; dropping it unended (a panic) does the same, in the
/// same order.
pub struct Run<'a> {
    /// The relay's calls end before their components are stopped, so a stop is no broken edge.
    relay: Option<relay::Relay>,
    /// Components stop heartbeating while they are stopped: that is no news.
    notices: Notices,
    /// The containers (stopped in reverse start order) and the network; dismisses the reaper.
    guard: CleanupGuard,
    /// The processes of a file mixing processes and containers, and their record.
    children: Option<process::Children>,
    /// Served until the last container is gone.
    control: RunControlPlane,
    /// Relays the containers' output until their streams are drained.
    logs: LogMux,
    /// The env files the containers were created with.
    env_dir: EnvDir,
    /// The ports given to the processes, held until they are stopped.
    _reservations: Option<Reservations>,
    options: &'a RunOptions,
    recorder: &'a Recorder,
    console: Console,
    plan: RunPlan,
    engine: Engine,
    run_id: String,
    labels: BTreeMap<String, String>,
    location: Location,
    events: Arc<RunEvents>,
    reachable: Arc<Reachable>,
    relay_counts: Arc<relay::EdgeCounts>,
    pids: Arc<notices::Pids>,
    /// Every sink completed: what is left stops at once.
    completed: bool,
    /// When the network was created: start-up's timings count from here.
    started: Instant,
    ended: bool,
    /// Signals reach the run until its last field is gone.
    _signals: Attached<'a>,
}

impl Run<'_> {
    /// What starting and supervising share, borrowed from the run.
    fn live(&self) -> LiveRun<'_> {
        LiveRun {
            engine: &self.engine,
            plan: &self.plan,
            run_id: &self.run_id,
            labels: &self.labels,
            events: &self.events,
            logs: &self.logs,
            console: self.console,
            control: &self.control,
            heartbeat_interval: self.options.heartbeat_interval,
            location: &self.location,
            env_dir: &self.env_dir,
            reachable: &self.reachable,
            record: self.recorder,
            children: self.children.as_ref(),
            pids: &self.pids,
        }
    }

    /// Creates every container, starts them level by level until each is ready, verifies the
    /// declared streams and starts relaying between flowctl.v1 components.
    pub fn bring_up(&mut self) -> Result<(), Halt> {
        let live = self.live();
        start::create_all(&live)?;
        start::start_all(&live, self.started)?;
        self.notices.print_status();
        if self.options.verify {
            supervise::verify_streams(&live, self.options.verify_timeout)?;
        }
        let relay = start_relay(
            live.plan,
            live.reachable,
            live.events,
            live.console,
            &self.relay_counts,
        )?;
        self.relay = relay;
        Ok(())
    }

    /// Waits until the sinks complete, a signal arrives or something fails.
    pub fn supervise(&mut self) -> Result<RunOutcome, Halt> {
        supervise::supervise(&self.live())
    }

    /// Ends the run ([`Run::end`]) and passes `result` on.
    pub fn teardown(mut self, result: Result<RunOutcome, Halt>) -> Result<RunOutcome, Halt> {
        if matches!(result, Ok(RunOutcome::Completed)) {
            self.completed = true;
            self.guard.completed();
        }
        self.end();
        result
    }

    /// Every exit's one sequence, once: the relay, the notices, the exited components' last
    /// lines, the summary's end, the containers and network (and the processes of a file
    /// mixing both, in one stop order), the log relay; the control plane and the env files go
    /// with the fields after that.
    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        drop(self.relay.take());
        self.notices.stop();
        warn_silent_processors(&self.plan, &self.relay_counts, self.console, self.recorder);
        drain_exited_logs(&self.live());
        record_end(&self.plan, &self.events, &self.control, self.recorder);
        if let Some(children) = &self.children {
            self.stop_mixed(children);
            self.guard.completed();
        }
        self.guard.teardown();
        if let Some(children) = &mut self.children {
            children.teardown();
            for component in self.plan.components.iter().filter(|c| c.process.is_some()) {
                self.logs.wait_drained(&component.id, LOG_DRAIN_LIMIT);
            }
        }
        self.logs.finish(Duration::from_secs(2));
    }

    /// A file mixing processes and containers stops both in one order: level by level, sinks
    /// first (all at once after a completed run), each level's containers and processes
    /// together, with the level's longest grace period. The guard and `children` then remove
    /// what is stopped and say what would not stop.
    fn stop_mixed(&self, children: &process::Children) {
        let levels: Vec<Vec<&crate::plan::ComponentPlan>> = if self.completed {
            vec![self.plan.components.iter().collect()]
        } else {
            self.plan.levels().into_iter().rev().collect()
        };
        self.console.info("stopping processes and containers...");
        for level in levels {
            let grace = level.iter().map(|c| c.stop_grace).max().unwrap_or_default();
            let (processes, containers): (Vec<_>, Vec<_>) =
                level.into_iter().partition(|c| c.process.is_some());
            let ids: Vec<String> = processes.iter().map(|c| c.id.clone()).collect();
            let names: Vec<String> = containers
                .iter()
                .map(|c| c.container_name.clone())
                .collect();
            std::thread::scope(|scope| {
                if !names.is_empty() {
                    // An error here is the removal's to retry and report.
                    scope.spawn(|| drop(self.engine.stop(&names, grace)));
                }
                drop(children.stop(&ids, grace));
            });
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Starts relaying between the flowctl.v1 components, if the pipeline has any.
pub(super) fn start_relay(
    plan: &RunPlan,
    reachable: &Arc<Reachable>,
    events: &Arc<RunEvents>,
    console: Console,
    counts: &Arc<relay::EdgeCounts>,
) -> Result<Option<relay::Relay>, Halt> {
    let nodes = relay::nodes_of(plan, reachable)?;
    if nodes.is_empty() {
        return Ok(None);
    }
    console.info(format!(
        "relaying between {} flowctl.v1 component(s): {}",
        nodes.len(),
        nodes
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let relay = relay::Relay::start(
        nodes,
        counts.clone(),
        events.clone(),
        reachable.clone(),
        console,
    )?;
    Ok(Some(relay))
}

/// Says (and records for `--summary`) which relayed processors emitted nothing from what
/// they consumed.
pub(super) fn warn_silent_processors(
    plan: &RunPlan,
    counts: &relay::EdgeCounts,
    console: Console,
    recorder: &Recorder,
) {
    for warning in relay::silent_processors(plan, counts) {
        console.warn(&warning);
        recorder.lock().warnings.push(warning);
    }
}

/// What the summary says of each component once the run is over: exits, restarts, and its
/// registration and last heartbeat's counters.
pub(super) fn record_end(
    plan: &RunPlan,
    events: &RunEvents,
    control: &RunControlPlane,
    recorder: &Recorder,
) {
    let state = events.snapshot();
    let services = control.server.services();
    let mut record = recorder.lock();
    for component in &plan.components {
        let entry = record.component(&component.id);
        entry.restarts = state.attempt_of(&component.id);
        if let Some(exit) = state.exit_of(&component.id) {
            entry.exit_code = exit.code;
            entry.exited_at = Some(exit.at);
        }
        if let Some(service) = services
            .iter()
            .find(|s| s.component.as_deref() == Some(component.id.as_str()))
        {
            entry.service_id = Some(service.service_id.clone());
            entry.metrics = service.metrics.clone();
        }
    }
}

/// Relays all that an exited component wrote before its container, and so its log, is
/// removed: the attach stream of a fast writer lags behind its exit, and a sink's last lines
/// are its results. Only current containers: a restarted component's new container may still run.
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
