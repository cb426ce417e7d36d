//! `spec.driver: process`: a component with `command:` and no image runs as a process of this
//! machine, as upstream's flowctl runs it. Resolved like upstream resolves it: a `command` with
//! a `/` is a path, relative to the component's `working_dir` if it has one, else to the
//! directory flowctl runs in; a bare name is looked up on `PATH`. The process runs in that same
//! directory, so the file's relative paths (`JSONL_PATH: ./out.jsonl`) mean what they mean
//! upstream.
//!
//! Upstream's files declare no `grpc:` or health fields for these components: every one is a
//! flowctl.v1 component of its list's role, listening where `GRPC_PORT` (else `PORT`) says and
//! serving `/health` on `HEALTH_PORT`; upstream's SDK consumer serves health only as
//! `grpc.health.v1`. [`v1_shape`] turns that into the plan's `grpc` and `health`; a port the
//! file does not pin is 0 here and given a free one when the run starts.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::{GrpcPlan, GrpcService, HealthPlan, HealthProtocol, PlanError, Role, RunPlan};
use crate::contract::HEALTH_PORT;
use crate::spec::{ComponentSpec, ComponentType};

/// The variables a flowctl.v1 component's gRPC port is read from, in upstream's order:
/// `raw-ledger-source` reads `GRPC_PORT`, the SDK's processors and consumers `PORT`.
pub const PORT_VARIABLES: [&str; 2] = ["GRPC_PORT", "PORT"];

/// How one process component is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    /// The executable, resolved (absolute).
    pub program: PathBuf,
    /// `command[0]` as the file writes it, for messages.
    pub command: String,
    /// The rest of `command`, then `args`.
    pub args: Vec<String>,
    /// Where it runs: `working_dir`, else the directory flowctl runs in.
    pub working_dir: PathBuf,
}

/// Whether `spec` is a process component: the file's driver is `process` and the component
/// names no image (neither `image:` nor a `type: NAME@VERSION` reference).
pub(super) fn is_process(spec: &ComponentSpec, process_driver: bool) -> bool {
    process_driver
        && spec.image.is_none()
        && !matches!(spec.kind, Some(ComponentType::Reference { .. }))
}

/// The process plan of `spec`; no field that only means something for a container may be set.
/// Whether the executable and the working directory exist is [`ProcessPlan::check`]'s to say
/// when the run starts (a file is valid before its binaries are built).
pub(super) fn plan(spec: &ComponentSpec, cwd: &Path, problems: &mut Vec<String>) -> ProcessPlan {
    let working_dir = match &spec.working_dir {
        Some(dir) => cwd.join(dir),
        None => cwd.to_path_buf(),
    };
    let (command, args) = match spec.command.split_first() {
        Some((first, rest)) => (first.clone(), rest.iter().chain(&spec.args).cloned()),
        None => {
            problems.push(
                "command: is required (spec.driver is `process`: flowctl runs `command` as a \
                 process; or name an `image:` to run the component as a container)"
                    .into(),
            );
            (String::new(), [].iter().chain(&spec.args).cloned())
        }
    };
    let args: Vec<String> = args.collect();
    if command.trim().is_empty() && !spec.command.is_empty() {
        problems.push("command: the program must not be empty".into());
    }
    for (set, field, why) in [
        (
            !spec.volumes.is_empty(),
            "volumes",
            "a process reads this machine's files directly",
        ),
        (
            !spec.ports.is_empty(),
            "ports",
            "a process listens on this machine itself; set its port variables (GRPC_PORT, \
             PORT, HEALTH_PORT) in `env`",
        ),
        (
            spec.resources.is_some(),
            "resources",
            "limits are enforced for containers only",
        ),
        (
            spec.placement.is_some(),
            "placement",
            "it places Swarm tasks; a process runs where flowctl runs",
        ),
    ] {
        if set {
            problems.push(format!(
                "{field}: not supported for a process component ({why}); remove it, or give \
                 the component an `image:` to run it as a container"
            ));
        }
    }
    ProcessPlan {
        program: PathBuf::from(&command),
        command,
        args,
        working_dir,
    }
}

impl RunPlan {
    /// In a file mixing processes and containers, flowctl's relay is the one way between the
    /// two: a stream from a process into a container, or back, must be relayed (both ends
    /// flowctl.v1). A first-generation component dials its input itself, by a name only the
    /// container network resolves, which a process is not on.
    pub fn check_mixed_edges(&self) -> Result<(), PlanError> {
        let kind = |c: &super::ComponentPlan| match c.process {
            Some(_) => "a process",
            None => "a container",
        };
        let mut errors = Vec::new();
        for consumer in &self.components {
            for input in &consumer.inputs {
                let Some(producer) = self.component(input) else {
                    continue;
                };
                let crosses = producer.process.is_some() != consumer.process.is_some();
                if !crosses || producer.grpc.is_none() {
                    continue; // same side, or an input that only orders the start
                }
                let Some(first) = [producer, consumer].into_iter().find(|c| !c.is_relayed()) else {
                    continue;
                };
                errors.push(format!(
                    "component `{}`: inputs: `{}` runs as {} and `{}` as {}: between the two \
                     only flowctl's relay carries events, and `{}` is not a flowctl.v1 \
                     component; run both the same way (both with `command`, or both with an \
                     image), or use flowctl.v1 components",
                    consumer.file_id(),
                    producer.file_id(),
                    kind(producer),
                    consumer.file_id(),
                    kind(consumer),
                    first.file_id()
                ));
            }
        }
        errors.dedup();
        match errors.is_empty() {
            true => Ok(()),
            false => Err(PlanError { errors }),
        }
    }
}

impl ProcessPlan {
    /// The executable to start, resolved now (it may have been built since the file was
    /// read); the error is the `command` or `working_dir` field's problem.
    pub fn check(&self) -> Result<PathBuf, String> {
        if !self.working_dir.is_dir() {
            return Err(format!(
                "working_dir: `{}` is not a directory",
                self.working_dir.display()
            ));
        }
        executable(
            &self.command,
            &self.working_dir,
            std::env::var_os("PATH").as_deref(),
        )
        .map_err(|why| format!("command: `{}` {why}", self.command))
    }
}

/// Resolves `command` as upstream's flowctl (Go's `exec.Command`) does: with a `/`, a path
/// relative to `working_dir`; otherwise the first executable of that name on `path`.
fn executable(
    command: &str,
    working_dir: &Path,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, String> {
    if command.contains('/') {
        let program = working_dir.join(command);
        return match std::fs::metadata(&program) {
            Err(_) => Err(format!(
                "does not exist ({} ; relative paths are resolved against {})",
                program.display(),
                working_dir.display()
            )),
            Ok(meta) if !meta.is_file() => Err(format!("is not a file ({})", program.display())),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(format!(
                "is not executable ({}; `chmod +x` it)",
                program.display()
            )),
            Ok(_) => Ok(program),
        };
    }
    let found = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(command))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        });
    found.ok_or_else(|| "is not an executable on PATH (write a path such as `./bin/NAME`)".into())
}

/// A port as upstream's components take it: `55272`, `:55272` or `HOST:55272`.
pub fn parse_port(value: &str) -> Option<u16> {
    let value = value.trim();
    let port = value.rsplit_once(':').map_or(value, |(_, port)| port);
    port.parse().ok()
}

/// The gRPC port variable the file sets, and its port; `Err` names a value that is no port.
fn pinned_port(
    env: &BTreeMap<String, String>,
    variables: &[&str],
) -> Result<Option<(String, u16)>, String> {
    for variable in variables {
        if let Some(value) = env.get(*variable) {
            return match parse_port(value) {
                Some(port) => Ok(Some((variable.to_string(), port))),
                None => Err(format!(
                    "env.{variable}: `{value}` is not a port (write `55272`, `:55272` or \
                     `127.0.0.1:55272`)"
                )),
            };
        }
    }
    Ok(None)
}

/// The `grpc` and `health` a process component has without declaring them: a flowctl.v1
/// component of its role, on its pinned ports or ones given at start (port 0 here). Fields the
/// file does declare win.
pub(super) fn v1_shape(
    role: Role,
    env: &BTreeMap<String, String>,
    grpc: &mut Option<GrpcPlan>,
    health: &mut Option<HealthPlan>,
    problems: &mut Vec<String>,
) {
    let service = match role {
        Role::Source => GrpcService::V1Source,
        Role::Processor => GrpcService::V1Processor,
        Role::Sink => GrpcService::V1Consumer,
        // A job of `spec.pipelines`: no data plane, done when it exits 0.
        Role::Pipeline => return,
    };
    let grpc_port = |problems: &mut Vec<String>| match pinned_port(env, &PORT_VARIABLES) {
        Ok(pinned) => pinned.map_or(0, |(_, port)| port),
        Err(problem) => {
            problems.push(problem);
            0
        }
    };
    if grpc.is_none() {
        *grpc = Some(GrpcPlan {
            container_port: grpc_port(problems),
            service,
            start_ledger: None,
            end_ledger: None,
        });
    }
    if health.is_some() {
        return;
    }
    // Upstream's SDK consumer serves health only as grpc.health.v1, on its gRPC port
    // (whatever HEALTH_PORT says).
    if service == GrpcService::V1Consumer {
        *health = Some(HealthPlan {
            container_port: grpc.as_ref().map_or(0, |g| g.container_port),
            path: String::new(),
            protocol: HealthProtocol::Grpc,
        });
        return;
    }
    let port = match pinned_port(env, &[HEALTH_PORT]) {
        Ok(pinned) => pinned.map_or(0, |(_, port)| port),
        Err(problem) => return problems.push(problem),
    };
    *health = Some(HealthPlan {
        container_port: port,
        path: "/health".into(),
        protocol: HealthProtocol::Http,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_as_upstreams_components_read_them() {
        assert_eq!(parse_port("55272"), Some(55272));
        assert_eq!(parse_port(":55272"), Some(55272));
        assert_eq!(parse_port("127.0.0.1:55272"), Some(55272));
        assert_eq!(parse_port("[::1]:55272"), Some(55272));
        assert_eq!(parse_port("grpc"), None);
        assert_eq!(parse_port("70000"), None);
    }

    #[test]
    fn commands_resolve_like_upstreams_flowctl() {
        let dir = std::env::temp_dir().join(format!("flowctl-exec-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let tool = dir.join("bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.join("bin/plain");
        std::fs::write(&plain, "data").unwrap();

        assert_eq!(
            executable("./bin/tool", &dir, None).unwrap(),
            dir.join("./bin/tool")
        );
        let missing = executable("./bin/nope", &dir, None).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        assert!(missing.contains(&dir.display().to_string()), "{missing}");
        let plain = executable("bin/plain", &dir, None).unwrap_err();
        assert!(plain.contains("not executable"), "{plain}");
        let path = std::env::join_paths([dir.join("bin")]).unwrap();
        assert_eq!(executable("tool", &dir, Some(&path)).unwrap(), tool);
        assert!(executable("plain", &dir, Some(&path))
            .unwrap_err()
            .contains("not an executable on PATH"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn upstreams_components_are_flowctl_v1_on_their_port_variables() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let shape = |role, env: &BTreeMap<String, String>| {
            let (mut grpc, mut health, mut problems) = (None, None, Vec::new());
            v1_shape(role, env, &mut grpc, &mut health, &mut problems);
            (grpc, health, problems)
        };
        let (grpc, health, problems) = shape(
            Role::Source,
            &env(&[
                ("GRPC_PORT", "55271"),
                ("PORT", "1"),
                ("HEALTH_PORT", "19281"),
            ]),
        );
        assert!(problems.is_empty());
        let grpc = grpc.unwrap();
        assert_eq!(
            (grpc.service, grpc.container_port),
            (GrpcService::V1Source, 55271)
        );
        let health = health.unwrap();
        assert_eq!(
            (health.protocol, health.container_port),
            (HealthProtocol::Http, 19281)
        );

        let (grpc, health, _) = shape(Role::Processor, &env(&[("PORT", ":55272")]));
        assert_eq!(grpc.unwrap().container_port, 55272);
        // Given at start.
        assert_eq!(health.unwrap().container_port, 0);

        let (grpc, health, _) = shape(
            Role::Sink,
            &env(&[("PORT", ":55273"), ("HEALTH_PORT", "19283")]),
        );
        assert_eq!(grpc.unwrap().service, GrpcService::V1Consumer);
        let health = health.unwrap();
        assert_eq!(
            (health.protocol, health.container_port),
            (HealthProtocol::Grpc, 55273)
        );

        let (grpc, health, problems) = shape(Role::Sink, &env(&[("PORT", "x")]));
        assert_eq!(grpc.unwrap().container_port, 0);
        assert_eq!(health.unwrap().container_port, 0);
        assert!(
            problems[0].starts_with("env.PORT: `x` is not a port"),
            "{problems:?}"
        );

        let (grpc, health, _) = shape(Role::Pipeline, &env(&[]));
        assert!(grpc.is_none() && health.is_none());
    }
}
