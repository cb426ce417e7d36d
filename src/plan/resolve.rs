//! One component of the file, resolved: each concern (id, image, inputs, env, ports, health,
//! gRPC, volumes, restart) is checked and turned into its plan by a function of its own. Every
//! problem is collected (never only the first), worded as `field: what is wrong`; the caller
//! prefixes the component.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::config;
use super::driver::Driver;
use super::placement::placement;
use super::process;
use super::reference::Registry;
use super::replicas;
use super::resources::resources;
use super::secrets::{secrets, SecretTarget};
use super::{
    is_valid_name, ComponentPlan, GrpcPlan, GrpcService, HealthPlan, HealthProtocol, Naming,
    PortPlan, Protocol, RestartPolicy, Role, VolumePlan, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_STOP_GRACE,
};
use crate::contract::HEALTH_PORT;
use crate::spec::{self, ComponentSpec, ComponentType, PipelineFile};

/// What a component is resolved against.
pub(super) struct Context<'a> {
    /// Every component id of the file, for `inputs`.
    pub ids: &'a [&'a str],
    /// The pipeline file's folder, for relative `host_path`s.
    pub base_dir: &'a Path,
    pub naming: &'a Naming,
    /// Where `type: NAME@VERSION` images come from.
    pub registry: &'a Registry,
    /// `spec.config`, under each component's own.
    pub pipeline_config: &'a BTreeMap<String, serde_yaml::Value>,
    /// `spec.driver` is `process`: components without an image are processes.
    pub process_driver: bool,
    /// The directory flowctl runs in: where process components' relative commands are.
    pub cwd: &'a Path,
}

/// Problems found so far, each `field: what is wrong`.
type Problems = Vec<String>;

pub(super) fn component(
    role: Role,
    spec: &ComponentSpec,
    context: &Context,
    problems: &mut Problems,
    notes: &mut Vec<String>,
) -> ComponentPlan {
    // In the order the fields are usually written, so the problems read in that order too.
    check_id(spec, problems);
    check_type(role, spec, problems);
    let is_process = process::is_process(spec, context.process_driver);
    let image = if is_process {
        String::new()
    } else {
        image(spec, context.registry, problems)
    };
    let process = is_process.then(|| process::plan(spec, context.cwd, problems));
    if spec.working_dir.is_some() && !is_process {
        problems.push(
            "working_dir: only a process component has one (spec.driver `process`, no image)"
                .into(),
        );
    }
    let restart = restart(spec, problems);
    let inputs = references("inputs", &spec.inputs, spec, context.ids, problems);
    let depends_on = references("depends_on", &spec.depends_on, spec, context.ids, problems);
    if let Some(both) = depends_on.iter().find(|d| inputs.contains(d)) {
        problems.push(format!(
            "depends_on: `{both}` is an input already (inputs start first anyway)"
        ));
    }
    let mut env = env(spec, problems);
    let config = config::merged(context.pipeline_config, &spec.config, problems);
    let config_env = config::apply(&config, &BTreeMap::new(), &mut env);
    let secrets = secrets(&spec.secrets, context.base_dir, problems, notes);
    for secret in &secrets {
        if let SecretTarget::Env(var) = &secret.target {
            if env.contains_key(var) {
                problems.push(format!(
                    "secrets: `{}` sets `{var}`, which `env` or `config` sets too",
                    secret.name
                ));
            }
        }
    }
    let resources = resources(spec.resources.as_ref(), problems);
    let placement = placement(spec.placement.as_ref(), problems);
    let mut ports = ports(spec, problems);
    let mut health = health(spec, &ports, problems);
    let mut grpc = grpc(spec, problems);
    // Upstream's shape: a process component without `grpc:` is a flowctl.v1 one of its role,
    // which registers (its registration also proves that what answers on its ports is it).
    let upstream_shape = is_process && spec.grpc.is_none() && role != Role::Pipeline;
    if is_process {
        process::v1_shape(role, &env, &mut grpc, &mut health, problems);
    }
    // HEALTH_PORT tells a component where to serve HTTP health; a gRPC probe needs none. (A
    // process's port 0 is given when the run starts.)
    if let Some(health) = health
        .as_ref()
        .filter(|h| h.protocol == HealthProtocol::Http && h.container_port != 0)
    {
        publish(&mut ports, health.container_port, "health");
        env.entry(HEALTH_PORT.into())
            .or_insert_with(|| health.container_port.to_string());
    }
    if let Some(grpc) = &grpc {
        publish(&mut ports, grpc.container_port, "grpc");
        relayed_restart(grpc.service, restart, problems);
    }
    if is_process {
        // A process listens on this machine's ports themselves: two cannot share one.
        for port in &mut ports {
            port.host_port = Some(port.container_port);
        }
    }
    let volumes = volumes(spec, context.base_dir, problems);
    let health_timeout = spec
        .health_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    if health_timeout.is_zero() {
        problems.push("health_timeout: must be greater than zero".into());
    }
    let (entrypoint, args) = match spec.command.split_first() {
        _ if is_process => (None, Vec::new()),
        Some((first, rest)) => (
            Some(first.clone()),
            rest.iter().chain(&spec.args).cloned().collect(),
        ),
        None => (None, spec.args.clone()),
    };

    let mut component = ComponentPlan {
        id: spec.id.clone(),
        role,
        container_name: match &context.naming.project {
            Some(project) => format!("{project}-{}", spec.id),
            None => spec.id.clone(),
        },
        image,
        entrypoint,
        args,
        env,
        inputs,
        depends_on,
        depth: 0,
        ports,
        health,
        health_timeout,
        stop_grace: spec
            .stop_grace_period
            .map(|d| d.0)
            .unwrap_or(DEFAULT_STOP_GRACE),
        volumes,
        register: spec.register.unwrap_or(upstream_shape),
        grpc,
        restart,
        reference: match &spec.kind {
            Some(reference @ ComponentType::Reference { .. }) => Some(reference.to_string()),
            _ => None,
        },
        config,
        own_config_keys: spec.config.keys().cloned().collect(),
        config_env,
        input_event_types: spec.input_event_types.clone(),
        output_event_types: spec.output_event_types.clone(),
        resources,
        placement,
        secrets,
        replicas: 1,
        replica_of: None,
        process,
    };
    component.replicas = replicas::count(spec.replicas, &component, problems);
    component
}

/// `apiVersion`, `kind`, `metadata.name`, the pipeline-wide fields and the naming flags.
/// Returns the driver (the default one when the field is wrong, which is then a problem).
pub(super) fn check_header(file: &PipelineFile, naming: &Naming, errors: &mut Problems) -> Driver {
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
    let driver = match file.spec.driver.as_deref().map(Driver::parse) {
        None => Driver::Docker,
        Some(Ok(driver)) => driver,
        Some(Err(problem)) => {
            errors.push(format!("spec.driver: {problem}"));
            Driver::Docker
        }
    };
    for (flag, value) in [
        ("--project", &naming.project),
        ("--network", &naming.network),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !is_valid_name(v)) {
            errors.push(format!(
                "{flag}: `{value}` must be 1-63 letters, digits, `_`, `.` or `-`"
            ));
        }
    }
    driver
}

fn check_id(spec: &ComponentSpec, problems: &mut Problems) {
    if spec.id.is_empty() {
        problems.push("id: must not be empty".into());
    } else if !is_valid_name(&spec.id) {
        problems.push(format!(
            "id: `{}` must be 1-63 letters, digits, `_`, `.` or `-`, starting with a letter or \
             digit (it becomes a container name and a DNS name)",
            spec.id
        ));
    }
}

fn check_type(role: Role, spec: &ComponentSpec, problems: &mut Problems) {
    if let Some(ComponentType::Role(kind)) = spec
        .kind
        .as_ref()
        .filter(|k| matches!(k, ComponentType::Role(kind) if kind != role.as_str()))
    {
        problems.push(format!(
            "type: `{kind}` does not match the list it is in (spec.{})",
            role.list()
        ));
    }
}

/// `image:`, else the image a `type: NAME@VERSION` reference names.
fn image(spec: &ComponentSpec, registry: &Registry, problems: &mut Problems) -> String {
    let referenced = match &spec.kind {
        Some(ComponentType::Reference { org, name, version }) => {
            Some(registry.image(org.as_deref(), name, version))
        }
        _ => None,
    };
    let image = spec.image.clone().or(referenced).unwrap_or_default();
    if image.trim().is_empty() {
        problems.push("image: is required (or a component reference `type: NAME@VERSION`)".into());
    } else if image.starts_with('-') || image.chars().any(char::is_whitespace) {
        problems.push(format!("image: `{image}` is not an image reference"));
    }
    image
}

/// `restart`, or upstream's `restart_policy` (also in Kubernetes' spelling); not both.
fn restart(spec: &ComponentSpec, problems: &mut Problems) -> RestartPolicy {
    let (field, text) = match (&spec.restart, &spec.restart_policy) {
        (Some(_), Some(_)) => {
            problems
                .push("restart_policy: `restart` is set too; they mean the same, keep one".into());
            return RestartPolicy::Never;
        }
        (Some(text), None) => ("restart", text.clone()),
        (None, Some(text)) => (
            "restart_policy",
            match text.as_str() {
                "never" | "Never" => "no".to_string(),
                "OnFailure" => "on-failure".to_string(),
                "Always" => "always".to_string(),
                other => other.to_string(),
            },
        ),
        (None, None) => return RestartPolicy::Never,
    };
    match RestartPolicy::parse(&text) {
        Ok(policy) => policy,
        Err(problem) => {
            problems.push(format!("{field}: {problem}"));
            RestartPolicy::Never
        }
    }
}

/// A relayed processor or consumer (flowctl.v1) cannot be restarted without losing events:
/// the protocol has no per-event acknowledgement, so what was in flight to it when it died
/// cannot be accounted for. (A relayed source can: the relay resumes its stream from the last
/// event's `stellar_cursor`.)
fn relayed_restart(service: GrpcService, restart: RestartPolicy, problems: &mut Problems) {
    if restart == RestartPolicy::Never
        || !matches!(service, GrpcService::V1Processor | GrpcService::V1Consumer)
    {
        return;
    }
    problems.push(format!(
        "restart: `{restart}` is not supported on a relayed {} ({service}): events in flight \
         to it when it failed cannot be accounted for (flowctl.v1 has no per-event \
         acknowledgement), so a restart would lose events silently; remove `restart:` (the \
         run then fails naming the broken edge; relayed sources may restart)",
        if service == GrpcService::V1Processor {
            "processor"
        } else {
            "consumer"
        }
    ));
}

/// `inputs` or `depends_on`: ids of other components of the file, each once.
fn references(
    field: &str,
    listed: &[String],
    spec: &ComponentSpec,
    ids: &[&str],
    problems: &mut Problems,
) -> Vec<String> {
    let mut valid = Vec::new();
    for id in listed {
        if id == &spec.id {
            problems.push(format!("{field}: `{id}` names the component itself"));
        } else if !ids.contains(&id.as_str()) {
            let hint = spec::nearest(id, ids)
                .map(|best| format!(" (did you mean `{best}`?)"))
                .unwrap_or_default();
            problems.push(format!("{field}: unknown component `{id}`{hint}"));
        } else if valid.contains(id) {
            problems.push(format!("{field}: `{id}` is listed twice"));
        } else {
            valid.push(id.clone());
        }
    }
    valid
}

/// The file's env; values are secret, so problems name keys only.
fn env(spec: &ComponentSpec, problems: &mut Problems) -> BTreeMap<String, String> {
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
    env
}

fn ports(spec: &ComponentSpec, problems: &mut Problems) -> Vec<PortPlan> {
    let mut ports: Vec<PortPlan> = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let protocol = match port.protocol.as_deref().map(Protocol::from_name) {
            None => Protocol::Tcp,
            Some(Some(protocol)) => protocol,
            Some(None) => {
                problems.push(format!(
                    "ports[{i}].protocol: `{}` must be `tcp` or `udp`",
                    port.protocol.as_deref().unwrap_or_default()
                ));
                Protocol::Tcp
            }
        };
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
            .any(|p| p.container_port == port.container_port && p.protocol == protocol)
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
    ports
}

/// Adds `container_port` to the published ports unless declared.
pub(super) fn publish(ports: &mut Vec<PortPlan>, container_port: u16, name: &str) {
    let declared = ports
        .iter()
        .any(|p| p.container_port == container_port && p.protocol == Protocol::Tcp);
    if container_port != 0 && !declared {
        ports.push(PortPlan {
            name: Some(name.into()),
            container_port,
            host_port: None,
            protocol: Protocol::Tcp,
        });
    }
}

/// `health_port` (path `health_check`, default `/health`); else a port named `health`; else no
/// HTTP check (ready when running).
fn health(spec: &ComponentSpec, ports: &[PortPlan], problems: &mut Problems) -> Option<HealthPlan> {
    if let Some(grpc_health) = grpc_health(spec, ports, problems) {
        return grpc_health;
    }
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
        protocol: HealthProtocol::Http,
    })
}

/// `health_check: grpc` (on `health_port`, else `grpc.port`), or a flowctl.v1 consumer with no
/// HTTP health port at all: a `grpc.health.v1.Health` probe. `None`: probe over HTTP as usual.
fn grpc_health(
    spec: &ComponentSpec,
    ports: &[PortPlan],
    problems: &mut Problems,
) -> Option<Option<HealthPlan>> {
    let declared = spec.health_check.as_deref() == Some("grpc");
    let v1_consumer = spec
        .grpc
        .as_ref()
        .is_some_and(|g| g.service == GrpcService::V1Consumer.name());
    let http_port =
        spec.health_port.is_some() || ports.iter().any(|p| p.name.as_deref() == Some("health"));
    let v1_default = v1_consumer && spec.health_check.is_none() && !http_port;
    if !(declared || v1_default) {
        return None;
    }
    let port = spec.health_port.or(spec.grpc.as_ref().map(|g| g.port));
    match port.filter(|port| *port != 0) {
        Some(container_port) => Some(Some(HealthPlan {
            container_port,
            path: String::new(),
            protocol: HealthProtocol::Grpc,
        })),
        None => {
            problems
                .push("health_check: grpc needs `grpc.port` (or `health_port`) to probe".into());
            Some(None)
        }
    }
}

fn grpc(spec: &ComponentSpec, problems: &mut Problems) -> Option<GrpcPlan> {
    let grpc = spec.grpc.as_ref()?;
    if grpc.port == 0 {
        problems.push("grpc.port: must be 1-65535".into());
    }
    let service = GrpcService::from_name(&grpc.service);
    if service.is_none() {
        let names = GrpcService::ALL.map(GrpcService::name);
        let hint = spec::nearest(&grpc.service, &names)
            .map(|best| format!("did you mean `{best}`? "))
            .unwrap_or_default();
        problems.push(format!(
            "grpc.service: unknown service `{}` ({hint}known: {})",
            grpc.service,
            names.join(", ")
        ));
    }
    let (start_ledger, end_ledger) = match &grpc.verify {
        Some(verify) => {
            if verify.start_ledger == 0 {
                problems.push("grpc.verify.start_ledger: must be at least 1".into());
            }
            if let Some(end) = verify.end_ledger.filter(|end| *end != 0) {
                if end < verify.start_ledger {
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
    Some(GrpcPlan {
        container_port: grpc.port,
        // An unknown service is already a problem; the placeholder never reaches a run.
        service: service.unwrap_or(GrpcService::RawLedgers),
        start_ledger,
        end_ledger,
    })
}

fn volumes(spec: &ComponentSpec, base_dir: &Path, problems: &mut Problems) -> Vec<VolumePlan> {
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
        volumes.push(VolumePlan {
            host_path,
            container_path: volume.container_path.clone(),
            readonly: volume.readonly.unwrap_or(true),
        });
    }
    volumes
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

/// A host port can be pinned by one component only.
pub(super) fn check_pinned_ports(components: &[ComponentPlan], errors: &mut Problems) {
    let mut pinned: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
    for component in components {
        for port in &component.ports {
            let Some(host_port) = port.host_port else {
                continue;
            };
            if let Some(first) = pinned.insert((host_port, port.protocol), &component.id) {
                errors.push(format!(
                    "component `{}`: ports: hostPort {host_port} is also pinned by component \
                     `{first}`",
                    component.id
                ));
            }
        }
    }
}
