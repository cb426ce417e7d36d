//! The validated, resolved form of a pipeline file: container names, env, ports, volumes,
//! health checks and the start order. Everything `flowctl run` starts, supervises and tears
//! down is read from a [`RunPlan`]; `flowctl validate` builds one and stops there.
//!
//! This is the domain: it knows the file ([`crate::spec`]) and nothing of the engine. Each
//! concept has one type here ([`Role`], [`Protocol`], [`GrpcService`], [`RestartPolicy`]),
//! shared by run, status, translate and the control plane.

mod config;
mod driver;
mod metadata;
mod order;
mod placement;
mod process;
mod reference;
mod replicas;
mod resolve;
mod resources;
mod secrets;

pub use config::env_name as config_env_name;
pub use driver::Driver;
pub use metadata::{ComponentMetadata, ConfigField};
pub use placement::PlacementPlan;
pub use process::{parse_port, ProcessPlan, PORT_VARIABLES};
pub use reference::Registry;
pub use replicas::MAX_REPLICAS;
pub use resources::ResourcePlan;
pub use secrets::{SecretPlan, SecretTarget};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Names of containers, networks and labels: what Docker accepts for a container name.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 63
}

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

/// What a component is in the pipeline: which list of the file it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Processor,
    Sink,
    /// A whole-pipeline job of `spec.pipelines`: outside the data graph, it starts after what
    /// it `depends_on` and must finish, like a sink.
    Pipeline,
}

impl Role {
    /// The singular word used in `type:` and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Processor => "processor",
            Role::Sink => "sink",
            Role::Pipeline => "pipeline",
        }
    }

    /// The inverse of [`Role::as_str`].
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::Source, Role::Processor, Role::Sink, Role::Pipeline]
            .into_iter()
            .find(|role| role.as_str() == name)
    }

    /// Whether a run is complete only once the components of this role have finished (sinks
    /// and whole-pipeline jobs); the others serve them.
    pub fn must_finish(self) -> bool {
        matches!(self, Role::Sink | Role::Pipeline)
    }

    /// The list of the file it is in (`spec.sources`, ...).
    fn list(self) -> &'static str {
        match self {
            Role::Source => "sources",
            Role::Processor => "processors",
            Role::Sink => "sinks",
            Role::Pipeline => "pipelines",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as the file, the engine and Compose write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The inverse of [`Protocol::as_str`].
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gRPC services flowctl knows how to verify (the `grpc.service` pipeline field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcService {
    /// `raw_ledger_service.RawLedgerService`: `StreamRawLedgers`.
    RawLedgers,
    /// `token_transfer_service.EventService`: `GetTTPEvents`.
    TokenTransferEvents,
    /// `flowctl.v1.SourceService`: `StreamEvents`; flowctl relays its events.
    V1Source,
    /// `flowctl.v1.ProcessorService`: `Process` (bidirectional); flowctl relays in and out.
    V1Processor,
    /// `flowctl.v1.ConsumerService`: `Consume`; flowctl relays into it.
    V1Consumer,
}

impl GrpcService {
    /// Every known service, for error messages.
    pub const ALL: [GrpcService; 5] = [
        GrpcService::RawLedgers,
        GrpcService::TokenTransferEvents,
        GrpcService::V1Source,
        GrpcService::V1Processor,
        GrpcService::V1Consumer,
    ];

    /// The fully qualified service name, as written in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            GrpcService::RawLedgers => "raw_ledger_service.RawLedgerService",
            GrpcService::TokenTransferEvents => "token_transfer_service.EventService",
            GrpcService::V1Source => "flowctl.v1.SourceService",
            GrpcService::V1Processor => "flowctl.v1.ProcessorService",
            GrpcService::V1Consumer => "flowctl.v1.ConsumerService",
        }
    }

    /// The method verification (first generation) or the relay (v1) calls.
    pub fn method(self) -> &'static str {
        match self {
            GrpcService::RawLedgers => "StreamRawLedgers",
            GrpcService::TokenTransferEvents => "GetTTPEvents",
            GrpcService::V1Source => "StreamEvents",
            GrpcService::V1Processor => "Process",
            GrpcService::V1Consumer => "Consume",
        }
    }

    /// The gRPC path of [`GrpcService::method`] (`/package.Service/Method`).
    pub fn path(self) -> &'static str {
        match self {
            GrpcService::RawLedgers => "/raw_ledger_service.RawLedgerService/StreamRawLedgers",
            GrpcService::TokenTransferEvents => "/token_transfer_service.EventService/GetTTPEvents",
            GrpcService::V1Source => "/flowctl.v1.SourceService/StreamEvents",
            GrpcService::V1Processor => "/flowctl.v1.ProcessorService/Process",
            GrpcService::V1Consumer => "/flowctl.v1.ConsumerService/Consume",
        }
    }

    /// Whether the component speaks the flowctl.v1 data plane: it never dials its inputs,
    /// flowctl relays events into it.
    pub fn is_v1(self) -> bool {
        matches!(
            self,
            GrpcService::V1Source | GrpcService::V1Processor | GrpcService::V1Consumer
        )
    }

    /// Parses a fully qualified service name.
    pub fn from_name(name: &str) -> Option<GrpcService> {
        GrpcService::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for GrpcService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    /// `--registry HOST[/ORG]` (`FLOWCTL_REGISTRY`): where component references'
    /// (`type: NAME@VERSION`) images come from; default `docker.io/withobsrvr`.
    pub registry: Option<String>,
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
    pub protocol: Protocol,
}

/// How readiness is probed over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPlan {
    pub container_port: u16,
    /// The HTTP path; empty for [`HealthProtocol::Grpc`].
    pub path: String,
    pub protocol: HealthProtocol,
}

/// How readiness is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthProtocol {
    /// `GET <path>` on the health port (docs/contract.md §5).
    Http,
    /// `grpc.health.v1.Health/Check` (service "") answering SERVING: `health_check: grpc`, and
    /// the default of a flowctl.v1 consumer without an HTTP health port (upstream's SDK
    /// consumer serves health only that way).
    Grpc,
}

/// A gRPC contract to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcPlan {
    pub container_port: u16,
    pub service: GrpcService,
    pub start_ledger: Option<u32>,
    pub end_ledger: Option<u32>,
}

/// One host folder or file mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    /// Absolute, resolved against the pipeline file's folder.
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
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
    pub env: std::collections::BTreeMap<String, String>,
    pub inputs: Vec<String>,
    /// Components that must be ready first, with no data flowing (`depends_on`).
    pub depends_on: Vec<String>,
    /// 0 for components without inputs or dependencies, else 1 + the deepest of them.
    pub depth: usize,
    pub ports: Vec<PortPlan>,
    pub health: Option<HealthPlan>,
    pub health_timeout: Duration,
    pub stop_grace: Duration,
    pub volumes: Vec<VolumePlan>,
    pub register: bool,
    pub grpc: Option<GrpcPlan>,
    pub restart: RestartPolicy,
    /// `type: [ORG/]NAME@VERSION` as written, when the image comes from a reference.
    pub reference: Option<String>,
    /// `spec.config` under the component's `config`, values as text; already in `env`.
    pub config: std::collections::BTreeMap<String, String>,
    /// The keys of the component's own `config` (checked against an image's schema).
    pub own_config_keys: Vec<String>,
    /// The variables `config` added to `env` (moved when the image maps keys otherwise).
    pub config_env: Vec<String>,
    /// From the file, else the image's metadata (`consumes` / `produces`).
    pub input_event_types: Vec<String>,
    pub output_event_types: Vec<String>,
    pub resources: ResourcePlan,
    /// `placement:`, for a Swarm.
    pub placement: PlacementPlan,
    /// Secrets whose files exist.
    pub secrets: Vec<SecretPlan>,
    /// `replicas:` of the file (1 by default); the same on every replica.
    pub replicas: u32,
    /// Of a replica (`replicas` above 1): the file's id, the network alias every replica
    /// answers to; the replica's own id is `<file id>-<n>`.
    pub replica_of: Option<String>,
    /// `Some`: runs as a process of this machine (`spec.driver: process`, no image).
    pub process: Option<ProcessPlan>,
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
    pub driver: Driver,
    /// What the user should know but is not an error (optional secrets left out), one line
    /// each; values never appear.
    pub notes: Vec<String>,
}

impl ComponentPlan {
    /// Whether flowctl relays this component's events: its `grpc.service` is a
    /// `flowctl.v1.*Service` (it never dials its inputs).
    pub fn is_relayed(&self) -> bool {
        self.grpc.as_ref().is_some_and(|g| g.service.is_v1())
    }
}

impl RunPlan {
    /// Whether any component runs as a process (`spec.driver: process`).
    pub fn has_processes(&self) -> bool {
        self.components.iter().any(|c| c.process.is_some())
    }

    /// The components that run as containers (all of them unless the file's driver is
    /// `process`).
    pub fn containers(&self) -> impl Iterator<Item = &ComponentPlan> {
        self.components.iter().filter(|c| c.process.is_none())
    }

    /// Whether the file mixes process and container components.
    pub fn is_mixed(&self) -> bool {
        self.has_processes() && self.containers().next().is_some()
    }

    /// Each component's id and role, as the control plane expects them.
    pub fn expected_roles(&self) -> impl Iterator<Item = (&str, &str)> {
        self.components
            .iter()
            .map(|c| (c.id.as_str(), c.role.as_str()))
    }

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
        let mut notes = Vec::new();
        let driver = resolve::check_header(file, naming, &mut errors);
        let registry = match naming.registry.as_deref().map(Registry::parse) {
            None => Registry::default(),
            Some(Ok(registry)) => registry,
            Some(Err(problem)) => {
                errors.push(format!("--registry: {problem}"));
                Registry::default()
            }
        };

        let declared: Vec<(Role, usize, &ComponentSpec)> = [
            (Role::Source, &file.spec.sources),
            (Role::Processor, &file.spec.processors),
            (Role::Sink, &file.spec.sinks),
            (Role::Pipeline, &file.spec.pipelines),
        ]
        .into_iter()
        .flat_map(|(role, list)| list.iter().enumerate().map(move |(i, c)| (role, i, c)))
        .collect();
        if declared.is_empty() {
            errors.push(
                "spec: the pipeline has no components (sources, processors, sinks, pipelines)"
                    .into(),
            );
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
        let context = resolve::Context {
            ids: &ids,
            base_dir,
            naming,
            registry: &registry,
            pipeline_config: &file.spec.config,
            process_driver: driver == Driver::Process,
            cwd: &std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };

        let mut components = Vec::new();
        for (role, index, spec) in &declared {
            let at = if spec.id.is_empty() {
                format!("spec.{}[{index}]", role.list())
            } else {
                format!("component `{}`", spec.id)
            };
            let (mut problems, mut component_notes) = (Vec::new(), Vec::new());
            components.push(resolve::component(
                *role,
                spec,
                &context,
                &mut problems,
                &mut component_notes,
            ));
            errors.extend(problems.into_iter().map(|p| format!("{at}: {p}")));
            notes.extend(component_notes.into_iter().map(|n| format!("{at}: {n}")));
        }
        resolve::check_pinned_ports(&components, &mut errors);
        let components = replicas::expand(components, &mut errors);

        let file_has_depends_on = components.iter().any(|c| !c.depends_on.is_empty());
        let ordered = match order::order(components) {
            Ok(ordered) => ordered,
            Err(cycle) => {
                let fields = if file_has_depends_on {
                    "inputs/depends_on"
                } else {
                    "inputs"
                };
                errors.push(format!(
                    "{fields}: the pipeline has a cycle: {}",
                    cycle.join(" → ")
                ));
                Vec::new()
            }
        };
        if !errors.is_empty() {
            return Err(PlanError { errors });
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
            driver,
            notes,
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
    RunPlan::build(&file, base_dir, naming).map_err(|mut e| {
        if let Ok(text) = std::fs::read_to_string(path) {
            e.add_lines(&text);
        }
        anyhow::anyhow!("{}: {e}", path.display())
    })
}

/// Everything wrong with a pipeline file, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub errors: Vec<String>,
}

impl PlanError {
    /// Prefixes `line N: ` to each `component `id`: field: ...` problem whose field can be
    /// found in `text`.
    pub fn add_lines(&mut self, text: &str) {
        for error in &mut self.errors {
            let Some(rest) = error.strip_prefix("component `") else {
                continue;
            };
            let Some((id, rest)) = rest.split_once("`: ") else {
                continue;
            };
            let field = rest.split([':', ' ']).next().unwrap_or_default();
            if let Some(line) = spec::locate::component_field_line(text, id, field) {
                *error = format!("line {line}: {error}");
            }
        }
    }
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
    fn grpc_health_is_declared_or_the_default_of_a_v1_consumer_without_http_health() {
        let parsed = plan(&pipeline(
            "
  sources:
    - id: declared
      image: img
      health_check: grpc
      grpc: {port: 50052, service: flowctl.v1.SourceService}
  sinks:
    - id: v1-consumer
      image: img
      inputs: [declared]
      grpc: {port: 50053, service: flowctl.v1.ConsumerService}
    - id: v1-consumer-with-http
      image: img
      inputs: [declared]
      health_port: 8088
      grpc: {port: 50054, service: flowctl.v1.ConsumerService}
",
        ))
        .unwrap();
        let health = |id| parsed.component(id).unwrap().health.clone().unwrap();
        for (id, port) in [("declared", 50052), ("v1-consumer", 50053)] {
            assert_eq!(health(id).protocol, HealthProtocol::Grpc, "{id}");
            assert_eq!(health(id).container_port, port, "{id}");
            // No HEALTH_PORT: that would ask the component to serve HTTP on its gRPC port.
            assert!(!parsed
                .component(id)
                .unwrap()
                .env
                .contains_key("HEALTH_PORT"));
        }
        assert_eq!(
            health("v1-consumer-with-http").protocol,
            HealthProtocol::Http
        );

        let err = plan(&pipeline(
            "
  sources:
    - {id: a, image: img, health_check: grpc}
",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("health_check: grpc needs `grpc.port`"),
            "{err}"
        );
    }

    #[test]
    fn restart_on_a_relayed_processor_or_consumer_is_refused_naming_it_and_why() {
        let text = |processor_restart: &str| {
            format!(
                "
  sources:
    - {{id: src, image: img, restart: on-failure, grpc: {{port: 50052, service: flowctl.v1.SourceService}}}}
  processors:
    - {{id: proc, image: img, inputs: [src], restart: '{processor_restart}', grpc: {{port: 50051, service: flowctl.v1.ProcessorService}}}}
  sinks:
    - {{id: sink, image: img, inputs: [proc], restart: on-failure, grpc: {{port: 50053, service: flowctl.v1.ConsumerService}}}}
"
            )
        };
        let err = plan(&pipeline(&text("on-failure:3")))
            .unwrap_err()
            .to_string();
        for expected in [
            "component `proc`: restart: `on-failure:3` is not supported on a relayed processor \
             (flowctl.v1.ProcessorService): events in flight to it when it failed cannot be \
             accounted for",
            "component `sink`: restart: `on-failure:3` is not supported on a relayed consumer \
             (flowctl.v1.ConsumerService)",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        // A relayed source may restart (the relay resumes its stream).
        assert!(!err.contains("`src`"), "{err}");
        let err = plan(&pipeline(&text("no"))).unwrap_err().to_string();
        assert!(!err.contains("`proc`"), "{err}");
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
    - {id: e, image: img, restart_policy: sometimes}
",
        ))
        .unwrap_err()
        .to_string();
        for expected in [
            "component `a`: restart: `always` is not supported",
            "component `b`: restart: `on-failure:0`: N must be a whole number from 1 to 100",
            "component `c`: restart: `on-failure:lots`: N must be",
            "component `d`: restart: `sometimes` must be `no`, `on-failure` or `on-failure:N`",
            "component `e`: restart_policy: `sometimes` must be `no`, `on-failure` or",
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
                path: "/ready".into(),
                protocol: HealthProtocol::Http,
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
            "apiVersion: v2\nkind: Pipeline\nmetadata: {name: 'my pipeline'}\nspec:\n  driver: lambda\n  pipelines: []\n  sources:\n    - {id: s, image: img, type: sink, replicas: 3, depends_on: [x]}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "apiVersion: `v2` is not supported",
            "metadata.name: `my pipeline` must be",
            "spec.driver: `lambda` is not supported",
            "component `s`: type: `sink` does not match the list it is in (spec.sources)",
            "component `s`: depends_on: unknown component `x`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(plan(&pipeline("  sources: []\n"))
            .unwrap_err()
            .to_string()
            .contains("no components"));
    }

    #[test]
    fn pipeline_jobs_start_after_what_they_depend_on() {
        let parsed = plan(&pipeline(
            "
  sources:
    - {id: db, image: img}
  sinks:
    - {id: sink, image: img, inputs: [db]}
  pipelines:
    - {id: migrate, image: img, depends_on: [db], restart_policy: on-failure:2}
    - {id: report, type: pipeline, image: img, depends_on: [migrate, sink], restart_policy: Never}
",
        ))
        .unwrap();
        let order: Vec<(&str, usize)> = parsed
            .components
            .iter()
            .map(|c| (c.id.as_str(), c.depth))
            .collect();
        assert_eq!(
            order,
            [("db", 0), ("sink", 1), ("migrate", 1), ("report", 2)]
        );
        let migrate = parsed.component("migrate").unwrap();
        assert_eq!(migrate.role, Role::Pipeline);
        assert!(migrate.role.must_finish());
        assert!(migrate.inputs.is_empty());
        assert_eq!(migrate.restart, RestartPolicy::OnFailure { max: 2 });
        assert_eq!(
            parsed.component("report").unwrap().restart,
            RestartPolicy::Never
        );

        let err = plan(&pipeline(
            "
  sources:
    - {id: a, image: img, inputs: [b], depends_on: [b, b, a]}
    - {id: b, image: img, restart: 'no', restart_policy: never, depends_on: [a]}
  pipelines:
    - {id: j, type: sink, image: img, restart_policy: always}
",
        ))
        .unwrap_err()
        .to_string();
        for expected in [
            "component `a`: depends_on: `b` is listed twice",
            "component `a`: depends_on: `a` names the component itself",
            "component `a`: depends_on: `b` is an input already",
            "component `b`: restart_policy: `restart` is set too",
            "component `j`: type: `sink` does not match the list it is in (spec.pipelines)",
            "component `j`: restart_policy: `always` is not supported",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        let cycle = plan(&pipeline(
            "  sources:\n    - {id: a, image: img, depends_on: [b]}\n    - {id: b, image: img, inputs: [a]}\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            cycle.contains("inputs/depends_on: the pipeline has a cycle: a → b → a"),
            "{cycle}"
        );
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
