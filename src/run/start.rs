//! Bringing the pipeline up: the network and the control plane, every container created at
//! once (none started), then the levels started in order, each component of a level in
//! parallel and ready (healthy, and registered when it says `register: true`) before anything
//! that reads from it starts. A container that exits non-zero meanwhile is replaced as its
//! `restart` policy allows.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};

use super::env_file::{EnvDir, EnvFile};
use super::lifecycle::{announce_restart, in_parallel, restart_allowed};
use super::network::RunControlPlane;
use super::notices::Pids;
use super::process::{Children, Processes};
use super::reach::{PortAccess, Reachable};
use super::record::Recorder;
use super::teardown::{check_interrupted, exit_error, ExitError, Halt, FAILURE_LOG_LINES};
use crate::contract;
use crate::engine::{ContainerInfo, ContainerSpec, Engine, Mount, PortPublish, ResourceLimits};
use crate::events::{Exit, RunEvents};
use crate::health::{Backoff, HealthProbe};
use crate::labels;
use crate::location::Location;
use crate::logs::{elapsed_ms, last_lines, Console, LogMux};
use crate::plan::{ComponentPlan, RunPlan, SecretTarget};

/// What starting and supervising share: the plan, the engine, and what the run has made.
pub struct LiveRun<'a> {
    pub engine: &'a Engine,
    pub plan: &'a RunPlan,
    pub run_id: &'a str,
    /// The run's labels (every container also gets its component's).
    pub labels: &'a BTreeMap<String, String>,
    pub events: &'a Arc<RunEvents>,
    pub logs: &'a LogMux,
    pub console: Console,
    pub control: &'a RunControlPlane,
    pub heartbeat_interval: Duration,
    /// Where flowctl runs relative to the engine.
    pub location: &'a Location,
    /// Where env files are written.
    pub env_dir: &'a EnvDir,
    /// How each started component's ports are reached.
    pub reachable: &'a Arc<Reachable>,
    /// What `--summary` writes.
    pub record: &'a Recorder,
    /// The processes of a file mixing processes and containers.
    pub children: Option<&'a Children>,
    /// Each process's pid, for the status table.
    pub pids: &'a Arc<Pids>,
}

impl LiveRun<'_> {
    /// [`Halt::Interrupted`] once a signal arrived.
    pub fn check_interrupted(&self) -> Result<(), Halt> {
        check_interrupted(self.events)
    }

    /// What starts and replaces the processes of a file mixing processes and containers.
    pub fn processes(&self) -> Option<Processes<'_>> {
        Some(Processes {
            children: self.children?,
            plan: self.plan,
            events: self.events,
            logs: self.logs,
            control: self.control,
            heartbeat_interval: self.heartbeat_interval,
            reachable: self.reachable,
            pids: self.pids,
            recorder: self.record,
            console: self.console,
        })
    }

    /// The env component `component`'s container gets: the file's plus what flowctl injects.
    fn container_env(&self, component: &ComponentPlan) -> BTreeMap<String, String> {
        self.control
            .component_env(component, self.heartbeat_interval)
    }
}

/// Creates every component's container at once, none started: starting a level later costs
/// only `start`, and a container that cannot be created fails the run before any runs.
pub fn create_all(run: &LiveRun) -> Result<(), Halt> {
    let started = Instant::now();
    if let Some(processes) = run.processes() {
        for component in run.plan.components.iter().filter(|c| c.process.is_some()) {
            processes.warn_injected(component);
        }
    }
    for component in run.plan.containers() {
        for key in contract::INJECTED_ENV {
            if component.env.contains_key(*key) {
                run.console.warn(format!(
                    "component `{}`: env {key} is set by flowctl; the file's value is ignored",
                    component.id
                ));
            }
        }
    }
    let all: Vec<&ComponentPlan> = run.plan.containers().collect();
    in_parallel(run.events, &all, |component| {
        Ok(create_container(run, component)?)
    })?;
    run.console.info(format!(
        "created {} container(s) in {} ms",
        all.len(),
        elapsed_ms(started)
    ));
    run.check_interrupted()
}

/// Starts the levels in order; the components of one level start in parallel.
pub fn start_all(run: &LiveRun, started: Instant) -> Result<(), Halt> {
    let levels = run.plan.levels();
    for (depth, level) in levels.iter().enumerate() {
        in_parallel(run.events, level, |component| {
            start_component(run, component)
        })?;
        if depth + 1 < levels.len() {
            run.check_interrupted()?;
        }
    }
    run.console.info(format!(
        "pipeline {} is up: {} component(s) in {} ms (Ctrl+C to stop)",
        run.plan.pipeline,
        run.plan.components.len(),
        elapsed_ms(started)
    ));
    Ok(())
}

/// The container of `component`.
fn container_spec(run: &LiveRun, component: &ComponentPlan, env_file: PathBuf) -> ContainerSpec {
    let mut labels = run.labels.clone();
    labels.insert(labels::COMPONENT.to_string(), component.id.clone());
    // Lets `flowctl status` find this run's control plane.
    labels.insert(
        labels::CONTROL_PLANE.to_string(),
        run.control.status_address.to_string(),
    );
    ContainerSpec {
        name: component.container_name.clone(),
        image: component.image.clone(),
        network: run.plan.network.clone(),
        // Replicas also share their file id (the engine's DNS spreads connections over them).
        aliases: component
            .replica_of
            .iter()
            .chain([&component.id])
            .cloned()
            .collect(),
        labels,
        env_file: Some(env_file),
        publish: component
            .ports
            .iter()
            .map(|p| PortPublish {
                host_ip: run.location.publish_ip().to_string(),
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.as_str(),
            })
            .collect(),
        mounts: component
            .volumes
            .iter()
            .map(|v| (&v.host_path, &v.container_path, v.readonly))
            // Secret files: always read-only.
            .chain(component.secrets.iter().filter_map(|s| match &s.target {
                SecretTarget::File(path) => Some((&s.host_path, path, true)),
                SecretTarget::Env(_) => None,
            }))
            .map(|(host_path, container_path, readonly)| Mount {
                // Checked by preflight: every path is visible to the engine.
                host_path: run
                    .location
                    .engine_path(host_path)
                    .unwrap_or_else(|_| host_path.clone()),
                container_path: container_path.clone(),
                readonly,
            })
            .collect(),
        entrypoint: component.entrypoint.clone(),
        args: component.args.clone(),
        stop_timeout: component.stop_grace,
        limits: ResourceLimits {
            cpus: component.resources.cpu_limit.as_ref().map(|c| c.cores()),
            memory_bytes: component.resources.memory_limit.as_ref().map(|m| m.bytes),
            memory_reservation_bytes: component.resources.memory_request.as_ref().map(|m| m.bytes),
        },
    }
}

/// Creates `component`'s container, not started. Its env reaches the engine in a private file
/// that is deleted as soon as the container exists.
fn create_container(run: &LiveRun, component: &ComponentPlan) -> Result<()> {
    let id = &component.id;
    let mut env = run.container_env(component);
    // Secret contents are read only now, straight into the private env file.
    for secret in &component.secrets {
        if let SecretTarget::Env(var) = &secret.target {
            let value = secret
                .read_env_value()
                .map_err(|e| anyhow::anyhow!("component `{id}`: {e}"))?;
            env.insert(var.clone(), value);
        }
    }
    let env_file = EnvFile::write(run.env_dir, run.run_id, id, &env)?;
    let spec = container_spec(run, component, env_file.path.clone());
    run.engine
        .create_container(&spec)
        .with_context(|| format!("component `{id}`: cannot create its container"))?;
    Ok(())
}

/// Runs one component's container (or, in a file mixing both, its process) and waits until
/// it is ready; a container that exits non-zero meanwhile is replaced as its `restart` policy
/// allows.
pub fn start_component(run: &LiveRun, component: &ComponentPlan) -> Result<(), Halt> {
    if component.process.is_some() {
        let processes = run
            .processes()
            .ok_or_else(|| anyhow!("component `{}` is a process", component.id))?;
        return processes.start_component(component);
    }
    loop {
        let attempt = run.events.snapshot().attempt_of(&component.id);
        match start_container(run, component, attempt) {
            Err(Halt::Exited(exited)) if may_restart(run, component) => {
                restart(run, component, &exited)?;
            }
            other => return other,
        }
    }
}

/// Whether `component`'s policy allows another restart in this run.
pub fn may_restart(run: &LiveRun, component: &ComponentPlan) -> bool {
    restart_allowed(run.events, component)
}

/// Says why and which restart this is, removes the stopped container and moves the
/// component's events to the next attempt; the caller starts the new container.
pub fn restart(run: &LiveRun, component: &ComponentPlan, exited: &ExitError) -> Result<(), Halt> {
    let id = &component.id;
    announce_restart(run.events, run.console, component, exited)?;
    // Relay the rest of what the old container wrote before it is removed.
    run.logs.wait_drained(id, Duration::from_secs(2));
    run.engine
        .remove_containers(std::slice::from_ref(&component.container_name))
        .with_context(|| format!("component `{id}`: cannot remove its stopped container"))?;
    run.events.restarting(id);
    Ok(())
}

/// Runs container number `attempt` of `component` and waits until it is ready.
fn start_container(run: &LiveRun, component: &ComponentPlan, attempt: u32) -> Result<(), Halt> {
    run.check_interrupted()?;
    let id = &component.id;
    let started = Instant::now();
    if attempt > 0 {
        // The failed container was removed; its replacement is created like the first.
        create_container(run, component)?;
    }
    let keys: Vec<String> = run.container_env(component).into_keys().collect();
    run.console.info(format!(
        "starting {id} ({}) env: {}",
        component.image,
        keys.join(", ")
    ));
    run.record.lock().component(id).started_at = Some(SystemTime::now());
    let index = run
        .plan
        .components
        .iter()
        .position(|c| c.id == *id)
        .unwrap_or(0);
    // Attached before it starts: no line it writes is lost, however soon it exits.
    let info = run
        .logs
        .start_attached(run.engine, id, index, &component.container_name)
        .with_context(|| format!("component `{id}`: cannot start its container"))?;

    // The ports first: the watcher below is one more CLI process starting, which would slow
    // a lookup on a small machine.
    let ports = port_access(run, component, &info);
    watch_exit(run, component, attempt)?;
    let ports = match ports {
        Ok(ports) => ports,
        // A container that already exited has no published ports or address: report its exit.
        Err(why) => match exited_early(run, component) {
            Some(Ok(())) => {
                run.console.info(format!(
                    "{id} finished its work (exit code 0) during start-up"
                ));
                return Ok(());
            }
            Some(Err(exit)) => return Err(Halt::Exited(exit)),
            None => return Err(anyhow!("component `{id}`: {why}").into()),
        },
    };
    run.reachable
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(id.clone(), ports.clone());

    let probe = component.health.as_ref().and_then(|health| {
        ports
            .iter()
            .find(|port| port.container_port == health.container_port)
            .map(|port| HealthProbe::for_plan(port.address, health))
    });
    let check = ReadinessCheck {
        component,
        probe: probe.as_ref(),
        control: run.control,
    };
    let finished = wait_ready(run, &check)? == Readiness::Finished;
    if !finished {
        run.record.lock().component(id).ready_at = Some(SystemTime::now());
        run.events.became_ready(id, attempt);
    }

    let ports = ports
        .iter()
        .map(|port| {
            let at = port.published.unwrap_or(port.address);
            format!("{}→{at}", port.container_port)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let how = match (probe.is_some(), component.register) {
        _ if finished => "finished its work (exit code 0) during start-up",
        (true, true) => "healthy and registered",
        (true, false) => "healthy",
        (false, true) => "running and registered",
        (false, false) => "running",
    };
    run.console.info(format!(
        "{id} {how} in {} ms{}",
        elapsed_ms(started),
        if ports.is_empty() {
            String::new()
        } else {
            format!(" (ports {ports})")
        }
    ));
    Ok(())
}

/// How flowctl reaches each port of `component`'s running container (`info`: the engine's
/// inspect that saw it start): through the port the engine published on its host, or, when
/// flowctl is on the pipeline network, at the container's own address there. The error says
/// what could not be read.
fn port_access(
    run: &LiveRun,
    component: &ComponentPlan,
    info: &ContainerInfo,
) -> Result<Vec<PortAccess>, String> {
    if component.ports.is_empty() {
        return Ok(Vec::new());
    }
    // Every port is published (container_spec); the inspect that saw it start has their
    // bindings, unless it already exited, which `port` then reports.
    let mut published = info.published_ports();
    if component.ports.iter().any(|port| {
        !published.contains_key(&(port.container_port, port.protocol.as_str().to_string()))
    }) {
        published = run
            .engine
            .published_ports(&component.container_name)
            .map_err(|e| format!("cannot read its published ports: {e}"))?;
    }
    let address_on_network = || {
        info.networks
            .get(&run.plan.network)
            .and_then(|ip| ip.parse().ok())
    };
    let network_ip: Option<IpAddr> = if run.location.on_pipeline_network() {
        let ip = address_on_network()
            .ok_or_else(|| format!("it has no address on network {}", run.plan.network))?;
        Some(ip)
    } else if component.is_relayed() && matches!(run.location, Location::Host) {
        // Best effort: without it the relay dials the published port.
        address_on_network()
    } else {
        None
    };
    // Dialled first by the relay; when flowctl is on the network, `address` is that already.
    let dial_network_first = !run.location.on_pipeline_network();
    let publish_ip = run.location.publish_ip();
    let mut access = Vec::new();
    for port in &component.ports {
        let host_port = published
            .get(&(port.container_port, port.protocol.as_str().to_string()))
            .copied();
        let published = host_port.map(|p| SocketAddr::new(publish_ip, p));
        let address = match (network_ip, published) {
            (Some(ip), _) => SocketAddr::new(ip, port.container_port),
            (None, Some(published)) => published,
            (None, None) => {
                return Err(format!(
                    "cannot read the host port of {}/{}: the engine lists no binding for it",
                    port.container_port, port.protocol
                ))
            }
        };
        access.push(PortAccess {
            container_port: port.container_port,
            published,
            address,
            network: network_ip
                .filter(|_| dial_network_first)
                .map(|ip| SocketAddr::new(ip, port.container_port)),
        });
    }
    Ok(access)
}

/// Watches for the container's exit from now on, so a crash during start-up is seen at once
/// (one that happened already is reported at once, too).
fn watch_exit(run: &LiveRun, component: &ComponentPlan, attempt: u32) -> Result<()> {
    let engine = run.engine.clone();
    let events = run.events.clone();
    let container = component.container_name.clone();
    let id = component.id.clone();
    thread::Builder::new()
        .name(format!("wait-{id}"))
        .spawn(move || {
            let (code, error) = match engine.wait(&container) {
                Ok(code) => (Some(code), None),
                Err(e) => (None, Some(e.to_string())),
            };
            events.exited(Exit {
                component: id,
                attempt,
                code,
                error,
                at: SystemTime::now(),
            });
        })
        .with_context(|| format!("component `{}`: cannot watch its container", component.id))?;
    Ok(())
}

/// When a component counts as started: its HTTP health check passes (if it has one) and, if
/// it says `register: true`, it has registered with the control plane.
struct ReadinessCheck<'a> {
    component: &'a ComponentPlan,
    /// `None`: no HTTP health check, ready once running.
    probe: Option<&'a HealthProbe>,
    control: &'a RunControlPlane,
}

impl ReadinessCheck<'_> {
    /// `Ok` when ready; otherwise why not (shown if the timeout passes).
    fn check(&self) -> Result<(), String> {
        if let Some(probe) = self.probe {
            probe.check()?;
        }
        if self.component.register && !self.control.server.is_registered(&self.component.id) {
            return Err(format!(
                "it has not registered with the control plane at {} (register: true; \
                 does it read FLOWCTL_ENDPOINT and ENABLE_FLOWCTL?)",
                self.control.endpoint
            ));
        }
        Ok(())
    }
}

/// `None` while `component`'s container runs; once it has stopped, `Ok` for exit code 0 (a
/// bounded component already done) or its exit error.
fn exited_early(run: &LiveRun, component: &ComponentPlan) -> Option<Result<(), ExitError>> {
    let info = run
        .engine
        .inspect_container(&component.container_name)
        .ok()
        .flatten()?;
    if info.state.running {
        return None;
    }
    let exit = Exit {
        component: component.id.clone(),
        attempt: run.events.snapshot().attempt_of(&component.id),
        code: Some(info.state.exit_code),
        error: None,
        at: SystemTime::now(),
    };
    Some(if exit.code == Some(0) {
        Ok(())
    } else {
        Err(exit_error(
            run.engine,
            run.logs,
            component,
            &exit,
            "while starting",
        ))
    })
}

/// How a component's start-up ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    /// It exited 0 before it was seen ready: a bounded component that was quicker than the
    /// first probe. Not a failure; supervision records it as finished.
    Finished,
}

/// Polls readiness with back-off until ready, the component's timeout, its container's exit or
/// a signal, whichever comes first. Waiting happens on the run's events, so an exit or a
/// signal ends the wait at once.
fn wait_ready(run: &LiveRun, check: &ReadinessCheck) -> Result<Readiness, Halt> {
    let component = check.component;
    let id = &component.id;
    let deadline = Instant::now() + component.health_timeout;
    let mut backoff = Backoff::default();
    loop {
        let state = run.events.snapshot();
        if state.interrupts > 0 {
            return Err(Halt::Interrupted);
        }
        if let Some(exit) = state.exit_of(id) {
            if exit.code == Some(0) {
                return Ok(Readiness::Finished);
            }
            return Err(Halt::Exited(exit_error(
                run.engine,
                run.logs,
                component,
                exit,
                "while starting",
            )));
        }
        let why_not = match check.check() {
            Ok(()) => return Ok(Readiness::Ready),
            Err(why) => why,
        };
        let now = Instant::now();
        if now >= deadline {
            let logs = run
                .engine
                .logs_tail(&component.container_name, FAILURE_LOG_LINES)
                .unwrap_or_default();
            return Err(anyhow!(
                "component `{id}` was not ready after {} s: {why_not}\nlast log lines:\n{}",
                component.health_timeout.as_secs_f32(),
                last_lines(&logs, FAILURE_LOG_LINES, id)
            )
            .into());
        }
        let wait = backoff.next_wait().min(deadline - now);
        run.events.wait_change(state.version, wait);
    }
}
