//! The container engine, driven through its CLI (`docker` or `podman`). This is the only module
//! that spawns the CLI: everything else calls typed methods whose errors carry the command line
//! and the CLI's stderr.
//!
//! Every command runs in its own process group, so a Ctrl+C typed in the terminal (which goes
//! to the whole foreground process group) never kills a `docker stop` that cleanup depends on.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The container CLI used when neither `--docker-bin` nor `FLOWCTL_DOCKER_BIN` says otherwise.
pub const DEFAULT_DOCKER_BIN: &str = "docker";

/// A failed container CLI call: what was run, and what the CLI said.
#[derive(Debug)]
pub struct EngineError {
    /// The command line, for the user to re-run by hand.
    pub command: String,
    /// The exit code, `None` when the CLI could not be started or was killed.
    pub code: Option<i32>,
    /// The CLI's stderr (or the spawn error), trimmed.
    pub stderr: String,
    /// Set when the CLI itself could not be started.
    pub spawn_error: Option<io::ErrorKind>,
}

impl EngineError {
    /// The CLI could not be started at all (missing binary, no permission, ...).
    fn spawn_failed(command: String, error: &io::Error) -> EngineError {
        EngineError {
            command,
            code: None,
            stderr: error.to_string(),
            spawn_error: Some(error.kind()),
        }
    }

    /// Whether the CLI said the container, network or image does not exist. Docker says
    /// "No such container", Podman "no such container" or "... not known"/"not found".
    pub fn is_not_found(&self) -> bool {
        let stderr = self.stderr.to_ascii_lowercase();
        self.spawn_error.is_none()
            && (stderr.contains("no such")
                || stderr.contains("not known")
                || stderr.contains("not found"))
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.spawn_error, self.code) {
            (Some(io::ErrorKind::NotFound), _) => write!(
                f,
                "cannot run `{}`: the container CLI was not found (install Docker or Podman, or \
                 point --docker-bin / FLOWCTL_DOCKER_BIN at it)",
                self.command
            ),
            (Some(_), _) => write!(f, "cannot run `{}`: {}", self.command, self.stderr),
            (None, Some(code)) => write!(
                f,
                "`{}` failed with exit code {code}: {}",
                self.command, self.stderr
            ),
            (None, None) => write!(
                f,
                "`{}` was killed by a signal: {}",
                self.command, self.stderr
            ),
        }
    }
}

impl std::error::Error for EngineError {}

/// Run-check-capture in one call, with the command line and stderr in the error (as cross-rs
/// does for its engine calls).
pub trait CommandExt {
    /// The command as a user could type it (arguments quoted where needed).
    fn command_line(&self) -> String;
    /// Runs to completion; a non-zero exit is an error.
    fn run_checked(&mut self) -> Result<(), EngineError>;
    /// Runs to completion and returns stdout; a non-zero exit is an error.
    fn capture(&mut self) -> Result<String, EngineError>;
}

impl CommandExt for Command {
    fn command_line(&self) -> String {
        std::iter::once(self.get_program())
            .chain(self.get_args())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn run_checked(&mut self) -> Result<(), EngineError> {
        self.capture().map(|_| ())
    }

    fn capture(&mut self) -> Result<String, EngineError> {
        let output = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| EngineError::spawn_failed(self.command_line(), &e))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(EngineError {
                command: self.command_line(),
                code: output.status.code(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                spawn_error: None,
            })
        }
    }
}

/// Quotes one argument for display only; commands are always run as argument vectors.
fn quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%{}".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Which engine the CLI talks to; they differ in details flowctl works around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Podman,
}

/// What `version` said.
#[derive(Debug, Clone)]
pub struct EngineVersion {
    /// The first `Version:` line.
    pub line: String,
    /// The CLI is Podman (also when installed as `docker`).
    pub podman: bool,
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
    pub volumes: Vec<VolumeMount>,
    /// Replaces the image's entrypoint when set.
    pub entrypoint: Option<String>,
    /// Arguments after the image (the command, or the entrypoint's arguments).
    pub args: Vec<String>,
    /// Grace period `stop` gives this container (also recorded with the container).
    pub stop_timeout: Duration,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPublish {
    pub host_ip: String,
    /// `None`: the engine picks a free port.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: String,
}

/// One bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
}

/// What `inspect` says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The image as given to `run` (`Config.Image`).
    pub image: String,
    /// Published ports as `host_ip:host_port->container_port/protocol`.
    pub ports: Vec<String>,
}

/// A container's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// `created`, `running`, `exited`, ...
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
}

/// What `network inspect` says about a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The container CLI.
#[derive(Debug, Clone)]
pub struct Engine {
    program: PathBuf,
    kind: EngineKind,
}

impl Engine {
    /// An engine driven by `program` (a name looked up in `PATH`, or a path).
    pub fn new(program: impl Into<PathBuf>) -> Engine {
        let program = program.into();
        let is_podman = program
            .file_name()
            .is_some_and(|name| name.to_string_lossy().contains("podman"));
        let kind = if is_podman {
            EngineKind::Podman
        } else {
            EngineKind::Docker
        };
        Engine { program, kind }
    }

    /// The CLI this engine runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Docker or Podman.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// A command for the CLI, in its own process group, with no stdin.
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.program);
        command.args(args).stdin(Stdio::null()).process_group(0);
        command
    }

    /// Checks that the CLI runs and its daemon answers; returns the engine's version line.
    /// `docker version` exits non-zero when the daemon is unreachable.
    pub fn check_available(&mut self) -> Result<String, EngineError> {
        let version = self.version()?;
        self.adopt(&version);
        Ok(version.line)
    }

    /// `version`, without taking the answer into account: [`Engine::adopt`] does (so it can
    /// run alongside other calls).
    pub fn version(&self) -> Result<EngineVersion, EngineError> {
        let out = self.command(["version"]).capture()?;
        Ok(EngineVersion {
            podman: out.to_ascii_lowercase().contains("podman"),
            line: out
                .lines()
                .find(|line| line.trim_start().starts_with("Version"))
                .map(|line| line.trim().to_string())
                .unwrap_or_default(),
        })
    }

    /// Speaks the dialect `version` found (a `docker` that is Podman).
    pub fn adopt(&mut self, version: &EngineVersion) {
        if version.podman {
            self.kind = EngineKind::Podman;
        }
    }

    /// Whether `image` is present locally (flowctl never pulls).
    pub fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        match self
            .command(["image", "inspect", "--format", "{{.Id}}", image])
            .capture()
        {
            Ok(_) => Ok(true),
            Err(e) if e.spawn_error.is_none() => Ok(false),
            Err(e) => Err(e),
        }
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
        Ok(self.command(&args).capture()?.trim().to_string())
    }

    /// The gateway address of `network`: the host's address on it, where the control plane
    /// listens. Docker reports it under `IPAM.Config`, Podman under `subnets`.
    pub fn network_gateway(&self, network: &str) -> Result<String, EngineError> {
        let mut command = self.command(["network", "inspect", network]);
        let out = command.capture()?;
        let parsed: Value = serde_json::from_str(&out).map_err(|e| EngineError {
            command: command.command_line(),
            code: Some(0),
            stderr: format!("unexpected output ({e})"),
            spawn_error: None,
        })?;
        let network = first(&parsed);
        let gateways = get(network, "IPAM")
            .and_then(|ipam| get(ipam, "Config"))
            .or_else(|| get(network, "subnets"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|subnet| get(subnet, "Gateway").and_then(Value::as_str))
            .filter(|gateway| !gateway.is_empty());
        // Prefer IPv4: the control plane address goes into an env var as host:port.
        let mut gateways: Vec<&str> = gateways.collect();
        gateways.sort_by_key(|gateway| gateway.contains(':'));
        gateways
            .first()
            .map(|gateway| gateway.split('/').next().unwrap_or(gateway).to_string())
            .ok_or_else(|| EngineError {
                command: command.command_line(),
                code: Some(0),
                stderr: "the network has no gateway address".into(),
                spawn_error: None,
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
        for volume in &spec.volumes {
            let mode = if volume.readonly { "ro" } else { "rw" };
            args.extend([
                "--volume".into(),
                format!(
                    "{}:{}:{mode}",
                    volume.host_path.display(),
                    volume.container_path
                ),
            ]);
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
        Ok(self
            .command(self.create_args(spec))
            .capture()?
            .trim()
            .to_string())
    }

    /// Starts a created container in the background.
    pub fn start_container(&self, container: &str) -> Result<(), EngineError> {
        self.command(["start".to_string(), container.to_string()])
            .run_checked()
    }

    /// The host ports `container` is published on, by `(container port, protocol)`: one CLI
    /// call for all of them. Empty once the container has stopped.
    pub fn published_ports(
        &self,
        container: &str,
    ) -> Result<BTreeMap<(u16, String), u16>, EngineError> {
        let out = self
            .command(["port".to_string(), container.to_string()])
            .capture()?;
        Ok(parse_port_lines(&out))
    }

    /// Inspects containers by name or id. Missing ones are left out.
    pub fn inspect_containers(&self, ids: &[String]) -> Result<Vec<ContainerInfo>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["container".to_string(), "inspect".to_string()];
        args.extend(ids.iter().cloned());
        let mut command = self.command(&args);
        let out = match command.capture() {
            Ok(out) => out,
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
        let parsed: Value = serde_json::from_str(&out).map_err(|e| EngineError {
            command: command.command_line(),
            code: Some(0),
            stderr: format!("unexpected output ({e})"),
            spawn_error: None,
        })?;
        Ok(parsed
            .as_array()
            .into_iter()
            .flatten()
            .map(container_info)
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
        Ok(lines(&self.command(&args).capture()?))
    }

    /// Networks carrying every label in `labels`.
    pub fn list_networks(&self, labels: &[String]) -> Result<Vec<NetworkInfo>, EngineError> {
        let mut args = vec!["network".to_string(), "ls".into(), "--quiet".into()];
        for label in labels {
            args.extend(["--filter".into(), format!("label={label}")]);
        }
        let ids = lines(&self.command(&args).capture()?);
        let mut networks = Vec::new();
        for id in ids {
            if let Some(network) = self.inspect_network(&id)? {
                networks.push(network);
            }
        }
        Ok(networks)
    }

    /// Inspects a network by name or id; `None` when it does not exist.
    pub fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, EngineError> {
        let mut command = self.command(["network", "inspect", name]);
        let out = match command.capture() {
            Ok(out) => out,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let parsed: Value = serde_json::from_str(&out).map_err(|e| EngineError {
            command: command.command_line(),
            code: Some(0),
            stderr: format!("unexpected output ({e})"),
            spawn_error: None,
        })?;
        let network = first(&parsed);
        if network.is_null() {
            return Ok(None);
        }
        Ok(Some(NetworkInfo {
            id: string(network, "Id"),
            name: string(network, "Name"),
            labels: labels(get(network, "Labels")),
        }))
    }

    /// Blocks until `container` exits; returns its exit code.
    pub fn wait(&self, container: &str) -> Result<i64, EngineError> {
        let mut command = self.command(["wait", container]);
        let out = command.capture()?;
        out.trim().parse().map_err(|_| EngineError {
            command: command.command_line(),
            code: Some(0),
            stderr: format!("unexpected output {out:?}"),
            spawn_error: None,
        })
    }

    /// Starts `logs --follow` for `container`, stdout and stderr piped. Ends when the container
    /// stops.
    pub fn follow_logs(&self, container: &str) -> Result<Child, EngineError> {
        let mut command = self.command(["logs", "--follow", container]);
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::spawn_failed(command.command_line(), &e))
    }

    /// The last `lines` lines `container` wrote (stdout and stderr interleaved by the engine).
    pub fn logs_tail(&self, container: &str, lines: usize) -> Result<String, EngineError> {
        let output = self
            .command(["logs", "--tail", &lines.to_string(), container])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                EngineError::spawn_failed(
                    format!("{} logs {container}", self.program.display()),
                    &e,
                )
            })?;
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
        self.ignore_missing(self.command(&args).run_checked(), containers)
    }

    /// Sends SIGKILL to `containers`. Best effort: containers that are gone or already
    /// stopped are not an error.
    pub fn kill(&self, containers: &[String]) -> Result<(), EngineError> {
        if containers.is_empty() {
            return Ok(());
        }
        let mut args = vec!["kill".to_string(), "--signal".into(), "KILL".into()];
        args.extend(containers.iter().cloned());
        match self.command(&args).run_checked() {
            Err(e) if e.spawn_error.is_some() => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes `containers` (killing them if running) with their anonymous volumes. Containers
    /// that no longer exist are not an error (Podman exits non-zero for them).
    pub fn remove_containers(&self, containers: &[String]) -> Result<(), EngineError> {
        if containers.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm".to_string(), "--force".into(), "--volumes".into()];
        if self.kind == EngineKind::Podman {
            // Podman 4.3's `rm --force missing live` exits 0 and removes nothing; `--ignore`
            // makes it skip the missing one and remove the rest (Docker has no such flag and
            // removes the rest anyway).
            args.push("--ignore".into());
        }
        args.extend(containers.iter().cloned());
        self.ignore_missing(self.command(&args).run_checked(), containers)
    }

    /// Removes a network. A missing one is not an error. Never `network rm -f`: in Podman it
    /// also removes the containers on it.
    pub fn remove_network(&self, network: &str) -> Result<(), EngineError> {
        match self.command(["network", "rm", network]).run_checked() {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
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
                if remaining.is_empty() || e.stderr.lines().all(is_not_found_line) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }
}

fn is_not_found_line(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    line.trim().is_empty()
        || line.contains("no such")
        || line.contains("not known")
        || line.contains("not found")
}

/// Parses `docker port CONTAINER` (Docker and Podman print the same): one line per binding,
/// e.g. `8088/tcp -> 127.0.0.1:49153` (and `8088/tcp -> [::1]:49153`); the first wins.
fn parse_port_lines(out: &str) -> BTreeMap<(u16, String), u16> {
    let mut ports = BTreeMap::new();
    for line in out.lines() {
        let Some((inside, outside)) = line.split_once("->") else {
            continue;
        };
        let Some((port, protocol)) = inside.trim().split_once('/') else {
            continue;
        };
        let host_port = outside.trim().rsplit_once(':').map(|(_, p)| p.parse());
        if let (Ok(port), Some(Ok(host_port))) = (port.parse(), host_port) {
            ports
                .entry((port, protocol.to_string()))
                .or_insert(host_port);
        }
    }
    ports
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}

/// Docker's and Podman's inspect output is an array of objects.
fn first(value: &Value) -> &Value {
    value.as_array().and_then(|a| a.first()).unwrap_or(value)
}

/// A field by name, case-insensitively (Docker writes `Name`, Podman 4 networks `name`).
fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn string(value: &Value, key: &str) -> String {
    get(value, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `NetworkSettings.Ports` (`{"50052/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}`)
/// as `127.0.0.1:49153->50052/tcp`; unpublished ports (`null`) are left out.
fn published_ports(value: Option<&Value>) -> Vec<String> {
    let mut ports: Vec<String> = value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .flat_map(|(container_port, bindings)| {
            bindings
                .as_array()
                .into_iter()
                .flatten()
                .map(move |binding| {
                    format!(
                        "{}:{}->{container_port}",
                        string(binding, "HostIp"),
                        string(binding, "HostPort")
                    )
                })
        })
        .collect();
    ports.sort();
    ports
}

fn labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn container_info(value: &Value) -> ContainerInfo {
    let state = get(value, "State").unwrap_or(&Value::Null);
    ContainerInfo {
        id: string(value, "Id"),
        name: string(value, "Name").trim_start_matches('/').to_string(),
        labels: labels(get(value, "Config").and_then(|c| get(c, "Labels"))),
        image: get(value, "Config")
            .map(|config| string(config, "Image"))
            .unwrap_or_default(),
        ports: published_ports(
            get(value, "NetworkSettings").and_then(|settings| get(settings, "Ports")),
        ),
        state: ContainerState {
            status: string(state, "Status"),
            running: get(state, "Running")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            exit_code: get(state, "ExitCode").and_then(Value::as_i64).unwrap_or(0),
            oom_killed: get(state, "OOMKilled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A fake container CLI: records its arguments to a file and answers from a script.
    struct FakeCli {
        dir: PathBuf,
    }

    impl FakeCli {
        fn new(name: &str, script_body: &str) -> FakeCli {
            let dir =
                std::env::temp_dir().join(format!("flowctl-fake-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let script = format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\necho '--' >> '{}'\n{script_body}\n",
                dir.join("calls").display(),
                dir.join("calls").display()
            );
            let path = dir.join("docker");
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            FakeCli { dir }
        }

        fn engine(&self) -> Engine {
            Engine::new(self.dir.join("docker"))
        }

        /// Each call's arguments.
        fn calls(&self) -> Vec<Vec<String>> {
            let text = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
            text.split("--\n")
                .filter(|call| !call.is_empty())
                .map(|call| call.lines().map(String::from).collect())
                .collect()
        }
    }

    impl Drop for FakeCli {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
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
                protocol: "tcp".into(),
            }],
            volumes: vec![VolumeMount {
                host_path: PathBuf::from("/data/lake"),
                container_path: "/lake".into(),
                readonly: true,
            }],
            entrypoint: None,
            args: vec!["serve".into(), "--fast".into()],
            stop_timeout: Duration::from_secs(7),
        }
    }

    #[test]
    fn create_arguments_are_a_vector_with_every_setting() {
        let args = Engine::new("docker").create_args(&spec());
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
        let args = Engine::new("docker").create_args(&spec);
        assert!(args.contains(&"img; rm -rf / #".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("a b"));
        let command = Engine::new("docker").command(&args);
        assert!(command.command_line().contains("'img; rm -rf / #'"));
    }

    #[test]
    fn a_missing_cli_is_a_clear_error() {
        let mut engine = Engine::new("/nonexistent/flowctl-no-docker");
        let err = engine.check_available().unwrap_err();
        assert_eq!(err.spawn_error, Some(io::ErrorKind::NotFound));
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
        let err = fake.engine().check_available().unwrap_err();
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
