//! The container engine, driven through its CLI (`docker` or `podman`). This module is the only
//! place that spawns the CLI: everything else calls typed methods whose errors carry the command
//! line and the CLI's stderr ([`command`] runs one call, [`inspect`] reads what it prints).
//!
//! An [`Engine`] is made once, by [`Engine::detect`], which asks the CLI what it is before
//! anything else runs: a `docker` that is really Podman (the `podman-docker` shim, a symlink)
//! is known as Podman everywhere it is cloned to (signal policy, reaper, cleanup).

pub mod command;
#[cfg(test)]
pub(crate) mod fake;
pub mod inspect;
pub mod swarm;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use command::{calls_were_killed, kill_in_flight, CommandExt, EngineError, Streaming};
pub use inspect::{ContainerInfo, ContainerState, MountInfo, NetworkInfo};

/// The container CLI used when neither `--docker-bin` nor `FLOWCTL_DOCKER_BIN` says otherwise.
pub const DEFAULT_DOCKER_BIN: &str = "docker";
/// The deadline of an ordinary engine call when `--engine-timeout` does not say otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The deadline of one image pull when `--pull-timeout` does not say otherwise: pulls move
/// whole images over the network, so they get far longer than ordinary calls.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Which engine the CLI talks to; they differ in details flowctl works around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Podman,
}

impl EngineKind {
    /// `docker` or `podman`, as the reaper's command line carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Podman => "podman",
        }
    }

    /// The inverse of [`EngineKind::as_str`].
    pub fn from_name(name: &str) -> Option<EngineKind> {
        match name {
            "docker" => Some(EngineKind::Docker),
            "podman" => Some(EngineKind::Podman),
            _ => None,
        }
    }
}

/// How long each kind of engine call may take before it is killed and reported as hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Questions and ordinary changes: `version`, `inspect`, `ps`, `create`, `start`, `rm`, ...
    pub call: Duration,
    /// One `pull` (`--pull-timeout`).
    pub pull: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            call: DEFAULT_CALL_TIMEOUT,
            pull: DEFAULT_PULL_TIMEOUT,
        }
    }
}

impl Deadlines {
    /// `stop` waits for the containers' grace period before it kills them.
    fn stop(&self, grace: Duration) -> Duration {
        self.call + grace
    }
}

/// A container to create (and then start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub network: String,
    /// DNS names on the network (the component id).
    pub aliases: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Passed through an env file so values never appear on a command line.
    pub env_file: Option<PathBuf>,
    pub publish: Vec<PortPublish>,
    pub mounts: Vec<Mount>,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<String>,
    /// Arguments after the image (the command, or the entrypoint's arguments).
    pub args: Vec<String>,
    /// Grace period `stop` gives this container (also recorded with the container).
    pub stop_timeout: Duration,
    /// CPU and memory caps and reservations.
    pub limits: ResourceLimits,
}

/// `--cpus`, `--memory` and `--memory-reservation` of a container; `None` leaves the
/// engine's default (no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Cores, e.g. `1.5`.
    pub cpus: Option<String>,
    pub memory_bytes: Option<u64>,
    pub memory_reservation_bytes: Option<u64>,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPublish {
    pub host_ip: String,
    /// `None`: the engine picks a free port.
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
}

/// One bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
}

/// The container CLI, with what it turned out to be.
#[derive(Debug, Clone)]
pub struct Engine {
    program: PathBuf,
    kind: EngineKind,
    deadlines: Deadlines,
    /// The server's `Version:` line, as `version` printed it.
    version: String,
}

impl Engine {
    /// Asks `program` (a name looked up in `PATH`, or a path) what it is; fails when the CLI
    /// cannot run or its daemon does not answer (`version` exits non-zero then). The one way
    /// to make an engine that runs things, so no half-known engine is ever cloned.
    pub fn detect(
        program: impl Into<PathBuf>,
        deadlines: Deadlines,
    ) -> Result<Engine, EngineError> {
        let program = program.into();
        let mut engine = Engine {
            kind: kind_from_name(&program),
            program,
            deadlines,
            version: String::new(),
        };
        let out = engine.command(["version"]).capture(deadlines.call)?;
        // The client's part says which CLI this is (its dialect); a docker CLI talking to
        // Podman's Docker-compatible service names Podman only under `Server:`.
        let client = out.split("Server:").next().unwrap_or_default();
        if client.to_ascii_lowercase().contains("podman") {
            engine.kind = EngineKind::Podman;
        }
        engine.version = out
            .lines()
            .find(|line| line.trim_start().starts_with("Version"))
            // "Version:           28.2.2" as "Version: 28.2.2".
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        Ok(engine)
    }

    /// An engine whose kind is already known (the reaper is told it by the `flowctl run` that
    /// detected it), without asking the CLI.
    pub fn known(program: impl Into<PathBuf>, kind: EngineKind, deadlines: Deadlines) -> Engine {
        Engine {
            program: program.into(),
            kind,
            deadlines,
            version: String::new(),
        }
    }

    /// The CLI this engine runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Docker or Podman.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// The deadlines its calls run with.
    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    /// The `Version:` line `version` printed at detection (empty for [`Engine::known`]).
    pub fn version_line(&self) -> &str {
        &self.version
    }

    /// A command for the CLI (the process group and stdin are set where it runs).
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.program);
        command.args(args);
        command
    }

    /// Runs `args` as an ordinary call; returns stdout.
    fn call<I, S>(&self, args: I) -> Result<String, EngineError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).capture(self.deadlines.call)
    }

    /// Runs `args` and parses stdout as JSON.
    fn call_json(&self, args: &[&str]) -> Result<Value, EngineError> {
        let mut command = self.command(args);
        let out = command.capture(self.deadlines.call)?;
        serde_json::from_str(&out)
            .map_err(|e| EngineError::unexpected_output(command.command_line(), e))
    }

    /// The content id (`sha256:...`) of `image` when it is present locally, else `None`.
    pub fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        match self.call(["image", "inspect", "--format", "{{.Id}}", image]) {
            Ok(id) => Ok(Some(id.trim().to_string())),
            Err(e) if e.spawn_error.is_none() && e.timed_out.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The size in bytes of the local `image` (all its layers), as `image inspect` says.
    pub fn image_size(&self, image: &str) -> Result<u64, EngineError> {
        let mut command = self.command(["image", "inspect", "--format", "{{.Size}}", image]);
        let out = command.capture(self.deadlines.call)?;
        out.trim()
            .parse()
            .map_err(|e| EngineError::unexpected_output(command.command_line(), e))
    }

    /// The argument vector of `pull` for `image` (without the program). The same for Docker
    /// and Podman: both pull exactly this reference; what is insecure or needs credentials is
    /// the engine's own configuration (`daemon.json`, `registries.conf`, `login`).
    pub fn pull_args(&self, image: &str) -> Vec<String> {
        vec!["pull".into(), image.into()]
    }

    /// Pulls `image` from its registry, handing each progress line the CLI prints (Docker on
    /// stdout, Podman on stderr) to `on_line`. Its deadline is `Deadlines::pull`.
    pub fn pull_image(
        &self,
        image: &str,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<(), EngineError> {
        self.command(self.pull_args(image))
            .stream_lines(self.deadlines.pull, on_line)
            .map(|_| ())
    }

    /// The text of the file `path` inside `image`, without running anything: a container is
    /// created (never started, with an entrypoint that does not matter) carrying `labels` (a
    /// run's, so that its cleanup, its reaper and `gc` see it like any of its containers), the
    /// file copied out as a tar stream, and the container removed whatever happened. `None`
    /// when the image has no such file. Works the same under Docker and Podman.
    pub fn image_file(
        &self,
        image: &str,
        path: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, EngineError> {
        static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "flowctl-probe-{}-{}",
            std::process::id(),
            PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut args: Vec<String> = vec!["create".into(), "--name".into(), name.clone()];
        for (key, value) in labels {
            args.push("--label".into());
            args.push(format!("{key}={value}"));
        }
        args.extend([
            "--entrypoint".into(),
            "/flowctl-never-started".into(),
            image.into(),
        ]);
        self.call(&args)?;
        let copied = self.call(["cp", &format!("{name}:{path}"), "-"]);
        let removed = self.remove_containers(std::slice::from_ref(&name));
        let tar = match copied {
            Ok(tar) => tar,
            Err(e)
                if e.stderr.contains("Could not find the file")
                    || e.stderr.contains("no such file or directory") =>
            {
                removed?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        removed?;
        // Nothing copied is no file (an engine that answers `cp` with an empty stream).
        if tar.is_empty() {
            return Ok(None);
        }
        Ok(Some(inspect::first_tar_entry(&tar).ok_or_else(|| {
            EngineError::unexpected_output(
                format!("{} cp {name}:{path} -", self.program.display()),
                "not a tar stream",
            )
        })?))
    }

    /// Creates a bridge network with `labels`; returns its id.
    pub fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let mut args: Vec<String> = vec!["network".into(), "create".into()];
        args.extend(["--driver".into(), "bridge".into()]);
        for (key, value) in labels {
            args.push("--label".into());
            args.push(format!("{key}={value}"));
        }
        args.push(name.into());
        Ok(self.call(&args)?.trim().to_string())
    }

    /// The gateway address of `network`: the host's address on it, where the control plane
    /// listens.
    pub fn network_gateway(&self, network: &str) -> Result<String, EngineError> {
        let args = ["network", "inspect", network];
        let parsed = self.call_json(&args)?;
        inspect::network_gateway(&parsed).ok_or_else(|| {
            EngineError::unexpected_output(
                self.command(args).command_line(),
                "the network has no gateway address",
            )
        })
    }

    /// The argument vector of `create` for `spec` (without the program).
    pub fn create_args(&self, spec: &ContainerSpec) -> Vec<String> {
        let mut args: Vec<String> = vec!["create".into()];
        args.extend(["--name".into(), spec.name.clone()]);
        args.extend(["--network".into(), spec.network.clone()]);
        for alias in &spec.aliases {
            args.extend(["--network-alias".into(), alias.clone()]);
        }
        for (key, value) in &spec.labels {
            args.extend(["--label".into(), format!("{key}={value}")]);
        }
        if let Some(env_file) = &spec.env_file {
            args.extend(["--env-file".into(), env_file.display().to_string()]);
        }
        for port in &spec.publish {
            let host_port = port.host_port.map(|p| p.to_string()).unwrap_or_default();
            args.extend([
                "--publish".into(),
                format!(
                    "{}:{}:{}/{}",
                    port.host_ip, host_port, port.container_port, port.protocol
                ),
            ]);
        }
        for mount in &spec.mounts {
            let mode = if mount.readonly { "ro" } else { "rw" };
            args.extend([
                "--volume".into(),
                format!(
                    "{}:{}:{mode}",
                    mount.host_path.display(),
                    mount.container_path
                ),
            ]);
        }
        if let Some(cpus) = &spec.limits.cpus {
            args.extend(["--cpus".into(), cpus.clone()]);
        }
        if let Some(bytes) = spec.limits.memory_bytes {
            args.extend(["--memory".into(), format!("{bytes}b")]);
        }
        if let Some(bytes) = spec.limits.memory_reservation_bytes {
            args.extend(["--memory-reservation".into(), format!("{bytes}b")]);
        }
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        args.extend([
            "--stop-timeout".into(),
            spec.stop_timeout.as_secs().to_string(),
        ]);
        if let Some(entrypoint) = &spec.entrypoint {
            args.extend(["--entrypoint".into(), entrypoint.clone()]);
        }
        args.push(spec.image.clone());
        args.extend(spec.args.iter().cloned());
        args
    }

    /// Creates a container (not started); returns its id.
    pub fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        Ok(self.call(self.create_args(spec))?.trim().to_string())
    }

    /// Starts a created container in the background.
    pub fn start_container(&self, container: &str) -> Result<(), EngineError> {
        self.call(["start", container]).map(|_| ())
    }

    /// The host ports `container` is published on, by `(container port, protocol)`: one CLI
    /// call for all of them. Empty once the container has stopped.
    pub fn published_ports(
        &self,
        container: &str,
    ) -> Result<BTreeMap<(u16, String), u16>, EngineError> {
        Ok(inspect::parse_port_lines(&self.call(["port", container])?))
    }

    /// Inspects containers by name or id. Missing ones are left out.
    pub fn inspect_containers(&self, ids: &[String]) -> Result<Vec<ContainerInfo>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["container", "inspect"];
        args.extend(ids.iter().map(String::as_str));
        let parsed = match self.call_json(&args) {
            Ok(parsed) => parsed,
            // Some were missing: Docker still prints the others on stdout, Podman too; redo
            // one by one to be certain which exist.
            Err(e) if e.is_not_found() && ids.len() > 1 => {
                let mut found = Vec::new();
                for id in ids {
                    found.extend(self.inspect_containers(std::slice::from_ref(id))?);
                }
                return Ok(found);
            }
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(parsed
            .as_array()
            .into_iter()
            .flatten()
            .map(inspect::container_info)
            .collect())
    }

    /// Inspects one container; `None` when it does not exist.
    pub fn inspect_container(&self, name: &str) -> Result<Option<ContainerInfo>, EngineError> {
        Ok(self
            .inspect_containers(&[name.to_string()])?
            .into_iter()
            .next())
    }

    /// Ids of all containers (running or not) carrying every label in `labels` (`key=value`
    /// or just `key`).
    pub fn list_containers(&self, labels: &[String]) -> Result<Vec<String>, EngineError> {
        let mut args = vec![
            "ps".to_string(),
            "--all".into(),
            "--quiet".into(),
            "--no-trunc".into(),
        ];
        for label in labels {
            args.extend(["--filter".into(), format!("label={label}")]);
        }
        Ok(inspect::lines(&self.call(&args)?))
    }

    /// Containers carrying every label in `labels`, as `(id, name)`, in one call.
    pub fn list_containers_named(
        &self,
        labels: &[String],
    ) -> Result<Vec<(String, String)>, EngineError> {
        let mut args = vec![
            "ps".to_string(),
            "--all".into(),
            "--no-trunc".into(),
            "--format".into(),
            "{{.ID}}\t{{.Names}}".into(),
        ];
        for label in labels {
            args.extend(["--filter".into(), format!("label={label}")]);
        }
        Ok(inspect::lines(&self.call(&args)?)
            .into_iter()
            .map(|line| match line.split_once('\t') {
                Some((id, name)) => (id.to_string(), name.to_string()),
                None => (line.clone(), line),
            })
            .collect())
    }

    /// Networks carrying every label in `labels`.
    pub fn list_networks(&self, labels: &[String]) -> Result<Vec<NetworkInfo>, EngineError> {
        let mut args = vec!["network".to_string(), "ls".into(), "--quiet".into()];
        for label in labels {
            args.extend(["--filter".into(), format!("label={label}")]);
        }
        let mut networks = Vec::new();
        for id in inspect::lines(&self.call(&args)?) {
            if let Some(network) = self.inspect_network(&id)? {
                networks.push(network);
            }
        }
        Ok(networks)
    }

    /// Inspects a network by name or id; `None` when it does not exist.
    pub fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, EngineError> {
        match self.call_json(&["network", "inspect", name]) {
            Ok(parsed) => Ok(inspect::network_info(&parsed)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Blocks until `container` exits; returns its exit code. No deadline: containers run as
    /// long as the pipeline does.
    pub fn wait(&self, container: &str) -> Result<i64, EngineError> {
        let mut command = self.command(["wait", container]);
        let out = command.capture_unbounded()?;
        out.trim()
            .parse()
            .map_err(|_| EngineError::unexpected_output(command.command_line(), format!("{out:?}")))
    }

    /// Starts `container` attached to its output (`start --attach`): the CLI attaches before it
    /// starts the container, so every line the container writes is read, however soon it
    /// exits. The call prints the container's stdout and stderr and ends when it stops.
    pub fn start_attached(&self, container: &str) -> Result<Streaming, EngineError> {
        self.command(["start", "--attach", container])
            .spawn_streaming()
    }

    /// Waits until `container`, being started by `call` ([`Engine::start_attached`]), has
    /// left the `created` state: `Ok(Some(info))` once it runs or ran, with what the inspect
    /// that saw it said (its published ports and addresses, so the caller needs no second
    /// call), `Ok(None)` when the call ended without starting it (its stderr says why). Past
    /// the call deadline the call is killed and that is the error.
    pub fn wait_started(
        &self,
        container: &str,
        call: &mut Streaming,
    ) -> Result<Option<ContainerInfo>, EngineError> {
        let deadline = Instant::now() + self.deadlines.call;
        let mut pause = Duration::from_millis(5);
        loop {
            // The call's end first: a state read after it is final.
            let ended = !matches!(call.child.try_wait(), Ok(None));
            let info = self.inspect_container(container)?;
            if let Some(info) = info.filter(|info| info.state.status != "created") {
                return Ok(Some(info));
            }
            if ended {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                call.kill();
                return Err(EngineError {
                    command: call.command_line().to_string(),
                    code: None,
                    stderr: String::new(),
                    spawn_error: None,
                    timed_out: Some(self.deadlines.call),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(80));
        }
    }

    /// The last `lines` lines `container` wrote (stdout and stderr interleaved by the engine).
    pub fn logs_tail(&self, container: &str, lines: usize) -> Result<String, EngineError> {
        let output = self
            .command(["logs", "--tail", &lines.to_string(), container])
            .output_within(self.deadlines.call)?;
        // `logs` replays the container's stderr on its own stderr: both are the log.
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    }

    /// Stops `containers` (SIGTERM, then SIGKILL after `grace`). The CLI stops them in
    /// parallel. Containers that no longer exist are not an error.
    pub fn stop(&self, containers: &[String], grace: Duration) -> Result<(), EngineError> {
        if containers.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            "stop".to_string(),
            "--time".into(),
            grace.as_secs().to_string(),
        ];
        args.extend(containers.iter().cloned());
        let result = self.command(&args).run_checked(self.deadlines.stop(grace));
        self.ignore_missing(result, containers)
    }

    /// Sends SIGKILL to `containers`. Best effort: containers that are gone or already
    /// stopped are not an error.
    pub fn kill(&self, containers: &[String]) -> Result<(), EngineError> {
        if containers.is_empty() {
            return Ok(());
        }
        let mut args = vec!["kill".to_string(), "--signal".into(), "KILL".into()];
        args.extend(containers.iter().cloned());
        match self.call(&args) {
            Err(e) if e.spawn_error.is_some() || e.timed_out.is_some() => Err(e),
            _ => Ok(()),
        }
    }

    /// The argument vector of `rm` for `containers` (without the program).
    pub fn remove_args(&self, containers: &[String]) -> Vec<String> {
        let mut args = vec!["rm".to_string(), "--force".into(), "--volumes".into()];
        if self.kind == EngineKind::Podman {
            // Podman 4.3's `rm --force missing live` exits 0 and removes nothing; `--ignore`
            // makes it skip the missing one and remove the rest (Docker has no such flag and
            // removes the rest anyway).
            args.push("--ignore".into());
        }
        args.extend(containers.iter().cloned());
        args
    }

    /// Removes `containers` (killing them if running) with their anonymous volumes. Containers
    /// that no longer exist are not an error (Podman exits non-zero for them).
    pub fn remove_containers(&self, containers: &[String]) -> Result<(), EngineError> {
        if containers.is_empty() {
            return Ok(());
        }
        let result = self.call(self.remove_args(containers)).map(|_| ());
        self.ignore_missing(result, containers)
    }

    /// Attaches the running container `container` to `network` (flowctl's own container, when
    /// it runs in one of this engine's containers).
    pub fn connect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        self.call(["network", "connect", network, container])
            .map(|_| ())
    }

    /// Detaches `container` from `network`; one that is not attached (or gone) is not an error.
    pub fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        match self.call(["network", "disconnect", "--force", network, container]) {
            Err(e) if e.is_not_found() || e.stderr.contains("is not connected") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Removes a network. A missing one is not an error. Never `network rm -f`: in Podman it
    /// also removes the containers on it.
    pub fn remove_network(&self, network: &str) -> Result<(), EngineError> {
        match self.call(["network", "rm", network]) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// With several containers, "no such container" for one must not hide a real failure of
    /// another: on such an error, check that none of them remains.
    fn ignore_missing(
        &self,
        result: Result<(), EngineError>,
        containers: &[String],
    ) -> Result<(), EngineError> {
        match result {
            Err(e) if e.is_not_found() => {
                if containers.len() == 1 {
                    return Ok(());
                }
                // A failure that is not "missing" leaves its container behind.
                let remaining = self.inspect_containers(containers)?;
                let all_missing = e
                    .stderr
                    .lines()
                    .all(|line| line.trim().is_empty() || command::is_not_found_text(line));
                if remaining.is_empty() || all_missing {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }
}

/// What the program's name says, before the CLI itself is asked.
fn kind_from_name(program: &Path) -> EngineKind {
    let is_podman = program
        .file_name()
        .is_some_and(|name| name.to_string_lossy().contains("podman"));
    if is_podman {
        EngineKind::Podman
    } else {
        EngineKind::Docker
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeCli;
    use super::*;

    fn docker() -> Engine {
        Engine::known("docker", EngineKind::Docker, Deadlines::default())
    }

    #[test]
    fn a_docker_that_is_podman_is_detected_once_and_speaks_podman() {
        let fake = FakeCli::new(
            "docker-is-podman",
            r#"case "$1" in
  version) printf 'Client:       Podman Engine\nVersion:      4.3.1\n' ;;
esac"#,
        );
        let engine = Engine::detect(fake.dir.join("docker"), Deadlines::default()).unwrap();
        assert_eq!(engine.kind(), EngineKind::Podman);
        assert_eq!(engine.version_line(), "Version: 4.3.1");
        // Every clone (signal policy, cleanup guard) has the same dialect.
        let clone = engine.clone();
        assert_eq!(
            clone.remove_args(&["a".into(), "b".into()]),
            ["rm", "--force", "--volumes", "--ignore", "a", "b"]
        );
        assert_eq!(
            docker().remove_args(&["a".into()]),
            ["rm", "--force", "--volumes", "a"]
        );
    }

    #[test]
    fn a_docker_cli_talking_to_podmans_service_speaks_docker() {
        let fake = FakeCli::new(
            "docker-to-podman",
            r#"printf 'Client:\n Version: 28.2.2\n\nServer: linux/amd64\n Podman Engine:\n  Version: 4.3.1\n'"#,
        );
        let engine = Engine::detect(fake.dir.join("docker"), Deadlines::default()).unwrap();
        assert_eq!(engine.kind(), EngineKind::Docker);
    }

    #[test]
    fn a_hung_engine_call_fails_at_its_deadline_naming_the_command() {
        let fake = FakeCli::new("hung", "exec sleep 30");
        let engine = Engine::known(
            fake.dir.join("docker"),
            EngineKind::Docker,
            Deadlines {
                call: Duration::from_millis(200),
                ..Deadlines::default()
            },
        );
        let err = engine.start_container("p-source").unwrap_err();
        assert!(err.timed_out.is_some(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("docker start p-source` did not finish"),
            "{text}"
        );
        assert!(text.contains("FLOWCTL_ENGINE_TIMEOUT"), "{text}");
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "p-source".into(),
            image: "flowctl/test-component:dev".into(),
            network: "p-bridge".into(),
            aliases: vec!["source".into()],
            labels: BTreeMap::from([("io.flowctl.managed".into(), "true".into())]),
            env_file: Some(PathBuf::from("/tmp/x.env")),
            publish: vec![PortPublish {
                host_ip: "127.0.0.1".into(),
                host_port: None,
                container_port: 8088,
                protocol: "tcp",
            }],
            mounts: vec![Mount {
                host_path: PathBuf::from("/data/lake"),
                container_path: "/lake".into(),
                readonly: true,
            }],
            entrypoint: None,
            args: vec!["serve".into(), "--fast".into()],
            stop_timeout: Duration::from_secs(7),
            limits: ResourceLimits::default(),
        }
    }

    #[test]
    fn create_arguments_are_a_vector_with_every_setting() {
        let args = docker().create_args(&spec());
        let expected = [
            "create",
            "--name",
            "p-source",
            "--network",
            "p-bridge",
            "--network-alias",
            "source",
            "--label",
            "io.flowctl.managed=true",
            "--env-file",
            "/tmp/x.env",
            "--publish",
            "127.0.0.1::8088/tcp",
            "--volume",
            "/data/lake:/lake:ro",
            "--security-opt",
            "no-new-privileges",
            "--stop-timeout",
            "7",
            "flowctl/test-component:dev",
            "serve",
            "--fast",
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn hostile_strings_stay_single_arguments() {
        let mut spec = spec();
        spec.image = "img; rm -rf / #".into();
        spec.args = vec!["$(reboot)".into(), "a b".into()];
        let args = docker().create_args(&spec);
        assert!(args.contains(&"img; rm -rf / #".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("a b"));
        let command = docker().command(&args);
        assert!(command.command_line().contains("'img; rm -rf / #'"));
    }

    #[test]
    fn a_missing_cli_is_a_clear_error() {
        let err =
            Engine::detect("/nonexistent/flowctl-no-docker", Deadlines::default()).unwrap_err();
        assert_eq!(err.spawn_error, Some(std::io::ErrorKind::NotFound));
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/flowctl-no-docker version"),
            "{text}"
        );
        assert!(text.contains("--docker-bin"), "{text}");
    }

    #[test]
    fn an_unreachable_daemon_reports_command_and_stderr() {
        let fake = FakeCli::new(
            "daemon-down",
            "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock' >&2; exit 1",
        );
        let err = Engine::detect(fake.dir.join("docker"), Deadlines::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("docker version` failed with exit code 1"),
            "{text}"
        );
        assert!(
            text.contains("Cannot connect to the Docker daemon"),
            "{text}"
        );
    }

    #[test]
    fn removing_missing_containers_and_networks_is_not_an_error() {
        let fake = FakeCli::new(
            "rm-missing",
            "echo 'Error: No such container: gone' >&2; exit 1",
        );
        let engine = fake.engine();
        engine.remove_containers(&["gone".into()]).unwrap();
        engine
            .stop(&["gone".into()], Duration::from_secs(1))
            .unwrap();
        engine.remove_network("gone-net").unwrap();
        let calls = fake.calls();
        assert_eq!(calls[0], ["rm", "--force", "--volumes", "gone"]);
        assert_eq!(calls[1], ["stop", "--time", "1", "gone"]);
        assert_eq!(calls[2], ["network", "rm", "gone-net"]);
    }

    #[test]
    fn kill_is_best_effort() {
        let fake = FakeCli::new(
            "kill",
            "echo 'Error: container is not running' >&2; exit 125",
        );
        fake.engine().kill(&["stopped".into()]).unwrap();
        assert_eq!(fake.calls()[0], ["kill", "--signal", "KILL", "stopped"]);
    }

    #[test]
    fn other_removal_failures_are_errors_with_the_command_line() {
        let fake = FakeCli::new("rm-fails", "echo 'permission denied' >&2; exit 1");
        let err = fake
            .engine()
            .remove_containers(&["busy".into()])
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rm --force --volumes busy"), "{text}");
        assert!(text.contains("permission denied"), "{text}");
    }

    #[test]
    fn published_port_and_gateway_are_parsed_for_docker_and_podman_shapes() {
        let fake = FakeCli::new(
            "port",
            r#"case "$1" in
  port) echo '8088/tcp -> 127.0.0.1:49153'; echo '8088/tcp -> [::1]:49154'
        echo '9000/udp -> 127.0.0.1:32768' ;;
  network) echo '[{"name":"n","subnets":[{"subnet":"10.89.0.0/24","gateway":"10.89.0.1"}]}]' ;;
esac"#,
        );
        let engine = fake.engine();
        let ports = engine.published_ports("c").unwrap();
        assert_eq!(ports[&(8088, "tcp".to_string())], 49153);
        assert_eq!(ports[&(9000, "udp".to_string())], 32768);
        assert_eq!(ports.len(), 2);
        assert_eq!(engine.network_gateway("n").unwrap(), "10.89.0.1");
        assert_eq!(fake.calls()[0], ["port", "c"]);

        let fake = FakeCli::new(
            "gateway-docker",
            r#"echo '[{"Name":"n","IPAM":{"Config":[{"Subnet":"fd00::/64","Gateway":"fd00::1"},{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]}}]'"#,
        );
        assert_eq!(fake.engine().network_gateway("n").unwrap(), "172.18.0.1");
    }

    #[test]
    fn listing_by_label_uses_filters_not_json_shapes() {
        let fake = FakeCli::new("ps", "echo abc; echo def");
        let ids = fake
            .engine()
            .list_containers(&["io.flowctl.run=r1".into()])
            .unwrap();
        assert_eq!(ids, ["abc", "def"]);
        assert_eq!(
            fake.calls()[0],
            [
                "ps",
                "--all",
                "--quiet",
                "--no-trunc",
                "--filter",
                "label=io.flowctl.run=r1"
            ]
        );
    }

    #[test]
    fn inspect_reads_state_and_labels() {
        let fake = FakeCli::new(
            "inspect",
            r#"echo '[{"Id":"abc","Name":"/p-sink","Config":{"Labels":{"io.flowctl.component":"sink"}},"State":{"Status":"exited","Running":false,"ExitCode":3,"OOMKilled":true}}]'"#,
        );
        let info = fake.engine().inspect_container("p-sink").unwrap().unwrap();
        assert_eq!(info.name, "p-sink");
        assert_eq!(info.labels["io.flowctl.component"], "sink");
        assert_eq!(info.state.exit_code, 3);
        assert!(info.state.oom_killed && !info.state.running);
    }
}
