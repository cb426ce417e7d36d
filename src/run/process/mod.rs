//! `flowctl run` of a `spec.driver: process` file: its components are processes of this
//! machine, as upstream's flowctl runs them, with what a container gets. The lifecycle, on one
//! screen in [`run`]: [`check`] before anything starts (executables, ports); the record, the
//! reaper and the control plane on 127.0.0.1 ([`ProcessRun::start`]); the levels started in
//! order, each process ready (healthy, and registered when it says `register: true`) before
//! what reads from it starts ([`ProcessRun::bring_up`]); the flowctl.v1 relay between them;
//! supervision until the sinks are done, a signal or a failure ([`ProcessRun::supervise`]);
//! and one teardown on every exit path, also while unwinding ([`ProcessRun::end`]).

mod check;
mod children;

pub(super) use check::check;
pub(super) use children::Children;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};

use super::lifecycle::{announce_restart, in_parallel, restart_allowed, wait_for_end, Replace};
use super::network::{self, RunControlPlane};
use super::notices::{Notices, Pids, StatusView};
use super::reach::{PortAccess, Reachable};
use super::record::Recorder;
use super::teardown::{
    check_interrupted, ActiveRun, Attached, ExitError, Forced, Halt, RunOutcome, SignalPolicy,
    FAILURE_LOG_LINES,
};
use super::{record_end, relay, start_relay, warn_silent_processors, RunOptions, LOG_DRAIN_LIMIT};
use crate::contract::INJECTED_ENV;
use crate::events::{Exit, RunEvents};
use crate::health::{Backoff, HealthProbe};
use crate::logs::{elapsed_ms, last_lines, Console, LogMux};
use crate::plan::{ComponentPlan, RunPlan, SecretTarget};
use crate::processes::Reservations;

/// Runs the process pipeline `plan` until it completes, is interrupted or fails; every process
/// it started is stopped before this returns (or, on a panic, while unwinding).
pub fn run(
    options: &RunOptions,
    signals: &SignalPolicy,
    recorder: &Recorder,
    mut plan: RunPlan,
) -> Result<RunOutcome, Halt> {
    let console = Console {
        color: options.color,
    };
    for note in &plan.notes {
        console.info(note);
    }
    let ports = check::check(&mut plan, &options.pipeline, options.control_plane_port)?;
    let events = Arc::new(RunEvents::default());
    let run_id = super::new_run_id();
    let attached = signals.attach(ActiveRun {
        events: events.clone(),
        run_id: run_id.clone(),
        console,
        forced: Forced::Processes,
    });
    record_plan(recorder, &plan, &run_id);
    let mut run = ProcessRun::start(options, recorder, plan, run_id, events, ports, attached)?;
    let result = run.bring_up().and_then(|()| run.supervise());
    run.teardown(result)
}

/// What the summary says of the run before anything starts.
fn record_plan(recorder: &Recorder, plan: &RunPlan, run_id: &str) {
    let mut record = recorder.lock();
    record.pipeline = plan.pipeline.clone();
    record.project = plan.project.clone();
    record.run_id = run_id.to_string();
    record.engine_kind = "process".to_string();
    record.location = "host processes".to_string();
    for component in &plan.components {
        let entry = record.component(&component.id);
        entry.role = component.role.as_str().to_string();
        entry.command = component
            .process
            .as_ref()
            .map(|p| p.program.display().to_string());
    }
}

/// A process run that exists: what it made, as fields in the order teardown ends them.
pub struct ProcessRun<'a> {
    /// The relay's calls end before their components are stopped.
    relay: Option<relay::Relay>,
    notices: Notices,
    /// The processes (stopped in reverse start order) and the record; dismisses the reaper.
    children: Children,
    /// Served until the last process is gone.
    control: RunControlPlane,
    /// Relays the processes' output until their pipes close.
    logs: LogMux,
    /// The ports given to the processes, held until they are stopped.
    _reservations: Reservations,
    options: &'a RunOptions,
    recorder: &'a Recorder,
    console: Console,
    plan: RunPlan,
    events: Arc<RunEvents>,
    reachable: Arc<Reachable>,
    relay_counts: Arc<relay::EdgeCounts>,
    pids: Arc<Pids>,
    started: Instant,
    ended: bool,
    _signals: Attached<'a>,
}

impl<'a> ProcessRun<'a> {
    /// The log relay, the record and the reaper, then the control plane on 127.0.0.1 (on
    /// the port `check` chose; the ports it reserved are held until the run ends).
    fn start(
        options: &'a RunOptions,
        recorder: &'a Recorder,
        plan: RunPlan,
        run_id: String,
        events: Arc<RunEvents>,
        (control_port, reservations): (u16, Reservations),
        signals: Attached<'a>,
    ) -> Result<ProcessRun<'a>, Halt> {
        let console = Console {
            color: options.color,
        };
        let ids: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
        let logs = LogMux::new(&ids, options.color, options.logs_dir.clone());
        logs.prepare_dir(&ids)
            .context("--logs-dir: cannot write the components' log files")?;
        let children = Children::new(&run_id, &plan, console)?;
        let started = Instant::now();
        let control = network::start_control_plane(
            &plan,
            "127.0.0.1",
            control_port,
            options.heartbeat_interval,
        )?;
        console.info(format!(
            "control plane listening on {} (heartbeat interval {})",
            control.endpoint,
            crate::duration::format(options.heartbeat_interval)
        ));
        children.set_control_plane(control.status_address.to_string())?;
        let reachable = Arc::new(Mutex::new(BTreeMap::new()));
        let relay_counts = Arc::new(relay::EdgeCounts::default());
        let pids = Arc::new(Pids::default());
        let notices = Notices::start(
            StatusView {
                plan: plan.clone(),
                events: events.clone(),
                control: control.server.clone(),
                reachable: reachable.clone(),
                relay: relay_counts.clone(),
                width: options.table_width,
                pids: pids.clone(),
            },
            console,
            options.status_interval,
        );
        Ok(ProcessRun {
            relay: None,
            notices,
            children,
            control,
            logs,
            _reservations: reservations,
            options,
            recorder,
            console,
            plan,
            events,
            reachable,
            relay_counts,
            pids,
            started,
            ended: false,
            _signals: signals,
        })
    }

    /// What starts and replaces the run's processes.
    fn processes(&self) -> Processes<'_> {
        Processes {
            children: &self.children,
            plan: &self.plan,
            events: &self.events,
            logs: &self.logs,
            control: &self.control,
            heartbeat_interval: self.options.heartbeat_interval,
            reachable: &self.reachable,
            pids: &self.pids,
            recorder: self.recorder,
            console: self.console,
        }
    }

    /// Starts the levels in order (each level's processes in parallel, each ready before the
    /// next level starts), then the relay between them.
    fn bring_up(&mut self) -> Result<(), Halt> {
        {
            let processes = self.processes();
            for component in &self.plan.components {
                processes.warn_injected(component);
            }
            for level in self.plan.levels() {
                in_parallel(&self.events, &level, |component| {
                    processes.start_component(component)
                })?;
                check_interrupted(&self.events)?;
            }
        }
        self.console.info(format!(
            "pipeline {} is up: {} process(es) in {} ms (Ctrl+C to stop)",
            self.plan.pipeline,
            self.plan.components.len(),
            elapsed_ms(self.started)
        ));
        self.notices.print_status();
        self.relay = start_relay(
            &self.plan,
            &self.reachable,
            &self.events,
            self.console,
            &self.relay_counts,
        )?;
        Ok(())
    }

    /// Waits until the sinks complete, a signal arrives or something fails beyond what its
    /// restart policy allows.
    fn supervise(&mut self) -> Result<RunOutcome, Halt> {
        wait_for_end(&self.plan, &self.events, self.console, &self.processes())
    }

    /// Ends the run and passes `result` on.
    fn teardown(mut self, result: Result<RunOutcome, Halt>) -> Result<RunOutcome, Halt> {
        if matches!(result, Ok(RunOutcome::Completed)) {
            self.children.completed();
        }
        self.end();
        result
    }

    /// Every exit's one sequence, once: the relay, the notices, the summary's end, the
    /// processes, then their output to its end (once a process group is gone its pipes are
    /// closed, so this waits for no more than what they wrote; before, a child left behind by
    /// an exited process could hold them open); the control plane goes with the fields after.
    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        drop(self.relay.take());
        self.notices.stop();
        warn_silent_processors(&self.plan, &self.relay_counts, self.console, self.recorder);
        record_end(&self.plan, &self.events, &self.control, self.recorder);
        self.children.teardown();
        for component in &self.plan.components {
            self.logs.wait_drained(&component.id, LOG_DRAIN_LIMIT);
        }
        self.logs.finish(Duration::from_secs(2));
    }
}

/// What starting and replacing processes needs, borrowed from the run that owns them: a
/// process run, or a container run whose file has process components too.
pub struct Processes<'r> {
    pub children: &'r Children,
    pub plan: &'r RunPlan,
    pub events: &'r Arc<RunEvents>,
    pub logs: &'r LogMux,
    pub control: &'r RunControlPlane,
    pub heartbeat_interval: Duration,
    /// Where each started process's ports are reached (127.0.0.1).
    pub reachable: &'r Arc<Reachable>,
    /// Each process's pid, for the status table.
    pub pids: &'r Arc<Pids>,
    pub recorder: &'r Recorder,
    pub console: Console,
}

impl Processes<'_> {
    /// Warns when the file sets, differently, a variable flowctl injects into `component`.
    pub fn warn_injected(&self, component: &ComponentPlan) {
        for key in INJECTED_ENV {
            let ours = self.env_of(component).get(*key).cloned();
            if component
                .env
                .get(*key)
                .is_some_and(|theirs| Some(theirs) != ours.as_ref())
            {
                self.console.warn(format!(
                    "component `{}`: env {key} is set by flowctl; the file's value is ignored",
                    component.id
                ));
            }
        }
    }

    /// What `component`'s process gets on top of flowctl's own environment: the file's env,
    /// its secrets, and what flowctl injects (which wins).
    fn env_of(&self, component: &ComponentPlan) -> BTreeMap<String, String> {
        self.control
            .component_env(component, self.heartbeat_interval)
    }

    /// Starts `component` (restarting it as its policy allows while it fails to start).
    pub fn start_component(&self, component: &ComponentPlan) -> Result<(), Halt> {
        loop {
            match self.start_attempt(component) {
                Err(Halt::Exited(exited)) if self.may_restart(component) => {
                    self.restart(component, &exited)?;
                }
                other => return other,
            }
        }
    }

    fn may_restart(&self, component: &ComponentPlan) -> bool {
        restart_allowed(self.events, component)
    }

    /// Says why, lets the old process's last lines through and moves to the next attempt.
    fn restart(&self, component: &ComponentPlan, exited: &ExitError) -> Result<(), Halt> {
        announce_restart(self.events, self.console, component, exited)?;
        self.logs
            .wait_drained(&component.id, Duration::from_secs(2));
        self.events.restarting(&component.id);
        Ok(())
    }

    /// Starts one process of `component` and waits until it is ready.
    fn start_attempt(&self, component: &ComponentPlan) -> Result<(), Halt> {
        check_interrupted(self.events)?;
        let id = &component.id;
        let attempt = self.events.snapshot().attempt_of(id);
        let started = Instant::now();
        let mut env = self.env_of(component);
        for secret in &component.secrets {
            if let SecretTarget::Env(var) = &secret.target {
                let value = secret
                    .read_env_value()
                    .map_err(|e| anyhow!("component `{id}`: {e}"))?;
                env.insert(var.clone(), value);
            }
        }
        let program = component
            .process
            .as_ref()
            .map(|p| p.program.display().to_string())
            .unwrap_or_default();
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        self.console.info(format!(
            "starting {id} ({program}) env: {}",
            keys.join(", ")
        ));
        let index = self
            .plan
            .components
            .iter()
            .position(|c| c.id == *id)
            .unwrap_or(0);
        self.recorder.lock().component(id).started_at = Some(SystemTime::now());
        let pid = self
            .children
            .spawn(component, &env, attempt, index, self.logs, self.events)?;
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), pid);
        self.recorder.lock().component(id).pids.push(pid);
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ports: Vec<PortAccess> = component
            .ports
            .iter()
            .map(|port| {
                let address = SocketAddr::new(loopback, port.container_port);
                PortAccess {
                    container_port: port.container_port,
                    published: Some(address),
                    address,
                    network: None,
                }
            })
            .collect();
        self.reachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), ports);
        let probe = component.health.as_ref().map(|health| {
            HealthProbe::for_plan(SocketAddr::new(loopback, health.container_port), health)
        });
        let finished = self.wait_ready(component, probe.as_ref())?;
        if !finished {
            self.recorder.lock().component(id).ready_at = Some(SystemTime::now());
            self.events.became_ready(id, attempt);
        }
        let how = match (finished, probe.is_some(), component.register) {
            (true, _, _) => "finished its work (exit code 0) during start-up",
            (false, true, true) => "healthy and registered",
            (false, true, false) => "healthy",
            (false, false, true) => "running and registered",
            (false, false, false) => "running",
        };
        let ports: Vec<String> = component
            .ports
            .iter()
            .map(|p| format!("{}", p.container_port))
            .collect();
        self.console.info(format!(
            "{id} (pid {pid}) {how} in {} ms{}",
            elapsed_ms(started),
            if ports.is_empty() {
                String::new()
            } else {
                format!(" (ports {})", ports.join(", "))
            }
        ));
        Ok(())
    }

    /// Polls readiness with back-off until ready (`Ok(false)`), exited 0 first (`Ok(true)`),
    /// the component's timeout, its exit or a signal.
    fn wait_ready(
        &self,
        component: &ComponentPlan,
        probe: Option<&HealthProbe>,
    ) -> Result<bool, Halt> {
        let id = &component.id;
        let deadline = Instant::now() + component.health_timeout;
        let mut backoff = Backoff::default();
        loop {
            let state = self.events.snapshot();
            if state.interrupts > 0 {
                return Err(Halt::Interrupted);
            }
            if let Some(exit) = state.exit_of(id) {
                if exit.code == Some(0) {
                    return Ok(true);
                }
                return Err(Halt::Exited(self.exit_error(
                    component,
                    exit,
                    "while starting",
                )));
            }
            let why_not = match probe.map_or(Ok(()), HealthProbe::check) {
                Err(why) => why,
                Ok(()) if component.register && !self.control.server.is_registered(id) => {
                    format!(
                        "it has not registered with the control plane at {} (register: true; \
                         does it read FLOWCTL_ENDPOINT and ENABLE_FLOWCTL?)",
                        self.control
                            .process_endpoint
                            .as_ref()
                            .unwrap_or(&self.control.endpoint)
                    )
                }
                Ok(()) => return Ok(false),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(anyhow!(
                    "component `{id}` was not ready after {} s: {why_not}\nlast log lines:\n{}",
                    component.health_timeout.as_secs_f32(),
                    last_lines(&self.logs.recent(id), FAILURE_LOG_LINES, id)
                )
                .into());
            }
            let wait = backoff.next_wait().min(deadline - now);
            self.events.wait_change(state.version, wait);
        }
    }

    /// The error for a process that stopped: its exit code (or signal) and last lines.
    fn exit_error(&self, component: &ComponentPlan, exit: &Exit, when: &'static str) -> ExitError {
        let id = &component.id;
        let what = match (&exit.error, exit.code) {
            (Some(error), _) => error.clone(),
            (None, Some(code)) => format!("exited with code {code}"),
            (None, None) => "stopped".to_string(),
        };
        self.logs.wait_drained(id, Duration::from_secs(2));
        ExitError::new(id, what, when, self.logs.recent(id))
    }
}

impl Replace for Processes<'_> {
    fn exit_error(&self, component: &ComponentPlan, exit: &Exit) -> ExitError {
        self.exit_error(component, exit, "while running")
    }
    fn may_restart(&self, component: &ComponentPlan) -> bool {
        self.may_restart(component)
    }
    fn restart(&self, component: &ComponentPlan, error: &ExitError) -> Result<(), Halt> {
        self.restart(component, error)
    }
    fn start(&self, component: &ComponentPlan) -> Result<(), Halt> {
        self.start_component(component)
    }
}

impl Drop for ProcessRun<'_> {
    fn drop(&mut self) {
        self.end();
    }
}
