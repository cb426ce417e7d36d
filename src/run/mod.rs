//! `flowctl run`: the lifecycle of one run, as a sequence of named steps. What each step does
//! lives in its own file: [`preflight`] (checks before anything exists), [`pull`] (the images
//! the pull policy fetches, before anything exists), [`start`] (network,
//! control plane, containers, readiness), [`supervise`] (stream verification, waiting, restarts),
//! [`notices`] (what is reported meanwhile) and [`teardown`] (every exit: signals, the cleanup
//! guard, the stop order).

mod edge_queue;
mod env_file;
mod network;
mod notices;
mod preflight;
mod pull;
mod reach;
mod record;
mod relay;
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
use crate::location::{self, Location, LocationSetting};
use crate::logs::{Console, LogMux};
use crate::metadata::MetadataCache;
use crate::owner::RunOwner;
use crate::plan::{self, Naming, RunPlan};
use crate::reaper::Reaper;
use env_file::EnvDir;
use notices::{Notices, StatusView};
use record::{Recorder, SummaryWriter};
use start::LiveRun;
use teardown::{ActiveRun, CleanupGuard, Halt, SignalPolicy, EXIT_INTERRUPTED};

pub use pull::PullPolicy;
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
    /// `--pull`: which images are pulled before anything is created.
    pub pull: PullPolicy,
    /// Progress lines are redrawn in place (stderr is a terminal).
    pub progress_in_place: bool,
}

/// Runs a pipeline until it completes, is interrupted or fails; everything it created is
/// removed before this returns (or, on a panic, while unwinding), and `--summary` is written
/// whatever happened. `signals` is the process's signal policy, which `main` installed.
pub fn run(options: &RunOptions, signals: &SignalPolicy) -> Result<RunOutcome> {
    let recorder = Recorder::default();
    recorder.lock().file = options.pipeline.display().to_string();
    let _summary = SummaryWriter::new(recorder.clone(), options.summary.clone());
    let result = run_recorded(options, signals, &recorder);
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

/// The lifecycle: check, create, start, supervise, tear down.
fn run_recorded(
    options: &RunOptions,
    signals: &SignalPolicy,
    recorder: &Recorder,
) -> Result<RunOutcome> {
    let console = Console {
        color: options.color,
    };
    recorder.lock().started_at = Some(SystemTime::now());
    let mut plan = plan::load(&options.pipeline, &options.naming)?;
    if let Some(refusal) = plan.driver.run_refusal() {
        anyhow::bail!("{}: {refusal}", options.pipeline.display());
    }
    for notice in plan
        .driver
        .run_notice()
        .into_iter()
        .chain(plan.notes.iter().map(String::as_str))
    {
        console.info(notice);
    }
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
    let location = location::detect(&engine, &options.location)?;
    console.info(location.describe());
    record_plan(recorder, &plan, &engine, &location, &run_id);
    let control_plane_image = location
        .control_plane_in_container()
        .then_some(options.control_plane_image.as_str());
    let checked = preflight::check(
        &engine,
        &plan,
        &location,
        control_plane_image,
        options.pull,
        console,
    )?;
    let mut image_ids = checked.image_ids;
    if !checked.to_pull.is_empty() {
        let users = pull::image_users(&plan, control_plane_image);
        let images: Vec<_> = checked
            .to_pull
            .iter()
            .map(|image| (image.clone(), users.get(image).cloned().unwrap_or_default()))
            .collect();
        let pulled = pull::pull_all(&engine, &images, console, options.progress_in_place);
        // A signal during the pulls ends them (their calls are killed): that is no failure.
        if events.snapshot().interrupts > 0 {
            return Ok(RunOutcome::Interrupted);
        }
        image_ids.extend(pulled?);
    }
    // From here on the run creates things: the reaper watches from the first (the probe
    // containers that read image metadata carry the run's labels like everything else).
    let reaper = spawn_reaper(&engine, &run_id, console);
    let labels = run_labels(&plan, &run_id, &location);
    // What the images say about themselves (config names, roles, event types).
    let metadata = crate::metadata::read_all(
        &engine,
        &plan,
        &image_ids,
        &labels,
        MetadataCache::for_user().as_ref(),
    )?;
    plan.apply_metadata(&metadata)
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.pipeline.display()))?;
    for component in &plan.components {
        recorder.lock().component(&component.id).image_id =
            image_ids.get(&component.image).cloned();
    }
    if events.snapshot().interrupts > 0 {
        return Ok(RunOutcome::Interrupted);
    }
    let ids: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
    let logs = LogMux::new(&ids, options.color, options.logs_dir.clone());
    logs.prepare_dir(&ids)
        .context("--logs-dir: cannot write the components' log files")?;
    let env_dir = EnvDir::new(&run_id)?;
    let mut guard = CleanupGuard::new(&engine, &run_id, &plan, console, reaper);

    let started = Instant::now();
    let listen = network::create_network(&engine, &plan, &labels, &location, console)?;
    let control = network::control_plane(
        &engine,
        &plan,
        &labels,
        &location,
        &listen,
        &network::ControlPlaneSettings {
            port: options.control_plane_port,
            heartbeat_interval: options.heartbeat_interval,
            image: control_plane_image,
        },
        console,
    )?;
    let reachable = Arc::new(Mutex::new(BTreeMap::new()));
    let relay_counts = Arc::new(relay::EdgeCounts::default());
    let notices = Notices::start(
        StatusView {
            plan: plan.clone(),
            events: events.clone(),
            control: control.server.clone(),
            reachable: reachable.clone(),
            relay: relay_counts.clone(),
            width: options.table_width,
        },
        console,
        options.status_interval,
    );
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
        location: &location,
        env_dir: &env_dir,
        reachable: &reachable,
        record: recorder,
    };

    let mut relay = None;
    let result = start::create_all(&live)
        .and_then(|()| start::start_all(&live, started))
        .and_then(|()| {
            notices.print_status();
            if options.verify {
                supervise::verify_streams(&live, options.verify_timeout)?;
            }
            relay = start_relay(&live, &relay_counts)?;
            supervise::supervise(&live)
        });
    // The relay's calls end before their components are stopped, so a stop is no broken edge.
    drop(relay);

    // Components stop heartbeating while they are stopped: that is no news.
    notices.stop();
    drain_exited_logs(&live);
    record_end(&live);
    guard.teardown();
    logs.finish(Duration::from_secs(2));
    match result {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Interrupted) => Ok(RunOutcome::Interrupted),
        Err(Halt::Exited(exit)) => Err(exit.into()),
        Err(Halt::Failed(error)) => Err(error),
    }
}

/// The labels of everything the run creates: the run's, its owner's, and the job container
/// flowctl runs in, if any.
fn run_labels(plan: &RunPlan, run_id: &str, location: &Location) -> BTreeMap<String, String> {
    let mut labels = labels::run_labels(
        &plan.pipeline,
        plan.project.as_deref(),
        run_id,
        RunOwner::current().labels(),
    );
    if let Some(own) = location.own_container() {
        labels.insert(labels::OWNER_CONTAINER.to_string(), own.to_string());
    }
    labels
}

/// Starts relaying between the flowctl.v1 components, if the pipeline has any.
fn start_relay(
    live: &LiveRun,
    counts: &Arc<relay::EdgeCounts>,
) -> Result<Option<relay::Relay>, Halt> {
    let nodes = relay::nodes_of(live.plan, live.reachable)?;
    if nodes.is_empty() {
        return Ok(None);
    }
    live.console.info(format!(
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
        live.events.clone(),
        live.reachable.clone(),
        live.console,
    )?;
    Ok(Some(relay))
}

/// What the summary says of the run before anything starts.
fn record_plan(
    recorder: &Recorder,
    plan: &RunPlan,
    engine: &Engine,
    location: &Location,
    run_id: &str,
) {
    let mut record = recorder.lock();
    record.pipeline = plan.pipeline.clone();
    record.project = plan.project.clone();
    record.run_id = run_id.to_string();
    record.engine_cli = engine.program().display().to_string();
    record.engine_kind = engine.kind().as_str().to_string();
    record.engine_version = engine.version_line().to_string();
    record.location = location.to_string();
    for component in &plan.components {
        let entry = record.component(&component.id);
        entry.role = component.role.as_str().to_string();
        entry.image = component.image.clone();
        entry.container = component.container_name.clone();
    }
}

/// What the summary says of each component once the run is over: exits, restarts, and its
/// registration and last heartbeat's counters.
fn record_end(live: &LiveRun) {
    let state = live.events.snapshot();
    let services = live.control.server.services();
    let mut record = live.record.lock();
    for component in &live.plan.components {
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
