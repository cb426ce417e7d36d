//! The validated, resolved form of a pipeline file: container names, env, ports, volumes,
//! health checks and the start order. Everything `flowctl run` starts, supervises and tears
//! down is read from a [`RunPlan`]; `flowctl validate` builds one and stops there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::VolumeMount;
use crate::spec::{self, ComponentSpec, PipelineFile};

/// Default wait for a component to become ready.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default SIGTERM-to-SIGKILL grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Restarts allowed by a bare `restart: on-failure`.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// The most restarts `on-failure:N` may ask for.
const MAX_RESTARTS_LIMIT: u32 = 100;
/// The network's name without `--project`.
pub const DEFAULT_NETWORK: &str = "flowctl-bridge";
/// The gRPC services flowctl can verify (`grpc.service`).
pub const GRPC_SERVICES: &[&str] = &[
    "raw_ledger_service.RawLedgerService",
    "token_transfer_service.EventService",
];

/// What flowctl does when a component's container exits non-zero (`restart:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// The run fails (the default).
    #[default]
    Never,
    /// A fresh container from the same spec, at most `max` times in the run.
    OnFailure { max: u32 },
}

impl RestartPolicy {
    /// Parses `no`, `on-failure` or `on-failure:N`; the error is the field's problem.
    fn parse(text: &str) -> Result<RestartPolicy, String> {
        let expected = "must be `no`, `on-failure` or `on-failure:N`";
        match text.split_once(':') {
            None if text == "no" => Ok(RestartPolicy::Never),
            None if text == "on-failure" => Ok(RestartPolicy::OnFailure {
                max: DEFAULT_MAX_RESTARTS,
            }),
            None if text == "always" || text == "unless-stopped" => Err(format!(
                "`{text}` is not supported: a pipeline ends when its sinks finish; {expected}"
            )),
            Some(("on-failure", count)) => match count.parse::<u32>() {
                Ok(max) if (1..=MAX_RESTARTS_LIMIT).contains(&max) => {
                    Ok(RestartPolicy::OnFailure { max })
                }
                _ => Err(format!(
                    "`{text}`: N must be a whole number from 1 to {MAX_RESTARTS_LIMIT}"
                )),
            },
            _ => Err(format!("`{text}` {expected}")),
        }
    }

    /// How many restarts are allowed in a run.
    pub fn max_restarts(self) -> u32 {
        match self {
            RestartPolicy::Never => 0,
            RestartPolicy::OnFailure { max } => max,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::Never => f.write_str("no"),
            RestartPolicy::OnFailure { max } => write!(f, "on-failure:{max}"),
        }
    }
}

/// What a component is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Processor,
    Sink,
}

impl Role {
    /// The singular word used in `type:` and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Processor => "processor",
            Role::Sink => "sink",
        }
    }

    fn list(self) -> &'static str {
        match self {
            Role::Source => "sources",
            Role::Processor => "processors",
            Role::Sink => "sinks",
        }
    }
}

/// How containers and the network are named.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// `--project NAME`: containers are `NAME-<id>`, the network `NAME-bridge`.
    pub project: Option<String>,
    /// `--network NAME` overrides the network name.
    pub network: Option<String>,
    /// `--prefix`: use `metadata.name` as the project when `project` is not given.
    pub project_from_name: bool,
}

impl Naming {
    fn project_for(&self, pipeline: &str) -> Option<String> {
        self.project
            .clone()
            .or_else(|| self.project_from_name.then(|| pipeline.to_string()))
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    pub name: Option<String>,
    pub container_port: u16,
    /// Pinned; `None` lets the engine pick.
    pub host_port: Option<u16>,
    pub protocol: String,
}

/// How readiness is probed over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPlan {
    pub container_port: u16,
    pub path: String,
}

/// A gRPC contract to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcPlan {
    pub container_port: u16,
    /// One of [`GRPC_SERVICES`].
    pub service: String,
    pub start_ledger: Option<u32>,
    pub end_ledger: Option<u32>,
}

/// One component, resolved.
#[derive(Debug, Clone)]
pub struct ComponentPlan {
    pub id: String,
    pub role: Role,
    pub container_name: String,
    pub image: String,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    /// From the file (plus `HEALTH_PORT` when implied); values are secret: print keys only.
    pub env: BTreeMap<String, String>,
    pub inputs: Vec<String>,
    /// 0 for components without inputs, else 1 + the deepest input.
    pub depth: usize,
    pub ports: Vec<PortPlan>,
    pub health: Option<HealthPlan>,
    pub health_timeout: Duration,
    pub stop_grace: Duration,
    pub volumes: Vec<VolumeMount>,
    pub register: bool,
    pub grpc: Option<GrpcPlan>,
    pub restart: RestartPolicy,
}

/// A validated pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// `metadata.name`.
    pub pipeline: String,
    pub project: Option<String>,
    pub network: String,
    /// In start order: topological order of `inputs`, ties in file order.
    pub components: Vec<ComponentPlan>,
}

impl RunPlan {
    /// Components grouped by depth, in start order; each group can start in parallel once the
    /// previous groups are ready.
    pub fn levels(&self) -> Vec<Vec<&ComponentPlan>> {
        let mut levels: Vec<Vec<&ComponentPlan>> = Vec::new();
        for component in &self.components {
            if levels.len() <= component.depth {
                levels.resize_with(component.depth + 1, Vec::new);
            }
            levels[component.depth].push(component);
        }
        levels
    }

    /// The component with `id`.
    pub fn component(&self, id: &str) -> Option<&ComponentPlan> {
        self.components.iter().find(|c| c.id == id)
    }

    /// Builds and validates the plan of `file`, read from a file in `base_dir`.
    pub fn build(
        file: &PipelineFile,
        base_dir: &Path,
        naming: &Naming,
    ) -> Result<RunPlan, PlanError> {
        let naming = &Naming {
            project: naming.project_for(&file.metadata.name),
            ..naming.clone()
        };
        let mut errors = Vec::new();
        check_header(file, naming, &mut errors);

        let declared: Vec<(Role, usize, &ComponentSpec)> = [
            (Role::Source, &file.spec.sources),
            (Role::Processor, &file.spec.processors),
            (Role::Sink, &file.spec.sinks),
        ]
        .into_iter()
        .flat_map(|(role, list)| list.iter().enumerate().map(move |(i, c)| (role, i, c)))
        .collect();
        if declared.is_empty() {
            errors.push("spec: the pipeline has no components (sources, processors, sinks)".into());
        }

        let mut seen: HashMap<&str, String> = HashMap::new();
        for (role, index, component) in &declared {
            let at = format!("spec.{}[{index}]", role.list());
            if let Some(first) = seen.insert(component.id.as_str(), at.clone()) {
                errors.push(format!(
                    "{at}: id: `{}` is already used by {first}",
                    component.id
                ));
            }
        }
        let ids: Vec<&str> = declared.iter().map(|(_, _, c)| c.id.as_str()).collect();

        let mut components = Vec::new();
        for (role, index, spec) in &declared {
            let at = if spec.id.is_empty() {
                format!("spec.{}[{index}]", role.list())
            } else {
                format!("component `{}`", spec.id)
            };
            let mut problems = Vec::new();
            let component = resolve(*role, spec, &ids, base_dir, naming, &mut problems);
            errors.extend(problems.into_iter().map(|p| format!("{at}: {p}")));
            components.push(component);
        }
        check_pinned_ports(&components, &mut errors);

        let order = match start_order(&components) {
            Ok(order) => order,
            Err(cycle) => {
                errors.push(format!(
                    "inputs: the pipeline has a cycle: {}",
                    cycle.join(" → ")
                ));
                (0..components.len()).collect()
            }
        };
        if !errors.is_empty() {
            return Err(PlanError { errors });
        }

        let mut ordered: Vec<ComponentPlan> =
            order.iter().map(|&i| components[i].clone()).collect();
        let mut depth: HashMap<String, usize> = HashMap::new();
        for component in &mut ordered {
            component.depth = component
                .inputs
                .iter()
                .filter_map(|input| depth.get(input))
                .map(|d| d + 1)
                .max()
                .unwrap_or(0);
            depth.insert(component.id.clone(), component.depth);
        }

        Ok(RunPlan {
            pipeline: file.metadata.name.clone(),
            project: naming.project.clone(),
            network: naming
                .network
                .clone()
                .unwrap_or_else(|| match &naming.project {
                    Some(project) => format!("{project}-bridge"),
                    None => DEFAULT_NETWORK.to_string(),
                }),
            components: ordered,
        })
    }
}

/// Loads, parses and validates a pipeline file.
pub fn load(path: &Path, naming: &Naming) -> Result<RunPlan, anyhow::Error> {
    let file = spec::load(path)?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    RunPlan::build(&file, base_dir, naming).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Everything wrong with a pipeline file, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub errors: Vec<String>,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} problems:", many.len())?;
                for error in many {
                    write!(f, "\n  - {error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PlanError {}

/// Names of containers, networks and labels: what Docker accepts for a container name.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 63
}

fn check_header(file: &PipelineFile, naming: &Naming, errors: &mut Vec<String>) {
    if file.api_version != "flowctl/v1" {
        errors.push(format!(
            "apiVersion: `{}` is not supported (use `flowctl/v1`)",
            file.api_version
        ));
    }
    if file.kind != "Pipeline" {
        errors.push(format!(
            "kind: `{}` is not supported (use `Pipeline`)",
            file.kind
        ));
    }
    if !is_valid_name(&file.metadata.name) {
        errors.push(format!(
            "metadata.name: `{}` must be 1-63 letters, digits, `_`, `.` or `-`, starting with a \
             letter or digit",
            file.metadata.name
        ));
    }
    if let Some(driver) = &file.spec.driver {
        if driver != "docker" {
            errors.push(format!(
                "spec.driver: `{driver}` is not supported (flowctl runs containers; use \
                 `docker`, and `--docker-bin podman` for Podman)"
            ));
        }
    }
    if file.spec.pipelines.is_some() {
        errors.push("spec.pipelines: nested pipelines are not supported".into());
    }
    if file.spec.config.is_some() {
        errors.push("spec.config: is not supported; pass settings to components with `env`".into());
    }
    for (flag, value) in [
        ("--project", &naming.project),
        ("--network", &naming.network),
    ] {
        if let Some(value) = value {
            if !is_valid_name(value) {
                errors.push(format!(
                    "{flag}: `{value}` must be 1-63 letters, digits, `_`, `.` or `-`"
                ));
            }
        }
    }
}

fn resolve(
    role: Role,
    spec: &ComponentSpec,
    ids: &[&str],
    base_dir: &Path,
    naming: &Naming,
    problems: &mut Vec<String>,
) -> ComponentPlan {
    if spec.id.is_empty() {
        problems.push("id: must not be empty".into());
    } else if !is_valid_name(&spec.id) {
        problems.push(format!(
            "id: `{}` must be 1-63 letters, digits, `_`, `.` or `-`, starting with a letter or \
             digit (it becomes a container name and a DNS name)",
            spec.id
        ));
    }
    if let Some(kind) = &spec.kind {
        if kind != role.as_str() {
            problems.push(format!(
                "type: `{kind}` does not match the list it is in (spec.{})",
                role.list()
            ));
        }
    }
    let image = spec.image.clone().unwrap_or_default();
    if image.trim().is_empty() {
        problems.push("image: is required".into());
    } else if image.starts_with('-') || image.chars().any(char::is_whitespace) {
        problems.push(format!("image: `{image}` is not an image reference"));
    }
    for field in spec.unsupported_fields() {
        let hint = if field == "restart_policy" {
            " (`restart: on-failure:N` restarts a failing component)"
        } else {
            ""
        };
        problems.push(format!(
            "{field}: is an upstream flowctl field this flowctl does not support{hint}"
        ));
    }
    let restart = match spec.restart.as_deref().map(RestartPolicy::parse) {
        None => RestartPolicy::Never,
        Some(Ok(policy)) => policy,
        Some(Err(problem)) => {
            problems.push(format!("restart: {problem}"));
            RestartPolicy::Never
        }
    };
    if let Some(replicas) = spec.replicas {
        if replicas != 1 {
            problems.push(format!(
                "replicas: {replicas} is not supported (each component runs once)"
            ));
        }
    }

    let mut inputs = Vec::new();
    for input in &spec.inputs {
        if input == &spec.id {
            problems.push(format!("inputs: `{input}` names the component itself"));
        } else if !ids.contains(&input.as_str()) {
            let hint = spec::nearest(input, ids)
                .map(|best| format!(" (did you mean `{best}`?)"))
                .unwrap_or_default();
            problems.push(format!("inputs: unknown component `{input}`{hint}"));
        } else if inputs.contains(input) {
            problems.push(format!("inputs: `{input}` is listed twice"));
        } else {
            inputs.push(input.clone());
        }
    }

    let mut env = BTreeMap::new();
    for (key, value) in &spec.env {
        let key_ok = !key.is_empty()
            && !key.contains('=')
            && !key.chars().any(|c| c.is_whitespace() || c.is_control());
        if !key_ok {
            problems.push(format!("env: `{key}` is not a valid variable name"));
        } else if value.0.contains(['\n', '\r', '\0']) {
            // Values travel in an env file (never on a command line), one per line.
            problems.push(format!(
                "env.{key}: the value contains a line break, which cannot be passed to a container"
            ));
        }
        env.insert(key.clone(), value.0.clone());
    }

    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "tcp".into());
        if protocol != "tcp" && protocol != "udp" {
            problems.push(format!(
                "ports[{i}].protocol: `{protocol}` must be `tcp` or `udp`"
            ));
        }
        if port.container_port == 0 {
            problems.push(format!("ports[{i}].containerPort: must be 1-65535"));
        }
        if port.host_port == Some(0) {
            problems.push(format!(
                "ports[{i}].hostPort: must be 1-65535 (leave it out to let the engine pick)"
            ));
        }
        if ports
            .iter()
            .any(|p: &PortPlan| p.container_port == port.container_port && p.protocol == protocol)
        {
            problems.push(format!(
                "ports[{i}].containerPort: {} is declared twice",
                port.container_port
            ));
        }
        ports.push(PortPlan {
            name: port.name.clone(),
            container_port: port.container_port,
            host_port: port.host_port.filter(|p| *p != 0),
            protocol,
        });
    }

    let health = resolve_health(spec, &ports, problems);
    if let Some(health) = &health {
        publish(&mut ports, health.container_port, "health");
        env.entry("HEALTH_PORT".into())
            .or_insert_with(|| health.container_port.to_string());
    }

    let grpc = spec.grpc.as_ref().map(|grpc| {
        if grpc.port == 0 {
            problems.push("grpc.port: must be 1-65535".into());
        }
        if !GRPC_SERVICES.contains(&grpc.service.as_str()) {
            let hint = spec::nearest(&grpc.service, GRPC_SERVICES)
                .map(|best| format!("did you mean `{best}`? "))
                .unwrap_or_default();
            problems.push(format!(
                "grpc.service: unknown service `{}` ({hint}known: {})",
                grpc.service,
                GRPC_SERVICES.join(", ")
            ));
        }
        let (start_ledger, end_ledger) = match &grpc.verify {
            Some(verify) => {
                if verify.start_ledger == 0 {
                    problems.push("grpc.verify.start_ledger: must be at least 1".into());
                }
                if let Some(end) = verify.end_ledger {
                    if end != 0 && end < verify.start_ledger {
                        problems.push(format!(
                            "grpc.verify.end_ledger: {end} is before start_ledger {}",
                            verify.start_ledger
                        ));
                    }
                }
                (Some(verify.start_ledger), verify.end_ledger)
            }
            None => (None, None),
        };
        GrpcPlan {
            container_port: grpc.port,
            service: grpc.service.clone(),
            start_ledger,
            end_ledger,
        }
    });
    if let Some(grpc) = &grpc {
        publish(&mut ports, grpc.container_port, "grpc");
    }

    let mut volumes = Vec::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        let field = format!("volumes[{i}]");
        for (name, value) in [
            ("host_path", &volume.host_path),
            ("container_path", &volume.container_path),
        ] {
            if value.is_empty() {
                problems.push(format!("{field}.{name}: must not be empty"));
            } else if value.contains([':', ',', '\n', '\0']) {
                problems.push(format!(
                    "{field}.{name}: `{value}` must not contain `:`, `,` or line breaks"
                ));
            }
        }
        if !volume.container_path.starts_with('/') {
            problems.push(format!(
                "{field}.container_path: `{}` must be an absolute path",
                volume.container_path
            ));
        }
        if volume.container_path.split('/').any(|part| part == "..") {
            problems.push(format!(
                "{field}.container_path: `{}` must not contain `..`",
                volume.container_path
            ));
        }
        let host_path = resolve_host_path(base_dir, &volume.host_path);
        if !volume.host_path.is_empty() && !host_path.exists() {
            problems.push(format!(
                "{field}.host_path: `{}` does not exist",
                host_path.display()
            ));
        } else if let Some(why) = refused_host_path(&host_path) {
            problems.push(format!(
                "{field}.host_path: `{}` {why}",
                host_path.display()
            ));
        }
        volumes.push(VolumeMount {
            host_path,
            container_path: volume.container_path.clone(),
            readonly: volume.readonly.unwrap_or(true),
        });
    }

    let health_timeout = spec
        .health_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    if health_timeout.is_zero() {
        problems.push("health_timeout: must be greater than zero".into());
    }
    let (entrypoint, args) = match spec.command.split_first() {
        Some((first, rest)) => (
            Some(first.clone()),
            rest.iter().chain(&spec.args).cloned().collect(),
        ),
        None => (None, spec.args.clone()),
    };

    ComponentPlan {
        id: spec.id.clone(),
        role,
        container_name: match &naming.project {
            Some(project) => format!("{project}-{}", spec.id),
            None => spec.id.clone(),
        },
        image,
        entrypoint,
        args,
        env,
        inputs,
        depth: 0,
        ports,
        health,
        health_timeout,
        stop_grace: spec
            .stop_grace_period
            .map(|d| d.0)
            .unwrap_or(DEFAULT_STOP_GRACE),
        volumes,
        register: spec.register,
        grpc,
        restart,
    }
}

/// `health_port` (path `health_check`, default `/health`); else a port named `health`; else no
/// HTTP check (ready when running).
fn resolve_health(
    spec: &ComponentSpec,
    ports: &[PortPlan],
    problems: &mut Vec<String>,
) -> Option<HealthPlan> {
    let path = spec
        .health_check
        .clone()
        .unwrap_or_else(|| "/health".into());
    if !path.starts_with('/') {
        problems.push(format!(
            "health_check: `{path}` must be an HTTP path starting with `/`"
        ));
    }
    let named = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("health"))
        .map(|p| p.container_port);
    let container_port = match (spec.health_port, named) {
        (Some(0), _) => {
            problems.push("health_port: must be 1-65535".into());
            return None;
        }
        (Some(port), _) => port,
        (None, Some(port)) => port,
        (None, None) if spec.health_check.is_some() => {
            problems.push(
                "health_check: needs `health_port` (or a port named `health`) to probe".into(),
            );
            return None;
        }
        (None, None) => return None,
    };
    Some(HealthPlan {
        container_port,
        path,
    })
}

/// Adds `container_port` to the published ports unless declared.
fn publish(ports: &mut Vec<PortPlan>, container_port: u16, name: &str) {
    if container_port != 0
        && !ports
            .iter()
            .any(|p| p.container_port == container_port && p.protocol == "tcp")
    {
        ports.push(PortPlan {
            name: Some(name.into()),
            container_port,
            host_port: None,
            protocol: "tcp".into(),
        });
    }
}

fn resolve_host_path(base_dir: &Path, host_path: &str) -> PathBuf {
    let path = Path::new(host_path);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    };
    // Docker needs an absolute path; canonicalize also resolves `..` for the messages.
    joined.canonicalize().unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|cwd| cwd.join(&joined))
            .unwrap_or(joined)
    })
}

/// Host paths no component may mount, whatever the file says: absolute and `..` paths are
/// allowed (data lives where it lives), but not the whole host, the kernel's and devices' file
/// systems, or a socket (the engine's socket would give the container control of the host).
fn refused_host_path(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if path == Path::new("/") {
        return Some("is the host's root folder; mount only the data the component needs");
    }
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|system| path.starts_with(system))
    {
        return Some("is a kernel or device file system, which flowctl does not mount");
    }
    let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket.then_some(
        "is a socket (such as the container engine's), which would give the container control \
         of a host service",
    )
}

fn check_pinned_ports(components: &[ComponentPlan], errors: &mut Vec<String>) {
    let mut pinned: BTreeMap<(u16, &str), &str> = BTreeMap::new();
    for component in components {
        for port in &component.ports {
            if let Some(host_port) = port.host_port {
                if let Some(first) =
                    pinned.insert((host_port, port.protocol.as_str()), &component.id)
                {
                    errors.push(format!(
                        "component `{}`: ports: hostPort {host_port} is also pinned by component \
                         `{first}`",
                        component.id
                    ));
                }
            }
        }
    }
}

/// Kahn's algorithm, always taking the earliest ready component in file order. On a cycle,
/// returns the ids along one cycle (first id repeated at the end).
fn start_order(components: &[ComponentPlan]) -> Result<Vec<usize>, Vec<String>> {
    let index: HashMap<&str, usize> = components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = components
        .iter()
        .map(|c| {
            c.inputs
                .iter()
                .filter_map(|i| index.get(i.as_str()).copied())
                .collect()
        })
        .collect();
    let mut placed = vec![false; components.len()];
    let mut order = Vec::new();
    while order.len() < components.len() {
        let next =
            (0..components.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(find_cycle(components, &deps, &placed)),
        }
    }
    Ok(order)
}

fn find_cycle(components: &[ComponentPlan], deps: &[Vec<usize>], placed: &[bool]) -> Vec<String> {
    // Every unplaced component waits on another unplaced one; walking those edges must revisit
    // a component, and the walk from its first visit is a cycle.
    let Some(mut current) = (0..components.len()).find(|&i| !placed[i]) else {
        return Vec::new();
    };
    let mut path: Vec<usize> = Vec::new();
    let mut on_path = BTreeSet::new();
    while on_path.insert(current) {
        path.push(current);
        match deps[current].iter().find(|&&d| !placed[d]) {
            Some(&next) => current = next,
            None => break,
        }
    }
    let start = path.iter().position(|&i| i == current).unwrap_or(0);
    // Inputs point upstream; print the cycle in data-flow order, from its first component in
    // file order.
    let mut members: Vec<usize> = path[start..].iter().rev().copied().collect();
    if let Some(first) = (0..members.len()).min_by_key(|&i| members[i]) {
        members.rotate_left(first);
    }
    let mut cycle: Vec<String> = members.iter().map(|&i| components[i].id.clone()).collect();
    if let Some(first) = cycle.first().cloned() {
        cycle.push(first);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Result<RunPlan, PlanError> {
        let file = spec::parse(yaml, "test.yaml").unwrap();
        RunPlan::build(&file, Path::new("."), &Naming::default())
    }

    fn pipeline(components: &str) -> String {
        format!(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: demo}}\nspec:\n{components}"
        )
    }

    const DIAMOND: &str = "
  sources:
    - {id: a, image: img}
    - {id: b, image: img}
  processors:
    - {id: late, image: img, inputs: [mid]}
    - {id: mid, image: img, inputs: [a, b]}
    - {id: solo, image: img, inputs: [b]}
  sinks:
    - {id: sink, image: img, inputs: [late, solo]}
";

    #[test]
    fn start_order_is_topological_with_ties_in_file_order() {
        let plan = plan(&pipeline(DIAMOND)).unwrap();
        let order: Vec<&str> = plan.components.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(order, ["a", "b", "mid", "late", "solo", "sink"]);
        let levels: Vec<Vec<&str>> = plan
            .levels()
            .iter()
            .map(|l| l.iter().map(|c| c.id.as_str()).collect())
            .collect();
        assert_eq!(
            levels,
            vec![
                vec!["a", "b"],
                vec!["mid", "solo"],
                vec!["late"],
                vec!["sink"]
            ]
        );
        assert_eq!(plan.network, DEFAULT_NETWORK);
        assert_eq!(plan.components[0].container_name, "a");
    }

    #[test]
    fn cycles_are_named() {
        let err = plan(&pipeline(
            "
  processors:
    - {id: x, image: img, inputs: [z]}
    - {id: y, image: img, inputs: [x]}
    - {id: z, image: img, inputs: [y]}
",
        ))
        .unwrap_err();
        assert_eq!(
            err.errors,
            ["inputs: the pipeline has a cycle: x → y → z → x"]
        );
    }

    #[test]
    fn component_errors_name_the_component_and_field() {
        let err = plan(&pipeline(
            "
  sources:
    - {id: src, image: img, ports: [{containerPort: 8080, hostPort: 9000}]}
    - {id: src, image: img}
  processors:
    - {id: proc, inputs: [srx, proc], ports: [{containerPort: 0}]}
  sinks:
    - {id: 'bad id', image: img, ports: [{containerPort: 1, hostPort: 9000}], grpc: {port: 50051, service: token_transfer_service.EventServic}}
",
        ))
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "spec.sources[1]: id: `src` is already used by spec.sources[0]",
            "component `proc`: image: is required",
            "component `proc`: inputs: unknown component `srx` (did you mean `src`?)",
            "component `proc`: inputs: `proc` names the component itself",
            "component `proc`: ports[0].containerPort: must be 1-65535",
            "component `bad id`: id: `bad id` must be",
            "component `bad id`: grpc.service: unknown service `token_transfer_service.EventServic` (did you mean `token_transfer_service.EventService`?",
            "component `bad id`: ports: hostPort 9000 is also pinned by component `src`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn restart_policies_parse_and_bad_ones_are_named() {
        let parsed = plan(&pipeline(
            "
  sources:
    - {id: a, image: img, restart: on-failure:5}
    - {id: b, image: img, restart: on-failure}
    - {id: c, image: img, restart: 'no'}
    - {id: d, image: img}
",
        ))
        .unwrap();
        let policy = |id| parsed.component(id).unwrap().restart;
        assert_eq!(policy("a"), RestartPolicy::OnFailure { max: 5 });
        assert_eq!(policy("b").max_restarts(), DEFAULT_MAX_RESTARTS);
        assert_eq!(policy("c"), RestartPolicy::Never);
        assert_eq!(policy("d"), RestartPolicy::Never);
        assert_eq!(policy("a").to_string(), "on-failure:5");

        let err = plan(&pipeline(
            "
  sources:
    - {id: a, image: img, restart: always}
    - {id: b, image: img, restart: on-failure:0}
    - {id: c, image: img, restart: on-failure:lots}
    - {id: d, image: img, restart: sometimes}
    - {id: e, image: img, restart_policy: {condition: on-failure}}
",
        ))
        .unwrap_err()
        .to_string();
        for expected in [
            "component `a`: restart: `always` is not supported",
            "component `b`: restart: `on-failure:0`: N must be a whole number from 1 to 100",
            "component `c`: restart: `on-failure:lots`: N must be",
            "component `d`: restart: `sometimes` must be `no`, `on-failure` or `on-failure:N`",
            "component `e`: restart_policy: is an upstream flowctl field this flowctl does not \
             support (`restart: on-failure:N`",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn health_ports_are_published_and_health_port_is_set() {
        let plan = plan(&pipeline(
            "
  sources:
    - id: src
      image: img
      health_port: 8088
      grpc: {port: 50052, service: raw_ledger_service.RawLedgerService, verify: {start_ledger: 5}}
      env: {SECRET: hunter2}
  sinks:
    - {id: sink, image: img, inputs: [src], ports: [{name: health, containerPort: 9000}], health_check: /ready}
    - {id: quiet, image: img, inputs: [src], command: [/bin/tool, run], args: [--fast]}
",
        ))
        .unwrap();
        let src = plan.component("src").unwrap();
        let published: Vec<u16> = src.ports.iter().map(|p| p.container_port).collect();
        assert_eq!(published, [8088, 50052]);
        assert_eq!(src.env["HEALTH_PORT"], "8088");
        assert_eq!(src.health.as_ref().unwrap().path, "/health");
        assert_eq!(src.grpc.as_ref().unwrap().start_ledger, Some(5));
        let sink = plan.component("sink").unwrap();
        assert_eq!(
            sink.health,
            Some(HealthPlan {
                container_port: 9000,
                path: "/ready".into()
            })
        );
        let quiet = plan.component("quiet").unwrap();
        assert_eq!(quiet.health, None);
        assert_eq!(quiet.entrypoint.as_deref(), Some("/bin/tool"));
        assert_eq!(quiet.args, ["run", "--fast"]);
        assert_eq!(quiet.depth, 1);
    }

    #[test]
    fn project_prefixes_names_and_volumes_resolve_against_the_file() {
        let dir = std::env::temp_dir().join(format!("flowctl-plan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lake")).unwrap();
        let file = spec::parse(
            &pipeline(
                "
  sources:
    - id: src
      image: img
      volumes:
        - {host_path: lake, container_path: /data}
        - {host_path: ./lake, container_path: /rw, readonly: false}
        - {host_path: missing, container_path: relative}
",
            ),
            "t.yaml",
        )
        .unwrap();
        let naming = Naming {
            project: Some("p1".into()),
            ..Naming::default()
        };
        let err = RunPlan::build(&file, &dir, &naming)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("volumes[2].container_path: `relative` must be an absolute path"),
            "{err}"
        );
        assert!(
            err.contains("volumes[2].host_path: `") && err.contains("missing` does not exist"),
            "{err}"
        );

        let mut file = file;
        file.spec.sources[0].volumes.pop();
        let plan = RunPlan::build(&file, &dir, &naming).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let src = &plan.components[0];
        assert_eq!(src.container_name, "p1-src");
        assert_eq!(plan.network, "p1-bridge");
        assert!(src.volumes[0].readonly && !src.volumes[1].readonly);
        assert!(src.volumes[0].host_path.is_absolute());
        assert!(src.volumes[0].host_path.ends_with("lake"));
    }

    #[test]
    fn header_and_upstream_only_fields_are_checked() {
        let err = plan(
            "apiVersion: v2\nkind: Pipe\nmetadata: {name: 'my pipeline'}\nspec:\n  driver: kubernetes\n  sources:\n    - {id: s, image: img, type: sink, replicas: 3, secrets: []}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "apiVersion: `v2` is not supported",
            "kind: `Pipe` is not supported",
            "metadata.name: `my pipeline` must be",
            "spec.driver: `kubernetes` is not supported",
            "component `s`: type: `sink` does not match the list it is in (spec.sources)",
            "component `s`: replicas: 3 is not supported",
            "component `s`: secrets: is an upstream flowctl field",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(plan(&pipeline("  sources: []\n"))
            .unwrap_err()
            .to_string()
            .contains("no components"));
    }

    #[test]
    fn env_values_never_appear_in_errors() {
        let err = plan(&pipeline(
            "  sources:\n    - {id: s, image: img, env: {TOKEN: \"sec\\nret\", 'A B': x}}\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("env.TOKEN: the value contains a line break"),
            "{err}"
        );
        assert!(
            err.contains("env: `A B` is not a valid variable name"),
            "{err}"
        );
        assert!(!err.contains("sec"), "{err}");
    }
}
