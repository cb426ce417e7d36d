//! `flowctl run --swarm`: the same run on a Docker Swarm. The engine the usual way names
//! (`DOCKER_HOST`, `--docker-bin`) must be a manager; the run gets one attachable overlay
//! network and one service per component ([`service`]), labelled as containers are on one
//! engine, plus the control plane as a service of flowctl's image on that network, published
//! in host mode so flowctl reaches it from wherever it runs. Services start level by level: a
//! component's service is created once every task of each of its inputs runs on its node and
//! answers its health check there ([`tasks`]). Every task's output is relayed with component
//! and node in the prefix ([`logs`]). The run completes when every sink's tasks completed;
//! a task Swarm rejects or that fails past its restarts fails the run, naming component, node
//! and Swarm's error. Every exit path ends in [`SwarmRun::end`]: the logs caught up, then
//! [`cleanup::remove_swarm_run`] (services, then the network once no task on any node is
//! attached), the same function the second signal and the reaper use.

mod logs;
mod service;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};

use super::env_file::{EnvDir, EnvFile};
use super::record::Recorder;
use super::teardown::{conclude_removal, ActiveRun, Attached, Forced, Halt, SignalPolicy};
use super::{RunOptions, RunOutcome};
use crate::cleanup;
use crate::contract::{self, ControlPlaneAccess};
use crate::control_plane::remote::RemoteControlPlane;
use crate::control_plane::ControlPlaneView;
use crate::engine::swarm::SwarmRole;
use crate::engine::Engine;
use crate::events::RunEvents;
use crate::health::HealthProbe;
use crate::labels;
use crate::logs::{elapsed_ms, Console};
use crate::owner::RunOwner;
use crate::plan::{self, RunPlan};
use crate::reaper::Reaper;
use crate::verify;
use logs::ServiceLogs;
use service::ServicePlan;
use tasks::{Nodes, PlacedTask};

/// How often the manager is asked about the tasks.
const POLL: Duration = Duration::from_millis(250);
/// How long the control plane's task may take to run and answer.
const CONTROL_PLANE_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `options.pipeline` on the Swarm the engine manages; see the module documentation.
pub fn run(
    options: &RunOptions,
    signals: &SignalPolicy,
    recorder: &Recorder,
) -> Result<RunOutcome, Halt> {
    let mut run = SwarmRun::prepare(options, signals, recorder)?;
    let mut result = run.bring_up().and_then(|()| run.supervise());
    // A signal kills the engine calls in flight: their errors are the signal's doing.
    if matches!(result, Err(Halt::Failed(_))) && run.events.snapshot().interrupts > 0 {
        result = Err(Halt::Interrupted);
    }
    run.end();
    result
}

/// A run on a Swarm: what it made, and what its steps share.
struct SwarmRun<'a> {
    options: &'a RunOptions,
    recorder: &'a Recorder,
    console: Console,
    plan: RunPlan,
    engine: Engine,
    run_id: String,
    labels: BTreeMap<String, String>,
    events: Arc<RunEvents>,
    logs: ServiceLogs,
    env_dir: EnvDir,
    nodes: Nodes,
    /// Created services: (service plan index, service id), in start order.
    created: Vec<(usize, String)>,
    control: Option<RemoteControlPlane>,
    /// Per service (by index) and slot, the node its task last ran on.
    placed: BTreeMap<(usize, u64), String>,
    /// `NAME:ADDRESS` of the control plane on the run's network, written into the
    /// `/etc/hosts` of each component's service (see [`SwarmRun::note_control_plane_host`]).
    hosts: Vec<String>,
    reaper: Option<Reaper>,
    ended: bool,
    _signals: Attached<'a>,
}

impl<'a> SwarmRun<'a> {
    /// Loads and checks the plan and the engine; starts the reaper. Nothing of the run exists
    /// yet.
    fn prepare(
        options: &'a RunOptions,
        signals: &'a SignalPolicy,
        recorder: &'a Recorder,
    ) -> Result<SwarmRun<'a>, Halt> {
        let console = Console {
            color: options.color,
        };
        recorder.lock().started_at = Some(SystemTime::now());
        let file = options.pipeline.display().to_string();
        let plan = plan::load(&options.pipeline, &options.naming)?;
        if let Some(refusal) = plan.driver.run_refusal() {
            return Err(anyhow!("{file}: {refusal}").into());
        }
        for component in &plan.components {
            if let Some(why) = not_on_swarm_yet(component) {
                return Err(anyhow!("{file}: component `{}`: {why}", component.id).into());
            }
        }
        let engine = Engine::detect(&options.docker_bin, options.deadlines)
            .context("the container engine is not available")?;
        match engine.swarm_role()? {
            SwarmRole::Manager => {}
            SwarmRole::Worker => {
                return Err(anyhow!(
                    "{}: this engine is a Swarm worker; --swarm needs a manager (point DOCKER_HOST \
                     at one, or run `docker node promote` on a manager)",
                    engine.program().display()
                )
                .into())
            }
            SwarmRole::None => {
                return Err(anyhow!(
                    "{}: this engine is not part of a Swarm: `docker swarm init` makes it a \
                     manager, or point DOCKER_HOST at a manager",
                    engine.program().display()
                )
                .into())
            }
        }
        if engine.inspect_network(&plan.network)?.is_some() {
            return Err(anyhow!(
                "network {} exists already (another run of this pipeline?): give this run a \
                 --project or --network of its own",
                plan.network
            )
            .into());
        }
        let run_id = super::new_run_id();
        let events = Arc::new(RunEvents::default());
        let signals = signals.attach(ActiveRun {
            events: events.clone(),
            run_id: run_id.clone(),
            console,
            forced: Forced::Engine {
                engine: engine.clone(),
                swarm: true,
            },
        });
        let labels = labels::run_labels(
            &plan.pipeline,
            plan.project.as_deref(),
            &run_id,
            RunOwner::current().labels(),
        );
        {
            let mut record = recorder.lock();
            record.pipeline = plan.pipeline.clone();
            record.project = plan.project.clone();
            record.run_id = run_id.clone();
            record.engine_cli = engine.program().display().to_string();
            record.engine_kind = format!("{} swarm", engine.kind().as_str());
            record.engine_version = engine.version_line().to_string();
            record.location = "swarm".into();
            for component in &plan.components {
                let entry = record.component(&component.id);
                entry.role = component.role.as_str().to_string();
                entry.image = component.image.clone();
            }
        }
        let ids: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
        let logs = ServiceLogs::new(&ids, options.color, options.logs_dir.clone());
        if let Some(dir) = &options.logs_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --logs-dir {}", dir.display()))?;
        }
        let reaper = super::prepare::spawn_reaper(&engine, &run_id, true, console);
        console.info(format!(
            "run {run_id} on the Swarm managed by {} ({})",
            engine.program().display(),
            engine.version_line()
        ));
        Ok(SwarmRun {
            options,
            recorder,
            console,
            env_dir: EnvDir::new(&run_id)?,
            plan,
            engine,
            run_id,
            labels,
            events,
            logs,
            nodes: Nodes::default(),
            created: Vec::new(),
            control: None,
            placed: BTreeMap::new(),
            hosts: Vec::new(),
            reaper,
            ended: false,
            _signals: signals,
        })
    }

    fn interrupted(&self) -> Result<(), Halt> {
        if self.events.snapshot().interrupts > 0 {
            return Err(Halt::Interrupted);
        }
        Ok(())
    }

    /// The network, the control plane, then the components level by level, each level once
    /// the previous one is up; then the declared streams are verified.
    fn bring_up(&mut self) -> Result<(), Halt> {
        let started = Instant::now();
        self.engine
            .create_overlay_network(&self.plan.network, &self.labels)
            .with_context(|| format!("cannot create the overlay network {}", self.plan.network))?;
        self.console.info(format!(
            "overlay network {} created in {} ms",
            self.plan.network,
            elapsed_ms(started)
        ));
        self.start_control_plane()?;
        let plan = self.plan.clone();
        let services = service::services_of(&plan);
        let depths: std::collections::BTreeSet<usize> =
            services.iter().map(|s| s.component.depth).collect();
        for depth in depths {
            self.interrupted()?;
            let level: Vec<usize> = (0..services.len())
                .filter(|&i| services[i].component.depth == depth)
                .collect();
            for &index in &level {
                self.create_service(index, &services[index])?;
            }
            self.wait_level(&services, &level)?;
        }
        self.console.info(format!(
            "all {} component(s) up in {} ms",
            services.len(),
            elapsed_ms(started)
        ));
        if self.options.verify {
            self.verify(&services)?;
        }
        Ok(())
    }

    /// The control plane as a service of flowctl's image on the run's network; flowctl reads
    /// it through its host-mode published port.
    fn start_control_plane(&mut self) -> Result<(), Halt> {
        let name = format!("flowctl-cp-{}", self.run_id);
        let mut args: Vec<String> = vec!["--name".into(), name.clone()];
        for (key, value) in &self.labels {
            args.extend(["--label".into(), format!("{key}={value}")]);
            args.extend(["--container-label".into(), format!("{key}={value}")]);
        }
        args.extend([
            "--label".into(),
            format!("{}={}", labels::COMPONENT, contract::CONTROL_PLANE_SERVICE),
            "--network".into(),
            format!(
                "name={},alias={}",
                self.plan.network,
                contract::CONTROL_PLANE_SERVICE
            ),
            "--endpoint-mode".into(),
            "dnsrr".into(),
            "--restart-condition".into(),
            "none".into(),
            "--publish".into(),
            format!("mode=host,target={}", contract::CONTROL_PLANE_PORT),
            "--no-resolve-image".into(),
            self.options.control_plane_image.clone(),
        ]);
        args.extend(contract::control_plane_args(
            self.plan.expected_roles(),
            self.options.heartbeat_interval,
        ));
        let id = self
            .engine
            .create_service(&args)
            .context("cannot create the control plane service")?;
        let deadline = Instant::now() + CONTROL_PLANE_PATIENCE;
        let address = loop {
            self.interrupted()?;
            let tasks = self.nodes.tasks(&self.engine, std::slice::from_ref(&id))?;
            let tasks = tasks.get(&id).map(Vec::as_slice).unwrap_or_default();
            if let Some(failure) = tasks::failure_of(tasks, 0) {
                return Err(anyhow!(
                    "the control plane ({}) {} on node {}: {}",
                    self.options.control_plane_image,
                    failure.state,
                    failure.node,
                    failure.error
                )
                .into());
            }
            let running = tasks.iter().find(|t| t.task.state == "running");
            if let Some(task) = running {
                if let Some(address) = task.address_of(contract::CONTROL_PLANE_PORT) {
                    self.note_control_plane_host(task);
                    break address;
                }
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "the control plane ({}) was not running within {} s",
                    self.options.control_plane_image,
                    CONTROL_PLANE_PATIENCE.as_secs()
                )
                .into());
            }
            thread::sleep(POLL);
        };
        let control = RemoteControlPlane::connect(address, CONTROL_PLANE_PATIENCE)?;
        self.console.info(format!(
            "control plane serving at {address} (service {name})"
        ));
        self.control = Some(control);
        Ok(())
    }

    fn create_service(&mut self, index: usize, service: &ServicePlan) -> Result<(), Halt> {
        let access = ControlPlaneAccess {
            endpoint: format!(
                "{}:{}",
                contract::CONTROL_PLANE_SERVICE,
                contract::CONTROL_PLANE_PORT
            ),
            heartbeat_interval: self.options.heartbeat_interval,
        };
        let env = contract::component_env(&service.component.env, &service.id, Some(&access));
        let env_file = EnvFile::write(&self.env_dir, &self.run_id, &service.id, &env)?;
        let args = service::create_args(
            service,
            &self.plan.network,
            &self.labels,
            &env_file.path,
            &self.hosts,
        );
        let id = self
            .engine
            .create_service(&args)
            .with_context(|| format!("component `{}`: cannot create its service", service.id))?;
        drop(env_file);
        self.created.push((index, id.clone()));
        self.recorder.lock().component(&service.id).started_at = Some(SystemTime::now());
        self.logs.follow(
            &self.engine,
            &id,
            &service.id,
            index,
            service.component.replicas > 1,
        )?;
        Ok(())
    }

    /// The tasks of every created service, by service index.
    fn read_tasks(&mut self) -> Result<BTreeMap<usize, Vec<PlacedTask>>, Halt> {
        let ids: Vec<String> = self.created.iter().map(|(_, id)| id.clone()).collect();
        let mut by_id = self.nodes.tasks(&self.engine, &ids)?;
        Ok(self
            .created
            .iter()
            .map(|(index, id)| (*index, by_id.remove(id).unwrap_or_default()))
            .collect())
    }

    /// Fails the run if a task of any created service failed for good; says which replica
    /// moved to another node.
    fn check_tasks(
        &mut self,
        services: &[ServicePlan],
        tasks: &BTreeMap<usize, Vec<PlacedTask>>,
    ) -> Result<(), Halt> {
        for (&index, list) in tasks {
            let service = &services[index];
            if let Some(failure) = tasks::failure_of(list, service.component.restart.max_restarts())
            {
                let exit = failure
                    .exit_code
                    .filter(|code| *code != 0)
                    .map(|code| format!(" (exit code {code})"))
                    .unwrap_or_default();
                let lines = self.logs.last_lines(&service.id);
                let tail = if lines.is_empty() {
                    String::new()
                } else {
                    format!("; its last lines:\n  {}", lines.join("\n  "))
                };
                return Err(anyhow!(
                    "component `{}` {} on node {}: {}{exit}{tail}",
                    service.id,
                    failure.state,
                    if failure.node.is_empty() {
                        "(none)"
                    } else {
                        &failure.node
                    },
                    failure.error
                )
                .into());
            }
            for task in tasks::current(list) {
                if task.node.hostname.is_empty() {
                    continue;
                }
                let key = (index, task.task.slot);
                let node = task.node.hostname.clone();
                match self.placed.insert(key, node.clone()) {
                    Some(before) if before != node => self.console.warn(format!(
                        "component `{}` (replica {}) moved from node {before} to node {node}",
                        service.id, task.task.slot
                    )),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Waits until every task of the services in `level` runs and is healthy on its node (and
    /// has registered, for `register: true`).
    fn wait_level(&mut self, services: &[ServicePlan], level: &[usize]) -> Result<(), Halt> {
        let patience = level
            .iter()
            .map(|&i| services[i].component.health_timeout)
            .max()
            .unwrap_or_default()
            // Scheduling and starting on a node come before the component's own start-up.
            + Duration::from_secs(30);
        let deadline = Instant::now() + patience;
        let mut waiting: Vec<usize> = level.to_vec();
        let mut last_problem: BTreeMap<usize, String> = BTreeMap::new();
        while !waiting.is_empty() {
            self.interrupted()?;
            let tasks = self.read_tasks()?;
            self.check_tasks(services, &tasks)?;
            let mut still = Vec::new();
            for &index in &waiting {
                let service = &services[index];
                let list = tasks.get(&index).map(Vec::as_slice).unwrap_or_default();
                match self.is_up(service, list) {
                    Ok(nodes) => {
                        self.recorder.lock().component(&service.id).ready_at =
                            Some(SystemTime::now());
                        self.recorder.lock().component(&service.id).nodes = nodes.clone();
                        self.console
                            .info(format!("{} ready on {}", service.id, nodes.join(", ")));
                    }
                    Err(problem) => {
                        last_problem.insert(index, problem);
                        still.push(index);
                    }
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                if Instant::now() >= deadline {
                    let why: Vec<String> = waiting
                        .iter()
                        .map(|i| {
                            format!(
                                "`{}`: {}",
                                services[*i].id,
                                last_problem.get(i).cloned().unwrap_or_default()
                            )
                        })
                        .collect();
                    return Err(anyhow!(
                        "not up within {} s: {}",
                        patience.as_secs(),
                        why.join("; ")
                    )
                    .into());
                }
                thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// Notes the control plane's address on the run's network (its running `task`) for the
    /// components' services: they find it by name through this `/etc/hosts` entry, not through
    /// Swarm's DNS. A node's DNS learns of tasks on other nodes by gossip (NetworkDB), and for
    /// the control plane, the first task on a new network, that was seen to lag by a minute
    /// and more on a freshly joined node, longer than a component waits to register. The
    /// control plane never restarts or moves, so its entry cannot go stale; components, whose
    /// tasks may be replaced (new address), find each other by DNS.
    fn note_control_plane_host(&mut self, task: &PlacedTask) {
        if let Some(address) = task.task.addresses.get(&self.plan.network) {
            self.hosts
                .push(format!("{}:{address}", contract::CONTROL_PLANE_SERVICE));
        }
    }

    /// The nodes of the service's tasks once all of them run and answer their health check,
    /// else what is missing.
    fn is_up(&self, service: &ServicePlan, tasks: &[PlacedTask]) -> Result<Vec<String>, String> {
        let component = service.component;
        let current = tasks::current(tasks);
        let running: Vec<&&PlacedTask> = current
            .iter()
            .filter(|t| t.task.state == "running")
            .collect();
        // A sink or job may finish before it is seen running: that is up (and done).
        if component.role.must_finish() && tasks::completed(tasks, component.replicas) {
            return Ok(nodes_of(tasks));
        }
        if running.len() < component.replicas as usize {
            let states: Vec<String> = current
                .iter()
                .map(|t| format!("{} on {}", t.task.state, t.node.hostname))
                .collect();
            return Err(format!(
                "{} of {} task(s) running ({})",
                running.len(),
                component.replicas,
                states.join(", ")
            ));
        }
        if let Some(health) = &component.health {
            for task in &running {
                let address = task.address_of(health.container_port).ok_or_else(|| {
                    format!("health port {} is not published yet", health.container_port)
                })?;
                HealthProbe::for_plan(address, health)
                    .check()
                    .map_err(|e| format!("health on {} ({address}): {e}", task.node.hostname))?;
            }
        }
        if component.register {
            let registered = self
                .control
                .as_ref()
                .and_then(|c| c.service_of(&service.id))
                .is_some();
            if !registered {
                return Err("not registered with the control plane yet".into());
            }
        }
        Ok(nodes_of(tasks))
    }

    /// Verifies the declared streams at the task ports flowctl reaches.
    fn verify(&mut self, services: &[ServicePlan]) -> Result<(), Halt> {
        let tasks = self.read_tasks()?;
        let mut reach: BTreeMap<String, Vec<(u16, std::net::SocketAddr)>> = BTreeMap::new();
        for (&index, list) in &tasks {
            let service = &services[index];
            if let Some(task) = tasks::current(list)
                .into_iter()
                .find(|t| t.task.state == "running")
            {
                let ports = task
                    .task
                    .ports
                    .keys()
                    .filter_map(|&port| Some((port, task.address_of(port)?)))
                    .collect();
                reach.insert(service.component.id.clone(), ports);
            }
        }
        let (checks, notes) = verify::checks_for(&self.plan, &reach);
        for note in notes {
            self.console.info(note);
        }
        for result in verify::verify_streams(&checks, self.options.verify_timeout) {
            match result {
                Ok(report) => self.console.info(format!("verified: {report}")),
                Err(error) => return Err(anyhow!("stream verification failed: {error}").into()),
            }
        }
        Ok(())
    }

    /// Until every sink (and job) completed, a task failed for good, or a signal came.
    fn supervise(&mut self) -> Result<RunOutcome, Halt> {
        let plan = self.plan.clone();
        let services = service::services_of(&plan);
        loop {
            self.interrupted()?;
            let tasks = self.read_tasks()?;
            self.check_tasks(&services, &tasks)?;
            let finishing: Vec<usize> = (0..services.len())
                .filter(|&i| services[i].component.role.must_finish())
                .collect();
            let done = !finishing.is_empty()
                && finishing.iter().all(|i| {
                    tasks
                        .get(i)
                        .is_some_and(|list| tasks::completed(list, services[*i].component.replicas))
                });
            if done {
                let mut record = self.recorder.lock();
                for &i in &finishing {
                    let entry = record.component(&services[i].id);
                    entry.exit_code = Some(0);
                    entry.exited_at = Some(SystemTime::now());
                }
                drop(record);
                self.console
                    .info(format!("pipeline {} is complete", self.plan.pipeline));
                return Ok(RunOutcome::Completed);
            }
            thread::sleep(POLL);
        }
    }

    /// Every exit's one sequence, once: what the tasks wrote is relayed to its end, the
    /// summary learns the registrations, then services and network are removed (waiting until
    /// no task is left on any node) and the reaper is dismissed.
    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.logs.catch_up(&self.engine);
        if let Some(control) = &self.control {
            let services = control.services();
            let mut record = self.recorder.lock();
            for snapshot in services {
                if let Some(component) = &snapshot.component {
                    let entry = record.component(component);
                    entry.service_id = Some(snapshot.service_id.clone());
                    entry.metrics = snapshot.metrics.clone();
                }
            }
        }
        let started = Instant::now();
        self.console
            .info("removing the run's services and network...");
        let removal = cleanup::remove_swarm_run(&self.engine, &self.run_id);
        let removed = format!("{} service(s)", removal.services.len());
        let hint = "`flowctl gc` against the manager removes them";
        conclude_removal(
            self.console,
            &self.run_id,
            &removal,
            &removed,
            started,
            hint,
            &mut self.reaper,
        );
    }
}

impl Drop for SwarmRun<'_> {
    /// The panic backstop: the same sequence as every other exit.
    fn drop(&mut self) {
        self.end();
    }
}

/// The node names of `tasks` that run or ran, in order, without repeats.
fn nodes_of(tasks: &[PlacedTask]) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for task in tasks {
        let name = &task.node.hostname;
        if !name.is_empty() && !nodes.contains(name) {
            nodes.push(name.clone());
        }
    }
    nodes
}

/// Why `component` cannot run under `--swarm` (yet), if it cannot.
fn not_on_swarm_yet(component: &plan::ComponentPlan) -> Option<&'static str> {
    if component.is_relayed() {
        return Some(
            "flowctl.v1 components need flowctl's relay, which `run --swarm` does not run yet; \
             run the pipeline on one engine",
        );
    }
    if !component.secrets.is_empty() {
        return Some(
            "secrets: are not given to Swarm services yet; run the pipeline on one engine, or \
             give the value through the environment",
        );
    }
    None
}
