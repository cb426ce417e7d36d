//! A process run's checks before anything starts, and its ports: every executable found, every
//! port the file pins free on this machine, and a free port for every one it leaves out (given
//! to the component in the variables it reads). All problems at once, each naming file, line,
//! component and field.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use crate::contract::{FLOWCTL_ENDPOINT, HEALTH_PORT};
use crate::plan::{
    parse_port, ComponentPlan, HealthProtocol, PlanError, PortPlan, Protocol, RunPlan,
    SecretTarget, PORT_VARIABLES,
};
use crate::processes::Reservations;

/// Ports flowctl gives are taken from here: below Linux's ephemeral range (32768-60999), from
/// which outgoing connections take their local ports, so none of those can hold one.
const GIVEN_PORTS: std::ops::Range<u16> = 20000..32000;

/// Checks the process components of `plan` (read from `file`) and fixes their ports; returns
/// the control plane's port (`requested`, else the one the file's `FLOWCTL_ENDPOINT`s agree
/// on, else 0: any) and the reservations of the ports it gave, to hold until the run ends.
pub fn check(
    plan: &mut RunPlan,
    file: &Path,
    requested: Option<u16>,
) -> Result<(u16, Reservations), anyhow::Error> {
    let mut errors = Vec::new();
    for component in &mut plan.components {
        let id = component.id.clone();
        let Some(process) = &mut component.process else {
            continue; // a container of a file mixing both: the engine's to check
        };
        match process.check() {
            Ok(program) => process.program = program,
            Err(problem) => errors.push(format!("component `{id}`: {problem}")),
        }
        for secret in &component.secrets {
            if let SecretTarget::File(path) = &secret.target {
                errors.push(format!(
                    "component `{id}`: secrets: `{}` is a file at `{path}` in a container; a \
                     process has no container: give it as a variable (`env:`), or read {} \
                     itself",
                    secret.name,
                    secret.host_path.display()
                ));
            }
        }
    }
    let control_port = control_plane_port(plan, requested, &mut errors);
    let mut taken: BTreeSet<u16> = control_port.into_iter().collect();
    for component in plan.components.iter().filter(|c| c.process.is_some()) {
        for port in &component.ports {
            let variable = port_variable(component, port.container_port);
            if !taken.insert(port.container_port) {
                // Two components pinning one port is the plan's error already; the control
                // plane's is this one's.
                errors.push(format!(
                    "component `{}`: env.{variable}: port {} is the control plane's \
                     (FLOWCTL_ENDPOINT)",
                    component.id, port.container_port
                ));
            } else if !is_free(port.container_port) {
                errors.push(format!(
                    "component `{}`: env.{variable}: port {} is already in use on this machine",
                    component.id, port.container_port
                ));
            }
        }
    }
    if !errors.is_empty() {
        let mut error = PlanError { errors };
        if let Ok(text) = std::fs::read_to_string(file) {
            error.add_lines(&text);
        }
        return Err(anyhow::anyhow!("{}: {error}", file.display()));
    }
    let mut reservations = Reservations::default();
    for component in &mut plan.components {
        give_ports(component, &mut taken, &mut reservations)?;
    }
    Ok((control_port.unwrap_or(0), reservations))
}

/// The variable a process component's `port` comes from, for messages.
fn port_variable(component: &ComponentPlan, port: u16) -> &'static str {
    let grpc = component.grpc.as_ref().map(|g| g.container_port);
    if grpc == Some(port) {
        PORT_VARIABLES
            .into_iter()
            .find(|v| component.env.contains_key(*v))
            .unwrap_or("PORT")
    } else {
        HEALTH_PORT
    }
}

/// `--control-plane-port`, else the port of the `FLOWCTL_ENDPOINT` every process component of
/// the file that sets one agrees on (upstream's files pin it so), checked free.
fn control_plane_port(
    plan: &RunPlan,
    requested: Option<u16>,
    errors: &mut Vec<String>,
) -> Option<u16> {
    if let Some(port) = requested {
        return (port != 0).then_some(port);
    }
    let pinned: BTreeSet<u16> = plan
        .components
        .iter()
        .filter_map(|c| c.env.get(FLOWCTL_ENDPOINT))
        .filter_map(|endpoint| parse_port(endpoint))
        .collect();
    let [port] = pinned.into_iter().collect::<Vec<_>>()[..] else {
        return None; // none, or several: flowctl picks one and gives it to all
    };
    if !is_free(port) {
        let id = plan
            .components
            .iter()
            .find(|c| c.env.contains_key(FLOWCTL_ENDPOINT))
            .map_or("", |c| c.id.as_str());
        errors.push(format!(
            "component `{id}`: env.{FLOWCTL_ENDPOINT}: port {port} (where flowctl serves the \
             control plane) is already in use on this machine (--control-plane-port picks \
             another)"
        ));
    }
    Some(port)
}

/// Whether `port` can be listened on, on every interface (as `:PORT` listens).
fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// A free port of [`GIVEN_PORTS`] not in `taken`, which it joins, reserved in `reservations`.
fn free_port(taken: &mut BTreeSet<u16>, reservations: &mut Reservations) -> anyhow::Result<u16> {
    let span = GIVEN_PORTS.end - GIVEN_PORTS.start;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(7919);
    for step in 0..span {
        let port = GIVEN_PORTS.start + ((seed % u32::from(span)) as u16 + step) % span;
        if !taken.contains(&port) && is_free(port) && reservations.reserve(port) {
            taken.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in {GIVEN_PORTS:?} for a process component")
}

/// Gives `component` a port for every one its file leaves out: its gRPC port (in `GRPC_PORT`
/// and `PORT`, whichever it reads) and `HEALTH_PORT` (also for a consumer, probed over gRPC,
/// whose own HTTP default would clash with another's).
fn give_ports(
    component: &mut ComponentPlan,
    taken: &mut BTreeSet<u16>,
    reservations: &mut Reservations,
) -> anyhow::Result<()> {
    if component.process.is_none() {
        return Ok(());
    }
    if let Some(grpc) = component.grpc.as_mut().filter(|g| g.container_port == 0) {
        grpc.container_port = free_port(taken, reservations)?;
        for variable in PORT_VARIABLES {
            component
                .env
                .insert(variable.to_string(), grpc.container_port.to_string());
        }
    }
    let grpc_port = component.grpc.as_ref().map(|g| g.container_port);
    if let Some(health) = component.health.as_mut() {
        if health.protocol == HealthProtocol::Grpc {
            if health.container_port == 0 {
                health.container_port = grpc_port.unwrap_or(0);
            }
        } else if health.container_port == 0 {
            health.container_port = free_port(taken, reservations)?;
            component
                .env
                .insert(HEALTH_PORT.to_string(), health.container_port.to_string());
        }
    }
    if component.grpc.is_some() && !component.env.contains_key(HEALTH_PORT) {
        let port = free_port(taken, reservations)?;
        component
            .env
            .insert(HEALTH_PORT.to_string(), port.to_string());
    }
    let mut ports: Vec<PortPlan> = Vec::new();
    let named = [
        ("grpc", grpc_port),
        (
            "health",
            component.health.as_ref().map(|h| h.container_port),
        ),
    ];
    for (name, port) in named {
        let Some(port) = port.filter(|p| *p != 0) else {
            continue;
        };
        if !ports.iter().any(|p| p.container_port == port) {
            ports.push(PortPlan {
                name: Some(name.to_string()),
                container_port: port,
                host_port: Some(port),
                protocol: Protocol::Tcp,
            });
        }
    }
    component.ports = ports;
    Ok(())
}
