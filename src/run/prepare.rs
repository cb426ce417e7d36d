//! The run before it exists: [`Prepared::new`] loads the plan, finds the engine and where
//! flowctl runs, sweeps what dead CI jobs left, checks every image, name and port, pulls what
//! the pull policy asks for and applies what the images say about themselves, so the plan is
//! fixed, with every rule checked, before anything of the run is created. [`Prepared::start`]
//! then creates the network and the control plane and hands over to a [`Run`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context};

use super::env_file::EnvDir;
use super::notices::{Notices, Pids, StatusView};
use super::record::Recorder;
use super::teardown::{
    check_interrupted, ActiveRun, Attached, CleanupGuard, Forced, Halt, SignalPolicy,
};
use super::{network, preflight, process, pull, relay, Run, RunOptions};
use crate::engine::Engine;
use crate::events::RunEvents;
use crate::labels;
use crate::location::{self, Location};
use crate::logs::{Console, LogMux};
use crate::metadata::MetadataCache;
use crate::owner::RunOwner;
use crate::plan::RunPlan;
use crate::processes::Reservations;
use crate::reaper::Reaper;

/// A run whose plan is final and whose images are present; nothing of it exists yet but its
/// reaper (and, while metadata was read, labelled probe containers the reaper covers).
pub struct Prepared<'a> {
    pub(super) options: &'a RunOptions,
    pub(super) recorder: &'a Recorder,
    pub(super) console: Console,
    pub(super) plan: RunPlan,
    pub(super) engine: Engine,
    pub(super) run_id: String,
    pub(super) events: Arc<RunEvents>,
    pub(super) signals: Attached<'a>,
    pub(super) location: Location,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) reaper: Option<Reaper>,
    /// A file mixing processes and containers: the ports given to its processes.
    pub(super) reservations: Option<Reservations>,
}

impl<'a> Prepared<'a> {
    /// Every step before the run creates anything. [`Halt::Interrupted`] if a signal came
    /// meanwhile (pulls in flight are killed by it).
    pub fn new(
        options: &'a RunOptions,
        signals: &'a SignalPolicy,
        recorder: &'a Recorder,
        mut plan: RunPlan,
    ) -> Result<Prepared<'a>, Halt> {
        let console = Console {
            color: options.color,
        };
        let file = options.pipeline.display().to_string();
        if let Some(refusal) = plan.driver.run_refusal() {
            return Err(anyhow!("{file}: {refusal}").into());
        }
        if let Some(component) = plan.components.iter().find(|c| !c.placement.is_empty()) {
            return Err(anyhow!(
                "{file}: component `{}`: placement: chooses Swarm nodes, and one engine has \
                 none: run it with `flowctl run --swarm` on a Swarm manager (or remove the field)",
                component.replica_of.as_deref().unwrap_or(&component.id)
            )
            .into());
        }
        // A file mixing processes and containers: its executables and ports first (the
        // control plane is the containers', on the network's gateway, which is an address of
        // this machine too).
        let reservations = match plan.is_mixed() {
            true => {
                let port = options
                    .control_plane_port
                    .unwrap_or(super::DEFAULT_CONTROL_PLANE_PORT);
                Some(process::check(&mut plan, &options.pipeline, Some(port))?.1)
            }
            false => None,
        };
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
        let run_id = super::new_run_id();
        let signals = signals.attach(ActiveRun {
            events: events.clone(),
            run_id: run_id.clone(),
            console,
            forced: match reservations {
                Some(_) => Forced::Mixed {
                    engine: engine.clone(),
                },
                None => Forced::Engine {
                    engine: engine.clone(),
                    swarm: false,
                },
            },
        });
        let location = location::detect(&engine, &options.location)?;
        console.info(location.describe());
        if reservations.is_some() && location != Location::Host {
            let process = plan.components.iter().find(|c| c.process.is_some());
            return Err(anyhow!(
                "{file}: component `{}`: it runs as a process of this machine, and the other \
                 components as containers of an engine flowctl does not run next to ({location}); \
                 mixing both needs flowctl on the engine's host (--engine-location host), or give \
                 every component an image",
                process.map_or("", |c| c.id.as_str())
            )
            .into());
        }
        record_plan(recorder, &plan, &engine, &location, &run_id);

        // The one step before start-up that deletes anything, and only in a CI job: it goes
        // first so that a dead job's leftovers do not hold the names checked next.
        preflight::sweep_dead_job_runs(&engine, &location, console);
        let control_plane_image = control_plane_image(options, &location);
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
            check_interrupted(&events)?;
            image_ids.extend(pulled?);
        }

        // The reaper watches from the first thing the run creates: the probe containers that
        // read image metadata carry the run's labels like everything else.
        let reaper = spawn_reaper(&engine, &run_id, false, console);
        let labels = run_labels(&plan, &run_id, &location);
        let metadata = crate::metadata::read_all(
            &engine,
            &plan,
            &image_ids,
            &labels,
            MetadataCache::for_user().as_ref(),
        )?;
        plan.apply_metadata(&metadata)
            .map_err(|e| anyhow!("{file}: {e}"))?;
        if reservations.is_some() {
            plan.check_mixed_edges()
                .map_err(|e| anyhow!("{file}: {e}"))?;
        }
        for component in plan.containers() {
            recorder.lock().component(&component.id).image_id =
                image_ids.get(&component.image).cloned();
        }
        check_interrupted(&events)?;
        Ok(Prepared {
            options,
            recorder,
            console,
            plan,
            engine,
            run_id,
            events,
            signals,
            location,
            labels,
            reaper,
            reservations,
        })
    }

    /// Creates the run: its log relay, env folder and cleanup guard, then its network and
    /// control plane. From here on everything the run makes belongs to the [`Run`], which
    /// removes it whatever happens; a failure in here is undone by the guard.
    pub fn start(self) -> Result<Run<'a>, Halt> {
        let options = self.options;
        let ids: Vec<&str> = self.plan.components.iter().map(|c| c.id.as_str()).collect();
        let logs = LogMux::new(&ids, options.color, options.logs_dir.clone());
        logs.prepare_dir(&ids)
            .context("--logs-dir: cannot write the components' log files")?;
        let env_dir = EnvDir::new(&self.run_id)?;
        let guard = CleanupGuard::new(
            &self.engine,
            &self.run_id,
            &self.plan,
            self.console,
            self.reaper,
        );
        let children = match self.reservations {
            Some(_) => Some(process::Children::new(
                &self.run_id,
                &self.plan,
                self.console,
            )?),
            None => None,
        };
        let started = Instant::now();
        let listen = network::create_network(
            &self.engine,
            &self.plan,
            &self.labels,
            &self.location,
            self.console,
        )?;
        let control = network::control_plane(
            &self.engine,
            &self.plan,
            &self.labels,
            &self.location,
            &listen,
            &network::ControlPlaneSettings {
                port: options
                    .control_plane_port
                    .unwrap_or(super::DEFAULT_CONTROL_PLANE_PORT),
                heartbeat_interval: options.heartbeat_interval,
                image: control_plane_image(options, &self.location),
            },
            self.console,
        )?;
        if let Some(children) = &children {
            children.set_control_plane(control.status_address.to_string())?;
        }
        let reachable = Arc::new(Mutex::new(BTreeMap::new()));
        let relay_counts = Arc::new(relay::EdgeCounts::default());
        let pids = Arc::new(Pids::default());
        let notices = Notices::start(
            StatusView {
                plan: self.plan.clone(),
                events: self.events.clone(),
                control: control.server.clone(),
                reachable: reachable.clone(),
                relay: relay_counts.clone(),
                width: options.table_width,
                pids: pids.clone(),
            },
            self.console,
            options.status_interval,
        );
        Ok(Run {
            relay: None,
            notices,
            guard,
            children,
            control,
            logs,
            env_dir,
            _reservations: self.reservations,
            options,
            recorder: self.recorder,
            console: self.console,
            plan: self.plan,
            engine: self.engine,
            run_id: self.run_id,
            labels: self.labels,
            location: self.location,
            events: self.events,
            reachable,
            relay_counts,
            pids,
            completed: false,
            started,
            ended: false,
            _signals: self.signals,
        })
    }
}

/// The image that runs the control plane, when it cannot run in flowctl (remote engines).
fn control_plane_image<'o>(options: &'o RunOptions, location: &Location) -> Option<&'o str> {
    location
        .control_plane_in_container()
        .then_some(options.control_plane_image.as_str())
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
        match &component.process {
            Some(process) => entry.command = Some(process.program.display().to_string()),
            None => {
                entry.image = component.image.clone();
                entry.container = component.container_name.clone();
            }
        }
    }
}

/// Starts the reaper that removes the run (on a Swarm manager with `swarm`, its services too)
/// if flowctl is killed before it can (see reaper.rs).
pub(super) fn spawn_reaper(
    engine: &Engine,
    run_id: &str,
    swarm: bool,
    console: Console,
) -> Option<Reaper> {
    match Reaper::spawn(engine, run_id, swarm) {
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
