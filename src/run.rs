//! `flowctl run`: check everything, create the network, start the components level by level
//! (each level in parallel, each component ready before anything that reads from it starts),
//! supervise, and always tear down through [`cleanup::remove_run`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::cleanup::{self, StopGroup, StopOrder};
use crate::control_plane::{ComponentRole, ControlPlane, ControlPlaneConfig, ExpectedComponent};
use crate::engine::{ContainerInfo, ContainerSpec, Engine, EngineError, PortPublish};
use crate::events::{EventState, Exit, RunEvents};
use crate::health::{Backoff, HealthProbe};
use crate::labels;
use crate::logs::{elapsed_ms, last_lines, Console, LogMux};
use crate::owner::{Liveness, RunOwner};
use crate::plan::{self, ComponentPlan, Naming, Role, RunPlan};
use crate::reaper::Reaper;
use crate::spec::format_duration;
use crate::status::{self, HostPorts, Notices, StatusView};
use crate::verify;

/// How long teardown waits for an exited component's log stream to be relayed completely.
const LOG_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Published ports bind here only (issue 6: nothing reachable from other hosts by default).
pub const PUBLISH_HOST_IP: &str = "127.0.0.1";
/// Log lines shown with a failure.
const FAILURE_LOG_LINES: usize = 20;
/// Test-only: makes flowctl panic at a named point to prove the panic path cleans up.
pub const TEST_PANIC_ENV: &str = "FLOWCTL_TEST_PANIC";
/// Environment variables flowctl sets in every container, overriding the file.
pub const INJECTED_ENV: &[&str] = &[
    "ENABLE_FLOWCTL",
    "FLOWCTL_ENDPOINT",
    "FLOWCTL_HEARTBEAT_INTERVAL",
    "FLOWCTL_COMPONENT_ID",
];

/// Settings of one `flowctl run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pipeline: PathBuf,
    pub naming: Naming,
    pub docker_bin: PathBuf,
    /// Colour in log prefixes and progress lines.
    pub color: bool,
    /// Control plane port on the network gateway; 0 picks a free one.
    pub control_plane_port: u16,
    /// `FLOWCTL_HEARTBEAT_INTERVAL` given to components.
    pub heartbeat_interval: Duration,
    /// Print the status table this often while running (it is always printed once all is
    /// up, and on SIGUSR1).
    pub status_interval: Option<Duration>,
    /// Verify the declared gRPC streams after start-up (`--no-verify` turns it off).
    pub verify: bool,
    /// How long verification waits for a stream's first message.
    pub verify_timeout: Duration,
}

/// How a run ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every sink exited 0.
    Completed,
    /// Stopped by SIGINT, SIGTERM or SIGHUP.
    Interrupted,
}

/// Runs a pipeline until it completes, is interrupted or fails; everything it created is
/// removed before this returns (or, on a panic, while unwinding).
pub fn run(options: &RunOptions) -> Result<RunOutcome> {
    let console = Console {
        color: options.color,
    };
    let plan = plan::load(&options.pipeline, &options.naming)?;
    let mut engine = Engine::new(&options.docker_bin);
    let events = Arc::new(RunEvents::default());
    let run_id = new_run_id();
    // Before anything exists, so no signal can leave something behind.
    install_signal_handler(&events, &engine, &run_id, console)?;

    preflight(&mut engine, &plan)?;
    if events.snapshot().interrupts > 0 {
        return Ok(RunOutcome::Interrupted);
    }

    // Removes the run if flowctl is killed before it can (see reaper.rs).
    let reaper = match Reaper::spawn(&options.docker_bin, &run_id) {
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
    };
    let owner = RunOwner::current();
    let labels = labels::run_labels(&plan.pipeline, plan.project.as_deref(), &run_id, &owner);
    // Registered before the first create, like cross's container deleter: dropping it (also
    // while unwinding from a panic) removes whatever exists by then.
    let mut guard = CleanupGuard {
        engine: engine.clone(),
        run_id: run_id.clone(),
        order: stop_order(&plan),
        console,
        done: false,
        reaper,
    };

    let started = Instant::now();
    engine
        .create_network(&plan.network, &labels)
        .with_context(|| format!("cannot create the network {}", plan.network))?;
    let gateway = engine
        .network_gateway(&plan.network)
        .with_context(|| format!("cannot read the gateway of network {}", plan.network))?;
    console.info(format!(
        "network {} created (gateway {gateway}) in {} ms",
        plan.network,
        elapsed_ms(started)
    ));

    let control = start_control_plane(&plan, &gateway, options)?;
    console.info(format!(
        "control plane listening on {} (heartbeat interval {})",
        control.endpoint,
        format_duration(options.heartbeat_interval)
    ));
    let host_ports = Arc::new(Mutex::new(BTreeMap::new()));
    let status_view = StatusView {
        plan: plan.clone(),
        events: events.clone(),
        control: control.server.clone(),
        host_ports: host_ports.clone(),
    };
    let notices = Notices::start(status_view, console, options.status_interval);

    let ids: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
    let logs = LogMux::new(&ids, options.color);
    let context = StartContext {
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

    let result = create_all(&context)
        .and_then(|()| start_all(&context, started))
        .and_then(|()| {
            if std::env::var(TEST_PANIC_ENV).as_deref() == Ok("after-start") {
                panic!("{TEST_PANIC_ENV}=after-start: injected panic (test only)");
            }
            notices.print_status();
            if options.verify {
                verify_streams(&context, options.verify_timeout)?;
            }
            supervise(&context)
        });

    // Components stop heartbeating while they are stopped: that is no news.
    notices.stop();
    // Relay all that an exited component wrote before its container, and so its log, is
    // removed: `logs --follow` of a fast writer lags behind, and a sink's last lines are its
    // results.
    // Only current containers: a restarted component's new container may still be running.
    let state = events.snapshot();
    for component in &plan.components {
        if state.exit_of(&component.id).is_some() {
            logs.wait_drained(&component.id, LOG_DRAIN_LIMIT);
        }
    }
    guard.teardown();
    logs.finish(Duration::from_secs(2));
    match result {
        Err(e) if is_interrupted(&e) => Ok(RunOutcome::Interrupted),
        other => other,
    }
}

/// Removes the run on drop unless [`CleanupGuard::teardown`] already did.
struct CleanupGuard {
    engine: Engine,
    run_id: String,
    order: StopOrder,
    console: Console,
    done: bool,
    /// Dismissed once teardown removed everything; otherwise it sweeps when dropped.
    reaper: Option<Reaper>,
}

impl CleanupGuard {
    fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let started = Instant::now();
        self.console.info("stopping and removing containers...");
        let removal = cleanup::remove_run(&self.engine, &self.run_id, &self.order);
        if removal.is_complete() {
            if let Some(reaper) = self.reaper.take() {
                reaper.dismiss();
            }
            self.console.info(format!(
                "removed {} container(s) and {} network(s) in {} ms",
                removal.containers.len(),
                removal.networks.len(),
                elapsed_ms(started)
            ));
        } else {
            for error in &removal.errors {
                self.console.warn(format!("cleanup: {error}"));
            }
            self.console.warn(format!(
                "some resources of run {} may be left; `flowctl gc` removes them",
                self.run_id
            ));
        }
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Reverse start order, one group per depth level: sinks stop before what feeds them.
fn stop_order(plan: &RunPlan) -> StopOrder {
    StopOrder {
        groups: plan
            .levels()
            .into_iter()
            .rev()
            .map(|level| StopGroup {
                containers: level.iter().map(|c| c.container_name.clone()).collect(),
                grace: level
                    .iter()
                    .map(|c| c.stop_grace)
                    .max()
                    .unwrap_or(plan::DEFAULT_STOP_GRACE),
            })
            .collect(),
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

/// SIGINT, SIGTERM and SIGHUP: the first stops gracefully, the second forces removal, a third
/// exits at once. Child processes run in their own process groups, so a terminal's Ctrl+C
/// reaches only flowctl, which stays in charge of cleanup.
fn install_signal_handler(
    events: &Arc<RunEvents>,
    engine: &Engine,
    run_id: &str,
    console: Console,
) -> Result<()> {
    let events = events.clone();
    let engine = engine.clone();
    let run_id = run_id.to_string();
    ctrlc::set_handler(move || match events.interrupt() {
        1 => console.info("stopping (press Ctrl+C again to force)"),
        2 => {
            console.info("forcing: removing every container of this run now");
            let removal = cleanup::remove_run(&engine, &run_id, &StopOrder::default());
            for error in removal.errors {
                console.warn(format!("cleanup: {error}"));
            }
        }
        _ => std::process::exit(130),
    })
    .context("cannot install the signal handler")
}

/// Everything that can be checked before creating anything. The engine is asked about every
/// image and name at once, one CLI call each on threads of their own.
fn preflight(engine: &mut Engine, plan: &RunPlan) -> Result<()> {
    let images: BTreeSet<&str> = plan.components.iter().map(|c| c.image.as_str()).collect();
    let shared = &*engine;
    let (version, present, taken, network) = thread::scope(|scope| {
        let engine = shared;
        let version = scope.spawn(|| engine.version());
        let images: Vec<_> = images
            .into_iter()
            .map(|image| (image, scope.spawn(move || engine.image_exists(image))))
            .collect();
        let names: Vec<_> = plan
            .components
            .iter()
            .map(|c| scope.spawn(move || engine.inspect_container(&c.container_name)))
            .collect();
        let network = scope.spawn(|| engine.inspect_network(&plan.network));
        let present = images
            .into_iter()
            .map(|(image, check)| Ok((image, joined(check)?)))
            .collect::<Result<BTreeMap<&str, bool>>>();
        let taken = names
            .into_iter()
            .map(joined)
            .collect::<Result<Vec<Option<ContainerInfo>>>>();
        let network = joined(network);
        (joined(version), present, taken, network)
    });
    // An unavailable engine explains every other failure: say only that.
    let version = version.context("the container engine is not available")?;
    engine.adopt(&version);
    let (present, taken, network) = (present?, taken?, network?);
    let engine = &*engine;
    let mut problems = Vec::new();

    for component in &plan.components {
        if !present[component.image.as_str()] {
            let hint =
                if component.image.starts_with("flowctl/") && component.image.ends_with(":dev") {
                    "build it with scripts/build-images.sh".to_string()
                } else {
                    format!(
                        "pull it with `{} pull {}`",
                        engine.program().display(),
                        component.image
                    )
                };
            problems.push(format!(
                "component `{}`: image `{}` is not present locally ({hint})",
                component.id, component.image
            ));
        }
    }

    for component in &plan.components {
        for port in &component.ports {
            let Some(host_port) = port.host_port else {
                continue;
            };
            let free = if port.protocol == "udp" {
                UdpSocket::bind((PUBLISH_HOST_IP, host_port)).is_ok()
            } else {
                TcpListener::bind((PUBLISH_HOST_IP, host_port)).is_ok()
            };
            if !free {
                problems.push(format!(
                    "component `{}`: hostPort {host_port}/{} is already in use on {PUBLISH_HOST_IP}",
                    component.id, port.protocol
                ));
            }
        }
    }

    for taken in taken.into_iter().flatten() {
        problems.push(format!(
            "container name `{}` is taken by {}",
            taken.name,
            describe_owner(&taken.labels)
        ));
    }
    if let Some(network) = network {
        problems.push(format!(
            "network name `{}` is taken by {}",
            network.name,
            describe_owner(&network.labels)
        ));
    }

    match problems.as_slice() {
        [] => Ok(()),
        [one] => bail!("{one}"),
        many => bail!("cannot start:\n  - {}", many.join("\n  - ")),
    }
}

/// The result of a check run on a scoped thread.
fn joined<T>(check: thread::ScopedJoinHandle<'_, Result<T, EngineError>>) -> Result<T> {
    match check.join() {
        Ok(result) => Ok(result?),
        Err(_) => bail!("a start-up check panicked"),
    }
}

/// Says who holds a name and what to do about it.
fn describe_owner(labels: &BTreeMap<String, String>) -> String {
    if labels.get(labels::MANAGED).map(String::as_str) != Some("true") {
        return "something flowctl did not create; remove or rename it, or use --project".into();
    }
    let pipeline = labels.get(labels::PIPELINE).cloned().unwrap_or_default();
    let run = labels.get(labels::RUN).cloned().unwrap_or_default();
    match RunOwner::from_labels(labels).map(|o| (o.liveness(), o.pid)) {
        Some((Liveness::Alive, pid)) => format!(
            "a running flowctl (pipeline `{pipeline}`, pid {pid}); use --project to run \
             another copy"
        ),
        _ => format!(
            "a leftover of an earlier flowctl run (pipeline `{pipeline}`, run {run}); run \
             `flowctl gc` to remove it"
        ),
    }
}

/// What starting and supervising need.
struct StartContext<'a> {
    engine: &'a Engine,
    plan: &'a RunPlan,
    run_id: &'a str,
    labels: &'a BTreeMap<String, String>,
    events: &'a Arc<RunEvents>,
    logs: &'a LogMux,
    console: Console,
    control: &'a ControlPlaneSeam,
    heartbeat_interval: Duration,
    /// `(container port, host port)` of each started component.
    host_ports: &'a HostPorts,
}

/// Proves with typed gRPC clients that the declared streams deliver data (issue 3).
fn verify_streams(context: &StartContext, timeout: Duration) -> Result<()> {
    let host_ports = context
        .host_ports
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let (checks, notes) = verify::checks_for(context.plan, &host_ports);
    for note in notes {
        context.console.info(note);
    }
    if checks.is_empty() {
        return Ok(());
    }
    context
        .console
        .info(format!("verifying {} gRPC stream(s)...", checks.len()));
    let mut failures = Vec::new();
    for result in verify::verify_streams(&checks, timeout) {
        match result {
            Ok(report) => context.console.info(report.to_string()),
            Err(error) => failures.push(error.to_string()),
        }
    }
    check_interrupted(context)?;
    match failures.as_slice() {
        [] => Ok(()),
        failures => bail!(
            "stream verification failed (--no-verify skips it):\n  - {}",
            failures.join("\n  - ")
        ),
    }
}

/// The control plane as far as this module needs it: the address components reach it at.
///
/// SEAM (issue 3): the control plane server is started in [`start_control_plane`], the ONE
/// place for it; keep the running server in this struct so it lives as long as the run, and
/// extend [`ReadinessCheck`] with "and registered".
#[derive(Debug)]
pub struct ControlPlaneSeam {
    /// Where components reach the control plane: the network gateway and the port.
    pub endpoint: SocketAddr,
    /// The running server; it stops when the last reference is dropped.
    pub server: Arc<ControlPlane>,
}

/// Starts the control plane on the network's gateway address (reachable from the pipeline's
/// containers, not from other hosts).
fn start_control_plane(
    plan: &RunPlan,
    gateway: &str,
    options: &RunOptions,
) -> Result<ControlPlaneSeam> {
    let ip: IpAddr = gateway
        .parse()
        .with_context(|| format!("the network gateway `{gateway}` is not an IP address"))?;
    let expected = plan
        .components
        .iter()
        .map(|c| ExpectedComponent {
            id: c.id.clone(),
            role: match c.role {
                Role::Source => ComponentRole::Source,
                Role::Processor => ComponentRole::Processor,
                Role::Sink => ComponentRole::Sink,
            },
        })
        .collect();
    let mut config = ControlPlaneConfig::new(options.heartbeat_interval, expected);
    config.status_signal = true;
    let server = ControlPlane::start(SocketAddr::new(ip, options.control_plane_port), config)
        .context("--control-plane-port picks another port (0 = any free one)")?;
    Ok(ControlPlaneSeam {
        endpoint: server.local_addr(),
        server: Arc::new(server),
    })
}

/// The environment flowctl sets in every container, overriding the file (CONTRACT.md §4).
fn injected_env(
    component: &ComponentPlan,
    control: &ControlPlaneSeam,
    heartbeat_interval: Duration,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ENABLE_FLOWCTL".to_string(), "true".to_string()),
        ("FLOWCTL_ENDPOINT".to_string(), control.endpoint.to_string()),
        (
            "FLOWCTL_HEARTBEAT_INTERVAL".to_string(),
            format_duration(heartbeat_interval),
        ),
        ("FLOWCTL_COMPONENT_ID".to_string(), component.id.clone()),
    ])
}

/// Runs `task` for each of `components` on threads of its own; the errors of all of them,
/// one per line, or [`Interrupted`] if a signal arrived meanwhile.
fn in_parallel(
    context: &StartContext,
    components: &[&ComponentPlan],
    task: impl Fn(&ComponentPlan) -> Result<()> + Sync,
) -> Result<()> {
    let task = &task;
    let results: Vec<Result<()>> = thread::scope(|scope| {
        let handles: Vec<_> = components
            .iter()
            .map(|component| scope.spawn(move || task(component)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a start-up thread panicked")))
            })
            .collect()
    });
    let errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        return Ok(());
    }
    if context.events.snapshot().interrupts > 0 {
        return Err(Interrupted.into());
    }
    let messages: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    bail!("{}", messages.join("\n"))
}

/// Creates every component's container at once, none started: starting a level later costs
/// only `start`, and a container that cannot be created fails the run before any runs.
fn create_all(context: &StartContext) -> Result<()> {
    let started = Instant::now();
    for component in &context.plan.components {
        for key in INJECTED_ENV {
            if component.env.contains_key(*key) {
                context.console.warn(format!(
                    "component `{}`: env {key} is set by flowctl; the file's value is ignored",
                    component.id
                ));
            }
        }
    }
    let all: Vec<&ComponentPlan> = context.plan.components.iter().collect();
    in_parallel(context, &all, |component| {
        create_container(context, component)
    })?;
    context.console.info(format!(
        "created {} container(s) in {} ms",
        all.len(),
        elapsed_ms(started)
    ));
    check_interrupted(context)
}

/// Starts the levels in order; the components of one level start in parallel.
fn start_all(context: &StartContext, started: Instant) -> Result<()> {
    let levels = context.plan.levels();
    for (depth, level) in levels.iter().enumerate() {
        in_parallel(context, level, |component| {
            start_component(context, component)
        })?;
        if depth + 1 < levels.len() {
            check_interrupted(context)?;
        }
    }
    context.console.info(format!(
        "pipeline {} is up: {} component(s) in {} ms (Ctrl+C to stop)",
        context.plan.pipeline,
        context.plan.components.len(),
        elapsed_ms(started)
    ));
    Ok(())
}

/// Interrupted by a signal; `run` turns it into [`RunOutcome::Interrupted`].
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn check_interrupted(context: &StartContext) -> Result<()> {
    if context.events.snapshot().interrupts > 0 {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// A file holding a container's environment, readable only by us and removed as soon as
/// `run` has read it: values never appear on a command line.
struct EnvFile {
    path: PathBuf,
}

impl EnvFile {
    fn write(run_id: &str, component: &str, env: &BTreeMap<String, String>) -> Result<EnvFile> {
        let path = std::env::temp_dir().join(format!("flowctl-{run_id}-{component}.env"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let env_file = EnvFile { path };
        for (key, value) in env {
            writeln!(file, "{key}={value}")
                .with_context(|| format!("cannot write {}", env_file.path.display()))?;
        }
        Ok(env_file)
    }
}

impl Drop for EnvFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The container of `component`.
fn container_spec(
    context: &StartContext,
    component: &ComponentPlan,
    env_file: Option<PathBuf>,
) -> ContainerSpec {
    let mut labels = context.labels.clone();
    labels.insert(labels::COMPONENT.to_string(), component.id.clone());
    // Lets `flowctl status` find this run's control plane.
    labels.insert(
        status::CONTROL_PLANE_LABEL.to_string(),
        context.control.endpoint.to_string(),
    );
    ContainerSpec {
        name: component.container_name.clone(),
        image: component.image.clone(),
        network: context.plan.network.clone(),
        aliases: vec![component.id.clone()],
        labels,
        env_file,
        publish: component
            .ports
            .iter()
            .map(|p| PortPublish {
                host_ip: PUBLISH_HOST_IP.to_string(),
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: p.protocol.clone(),
            })
            .collect(),
        volumes: component.volumes.clone(),
        entrypoint: component.entrypoint.clone(),
        args: component.args.clone(),
        stop_timeout: component.stop_grace,
    }
}

/// Runs one component's container and waits until it is ready; a container that exits
/// non-zero meanwhile is replaced as its `restart` policy allows.
fn start_component(context: &StartContext, component: &ComponentPlan) -> Result<()> {
    loop {
        let attempt = context.events.snapshot().attempt_of(&component.id);
        let error = match start_container(context, component, attempt) {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        match error.downcast_ref::<ExitError>() {
            Some(exited) if may_restart(context, component) => {
                restart(context, component, exited)?;
            }
            _ => return Err(error),
        }
    }
}

/// Whether `component`'s policy allows another restart in this run.
fn may_restart(context: &StartContext, component: &ComponentPlan) -> bool {
    context.events.snapshot().attempt_of(&component.id) < component.restart.max_restarts()
}

/// Says why and which restart this is, removes the stopped container and moves the
/// component's events to the next attempt; the caller starts the new container.
fn restart(context: &StartContext, component: &ComponentPlan, exited: &ExitError) -> Result<()> {
    let id = &component.id;
    let attempt = context.events.snapshot().attempt_of(id) + 1;
    context.console.warn(format!(
        "component `{id}` {} {}; restarting it (restart {attempt} of {}, restart: {})",
        exited.what,
        exited.when,
        component.restart.max_restarts(),
        component.restart
    ));
    check_interrupted(context)?;
    // Relay the rest of what the old container wrote before it is removed.
    context.logs.wait_drained(id, Duration::from_secs(2));
    context
        .engine
        .remove_containers(std::slice::from_ref(&component.container_name))
        .with_context(|| format!("component `{id}`: cannot remove its stopped container"))?;
    context.events.restarting(id);
    Ok(())
}

/// The file's env plus what flowctl sets (which wins).
fn container_env(context: &StartContext, component: &ComponentPlan) -> BTreeMap<String, String> {
    let mut env = component.env.clone();
    env.extend(injected_env(
        component,
        context.control,
        context.heartbeat_interval,
    ));
    env
}

/// Creates `component`'s container, not started. Its env reaches the engine in a private file
/// that is deleted as soon as the container exists.
fn create_container(context: &StartContext, component: &ComponentPlan) -> Result<()> {
    let id = &component.id;
    let env_file = EnvFile::write(context.run_id, id, &container_env(context, component))?;
    let spec = container_spec(context, component, Some(env_file.path.clone()));
    context
        .engine
        .create_container(&spec)
        .with_context(|| format!("component `{id}`: cannot create its container"))?;
    Ok(())
}

/// Runs container number `attempt` of `component` and waits until it is ready.
fn start_container(context: &StartContext, component: &ComponentPlan, attempt: u32) -> Result<()> {
    check_interrupted(context)?;
    let id = &component.id;
    let started = Instant::now();
    let index = context
        .plan
        .components
        .iter()
        .position(|c| c.id == *id)
        .unwrap_or(0);

    if attempt > 0 {
        // The failed container was removed; its replacement is created like the first.
        create_container(context, component)?;
    }
    let env = container_env(context, component);
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    context.console.info(format!(
        "starting {id} ({}) env: {}",
        component.image,
        keys.join(", ")
    ));
    context
        .engine
        .start_container(&component.container_name)
        .with_context(|| format!("component `{id}`: cannot start its container"))?;

    // The ports first: the watcher and log follower below are two more CLI processes
    // starting, which would slow this lookup on a small machine.
    let published = if component.ports.is_empty() {
        Ok(BTreeMap::new())
    } else {
        context.engine.published_ports(&component.container_name)
    };
    // Watch for the container's exit from now on, so a crash during start-up is seen at once
    // (one that happened already is reported at once, too).
    let watcher_engine = context.engine.clone();
    let watcher_events = context.events.clone();
    let container = component.container_name.clone();
    let component_id = id.clone();
    thread::Builder::new()
        .name(format!("wait-{id}"))
        .spawn(move || {
            let exit = match watcher_engine.wait(&container) {
                Ok(code) => Exit {
                    component: component_id,
                    attempt,
                    code: Some(code),
                    error: None,
                },
                Err(e) => Exit {
                    component: component_id,
                    attempt,
                    code: None,
                    error: Some(e.to_string()),
                },
            };
            watcher_events.exited(exit);
        })
        .with_context(|| format!("component `{id}`: cannot watch its container"))?;
    context
        .logs
        .follow(context.engine, id, index, &component.container_name)
        .with_context(|| format!("component `{id}`: cannot follow its logs"))?;

    let mut host_ports = Vec::new();
    for port in &component.ports {
        let lookup = match &published {
            Ok(ports) => ports
                .get(&(port.container_port, port.protocol.clone()))
                .copied()
                .ok_or_else(|| "the engine lists no binding for it".to_string()),
            Err(error) => Err(error.to_string()),
        };
        let host_port = match lookup {
            Ok(host_port) => host_port,
            // A container that already exited has no published ports: report its exit.
            Err(why) => match exited_early(context, component) {
                Some(Ok(())) => {
                    context.console.info(format!(
                        "{id} finished its work (exit code 0) during start-up"
                    ));
                    return Ok(());
                }
                Some(Err(exit)) => return Err(exit),
                None => bail!(
                    "component `{id}`: cannot read the host port of {}/{}: {why}",
                    port.container_port,
                    port.protocol
                ),
            },
        };
        host_ports.push((port.container_port, host_port));
    }
    context
        .host_ports
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(id.clone(), host_ports.clone());

    let probe = component.health.as_ref().and_then(|health| {
        host_ports
            .iter()
            .find(|(container_port, _)| *container_port == health.container_port)
            .map(|(_, host_port)| HealthProbe::new(*host_port, &health.path))
    });
    let check = ReadinessCheck {
        component,
        probe: probe.as_ref(),
        control: context.control,
    };
    let finished = wait_ready(context, &check)? == Readiness::Finished;

    let ports = host_ports
        .iter()
        .map(|(c, h)| format!("{c}→{PUBLISH_HOST_IP}:{h}"))
        .collect::<Vec<_>>()
        .join(", ");
    let how = match (probe.is_some(), component.register) {
        _ if finished => "finished its work (exit code 0) during start-up",
        (true, true) => "healthy and registered",
        (true, false) => "healthy",
        (false, true) => "running and registered",
        (false, false) => "running",
    };
    context.console.info(format!(
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

/// When a component counts as started.
///
/// SEAM (issue 3): add "and, if `component.register`, registered with the control plane".
struct ReadinessCheck<'a> {
    component: &'a ComponentPlan,
    /// `None`: no HTTP health check, ready once running.
    probe: Option<&'a HealthProbe>,
    /// Consulted when the component declares `register: true`.
    control: &'a ControlPlaneSeam,
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
fn exited_early(context: &StartContext, component: &ComponentPlan) -> Option<Result<()>> {
    let info = context
        .engine
        .inspect_container(&component.container_name)
        .ok()
        .flatten()?;
    if info.state.running {
        return None;
    }
    let exit = Exit {
        component: component.id.clone(),
        attempt: context.events.snapshot().attempt_of(&component.id),
        code: Some(info.state.exit_code),
        error: None,
    };
    Some(if exit.code == Some(0) {
        Ok(())
    } else {
        Err(exit_error(context, component, &exit, "while starting").into())
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
fn wait_ready(context: &StartContext, check: &ReadinessCheck) -> Result<Readiness> {
    let component = check.component;
    let id = &component.id;
    let deadline = Instant::now() + component.health_timeout;
    let mut backoff = Backoff::default();
    loop {
        let state = context.events.snapshot();
        if state.interrupts > 0 {
            return Err(Interrupted.into());
        }
        if let Some(exit) = state.exit_of(id) {
            if exit.code == Some(0) {
                return Ok(Readiness::Finished);
            }
            return Err(exit_error(context, component, exit, "while starting").into());
        }
        let why_not = match check.check() {
            Ok(()) => return Ok(Readiness::Ready),
            Err(why) => why,
        };
        let now = Instant::now();
        if now >= deadline {
            let logs = context
                .engine
                .logs_tail(&component.container_name, FAILURE_LOG_LINES)
                .unwrap_or_default();
            bail!(
                "component `{id}` was not ready after {} s: {why_not}\nlast log lines:\n{}",
                component.health_timeout.as_secs_f32(),
                last_lines(&logs, FAILURE_LOG_LINES, id)
            );
        }
        let wait = backoff.next_wait().min(deadline - now);
        context.events.wait_change(state.version, wait);
    }
}

/// A component's container stopped with a failure: what happened (its exit code or OOM kill),
/// when, and its last log lines.
#[derive(Debug)]
struct ExitError {
    id: String,
    /// E.g. "exited with code 9".
    what: String,
    /// E.g. "while running".
    when: &'static str,
    logs: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "component `{}` {} {}\nlast log lines:\n{}",
            self.id,
            self.what,
            self.when,
            last_lines(&self.logs, FAILURE_LOG_LINES, &self.id)
        )
    }
}

impl std::error::Error for ExitError {}

/// The error for a component that stopped: its exit code (or OOM kill) and last log lines.
fn exit_error(
    context: &StartContext,
    component: &ComponentPlan,
    exit: &Exit,
    when: &'static str,
) -> ExitError {
    let id = &component.id;
    let oom = context
        .engine
        .inspect_container(&component.container_name)
        .ok()
        .flatten()
        .is_some_and(|info| info.state.oom_killed);
    let what = match (&exit.code, &exit.error) {
        (Some(code), _) if oom => {
            format!("was killed for running out of memory (exit code {code})")
        }
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(error)) => format!("could not be watched: {error}"),
        (None, None) => "stopped".to_string(),
    };
    context.logs.wait_drained(id, Duration::from_secs(2));
    let logs = context
        .engine
        .logs_tail(&component.container_name, FAILURE_LOG_LINES)
        .unwrap_or_default();
    ExitError {
        id: id.clone(),
        what,
        when,
        logs,
    }
}

/// Waits until every sink has exited 0 (or, without sinks, every component), a signal, or a
/// component failing.
fn supervise(context: &StartContext) -> Result<RunOutcome> {
    let plan = context.plan;
    let has_sinks = plan.components.iter().any(|c| c.role == Role::Sink);
    let finishing: Vec<&ComponentPlan> = plan
        .components
        .iter()
        .filter(|c| !has_sinks || c.role == Role::Sink)
        .collect();
    let mut reported = 0;
    let mut state: EventState = context.events.snapshot();
    loop {
        if state.interrupts > 0 {
            return Ok(RunOutcome::Interrupted);
        }
        for exit in &state.exits[reported..] {
            let Some(component) = plan.component(&exit.component) else {
                continue;
            };
            if exit.attempt != state.attempt_of(&component.id) {
                continue; // a replaced container
            }
            if exit.code != Some(0) {
                let error = exit_error(context, component, exit, "while running");
                if !may_restart(context, component) {
                    return Err(error.into());
                }
                restart(context, component, &error)?;
                start_component(context, component)?;
                continue;
            }
            context
                .console
                .info(format!("{} finished (exit code 0)", component.id));
        }
        reported = state.exits.len();
        let all_done = finishing
            .iter()
            .all(|c| state.exit_of(&c.id).is_some_and(|e| e.code == Some(0)));
        if all_done {
            context.console.info(format!(
                "every {} finished: pipeline {} is complete",
                if has_sinks { "sink" } else { "component" },
                plan.pipeline
            ));
            return Ok(RunOutcome::Completed);
        }
        state = context
            .events
            .wait_change(state.version, Duration::from_secs(3600));
    }
}

/// Whether `error` means the run was interrupted (the caller reports it as such).
pub fn is_interrupted(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Interrupted>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(components: &str) -> RunPlan {
        let text = format!(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: demo}}\nspec:\n{components}"
        );
        let file = crate::spec::parse(&text, "t.yaml").unwrap();
        let naming = Naming {
            project: Some("p".into()),
            ..Naming::default()
        };
        RunPlan::build(&file, Path::new("."), &naming).unwrap()
    }

    #[test]
    fn teardown_stops_sinks_first_one_level_at_a_time_with_the_longest_grace() {
        let plan = plan(
            "
  sources:
    - {id: a, image: img, stop_grace_period: 3s}
    - {id: b, image: img, stop_grace_period: 20s}
  processors:
    - {id: mid, image: img, inputs: [a, b]}
  sinks:
    - {id: sink, image: img, inputs: [mid], stop_grace_period: 1s}
",
        );
        let order = stop_order(&plan);
        let groups: Vec<(Vec<&str>, u64)> = order
            .groups
            .iter()
            .map(|g| {
                (
                    g.containers.iter().map(String::as_str).collect(),
                    g.grace.as_secs(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                (vec!["p-sink"], 1),
                (vec!["p-mid"], 10),
                (vec!["p-a", "p-b"], 20)
            ]
        );
    }

    #[test]
    fn a_taken_name_says_whose_it_is_and_what_to_do() {
        let stranger = describe_owner(&BTreeMap::new());
        assert!(stranger.contains("flowctl did not create"), "{stranger}");

        let live = labels::run_labels("demo", None, "r1", &RunOwner::current());
        let text = describe_owner(&live);
        assert!(
            text.contains("a running flowctl") && text.contains("--project"),
            "{text}"
        );

        let dead_owner = RunOwner {
            start_ticks: RunOwner::current().start_ticks + 1,
            ..RunOwner::current()
        };
        let dead = labels::run_labels("demo", None, "r0", &dead_owner);
        let text = describe_owner(&dead);
        assert!(
            text.contains("leftover") && text.contains("flowctl gc") && text.contains("r0"),
            "{text}"
        );
    }

    #[test]
    fn env_files_are_private_and_removed() {
        let env = BTreeMap::from([("TOKEN".to_string(), "s3cret=x".to_string())]);
        let file = EnvFile::write(&new_run_id(), "unit", &env).unwrap();
        let path = file.path.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "TOKEN=s3cret=x\n");
        drop(file);
        assert!(!path.exists());
    }
}
