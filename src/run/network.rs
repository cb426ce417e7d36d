//! The run's network and its control plane: the bridge network every component joins (and
//! flowctl's own container, when it runs in one of the engine's), and the control plane the
//! components register with, embedded in flowctl or, next to a remote engine, a container.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::contract::{self, CONTROL_PLANE_PORT, CONTROL_PLANE_SERVICE};
use crate::control_plane::remote::RemoteControlPlane;
use crate::control_plane::{ControlPlane, ControlPlaneConfig, ControlPlaneView, ExpectedComponent};
use crate::engine::{ContainerSpec, Engine, PortPublish};
use crate::labels;
use crate::location::Location;
use crate::logs::{elapsed_ms, Console};
use crate::plan::RunPlan;

/// The run's control plane: where components reach it, and what flowctl reads of it.
#[derive(Debug)]
pub struct RunControlPlane {
    /// `host:port` as the components reach it (`FLOWCTL_ENDPOINT`).
    pub endpoint: String,
    /// `ip:port` where `flowctl status` reaches it (the container label).
    pub status_address: SocketAddr,
    /// `127.0.0.1:port` as the processes of a file mixing processes and containers reach it
    /// (its network's gateway may not be up before the first container starts).
    pub process_endpoint: Option<String>,
    /// Its registry; an embedded server stops when the last reference is dropped.
    pub server: Arc<dyn ControlPlaneView>,
}

impl RunControlPlane {
    /// The env component `component` gets: the file's plus what flowctl injects (which
    /// wins), with this control plane's endpoint.
    pub fn component_env(
        &self,
        component: &crate::plan::ComponentPlan,
        heartbeat_interval: Duration,
    ) -> BTreeMap<String, String> {
        let endpoint = match (&component.process, &self.process_endpoint) {
            (Some(_), Some(endpoint)) => endpoint,
            _ => &self.endpoint,
        };
        let access = contract::ControlPlaneAccess {
            endpoint: endpoint.clone(),
            heartbeat_interval,
        };
        contract::component_env(&component.env, &component.id, Some(&access))
    }
}

/// Creates the run's bridge network; returns the address on it where flowctl itself can
/// listen: the network's gateway (the engine's host), or, when flowctl runs in one of the
/// engine's containers, that container's address after joining the network.
pub fn create_network(
    engine: &Engine,
    plan: &RunPlan,
    labels: &BTreeMap<String, String>,
    location: &Location,
    console: Console,
) -> Result<String> {
    let started = Instant::now();
    engine
        .create_network(&plan.network, labels)
        .with_context(|| format!("cannot create the network {}", plan.network))?;
    let gateway = engine
        .network_gateway(&plan.network)
        .with_context(|| format!("cannot read the gateway of network {}", plan.network))?;
    console.info(format!(
        "network {} created (gateway {gateway}) in {} ms",
        plan.network,
        elapsed_ms(started)
    ));
    let Some(own) = location.own_container() else {
        return Ok(gateway);
    };
    engine
        .connect_network(&plan.network, own)
        .with_context(|| format!("cannot attach flowctl's container to {}", plan.network))?;
    let address = engine
        .inspect_container(own)?
        .and_then(|info| info.networks.get(&plan.network).cloned())
        .filter(|ip| !ip.is_empty())
        .with_context(|| format!("flowctl's container has no address on {}", plan.network))?;
    console.info(format!(
        "flowctl's container joined {} as {address}",
        plan.network
    ));
    Ok(address)
}

/// How the run's control plane is set up.
pub struct ControlPlaneSettings<'a> {
    /// Its port; 0 picks a free one (embedded only).
    pub port: u16,
    pub heartbeat_interval: Duration,
    /// Run it as a container of this image (a remote engine) instead of in flowctl.
    pub image: Option<&'a str>,
}

/// Starts the run's control plane, in flowctl on `listen` or as a container, and says where.
pub fn control_plane(
    engine: &Engine,
    plan: &RunPlan,
    labels: &BTreeMap<String, String>,
    location: &Location,
    listen: &str,
    settings: &ControlPlaneSettings,
    console: Console,
) -> Result<RunControlPlane> {
    let heartbeat = settings.heartbeat_interval;
    let control = match settings.image {
        Some(image) => {
            start_control_plane_container(engine, plan, labels, location, image, heartbeat)?
        }
        None => start_control_plane(plan, listen, settings.port, heartbeat)?,
    };
    let published = if control.endpoint == control.status_address.to_string() {
        String::new()
    } else {
        format!(", published on {}", control.status_address)
    };
    console.info(format!(
        "control plane listening on {}{published} (heartbeat interval {})",
        control.endpoint,
        crate::duration::format(heartbeat)
    ));
    Ok(control)
}

/// Starts the embedded control plane on `listen` (the network's gateway, or flowctl's own
/// address on the network): reachable from the pipeline's containers, not from other hosts.
pub(super) fn start_control_plane(
    plan: &RunPlan,
    listen: &str,
    port: u16,
    heartbeat_interval: Duration,
) -> Result<RunControlPlane> {
    let ip: IpAddr = listen
        .parse()
        .with_context(|| format!("the network address `{listen}` is not an IP address"))?;
    let expected = plan
        .components
        .iter()
        .map(|c| ExpectedComponent {
            id: c.id.clone(),
            role: c.role,
        })
        .collect();
    let mut config = ControlPlaneConfig::new(heartbeat_interval, expected);
    config.status_signal = true;
    config.also_loopback = plan.is_mixed();
    let server = ControlPlane::start(SocketAddr::new(ip, port), config)
        .context("--control-plane-port picks another port (0 = any free one)")?;
    Ok(RunControlPlane {
        endpoint: server.local_addr().to_string(),
        status_address: server.local_addr(),
        process_endpoint: server.loopback_addr().map(|a| a.to_string()),
        server: Arc::new(server),
    })
}

/// Runs `flowctl control-plane` from `image` as a container on the pipeline network (for a
/// remote engine, whose containers may not reach flowctl): components reach it by its network
/// alias, flowctl through its port published on the engine host's address.
fn start_control_plane_container(
    engine: &Engine,
    plan: &RunPlan,
    labels: &BTreeMap<String, String>,
    location: &Location,
    image: &str,
    heartbeat_interval: Duration,
) -> Result<RunControlPlane> {
    let name = match &plan.project {
        Some(project) => format!("{project}-{CONTROL_PLANE_SERVICE}"),
        None => CONTROL_PLANE_SERVICE.to_string(),
    };
    let mut labels = labels.clone();
    labels.insert(
        labels::COMPONENT.to_string(),
        CONTROL_PLANE_SERVICE.to_string(),
    );
    let spec = ContainerSpec {
        name: name.clone(),
        image: image.to_string(),
        network: plan.network.clone(),
        aliases: vec![CONTROL_PLANE_SERVICE.to_string()],
        labels,
        env_file: None,
        publish: vec![PortPublish {
            host_ip: location.publish_ip().to_string(),
            host_port: None,
            container_port: CONTROL_PLANE_PORT,
            protocol: "tcp",
        }],
        mounts: Vec::new(),
        entrypoint: None,
        args: contract::control_plane_args(plan.expected_roles(), heartbeat_interval),
        stop_timeout: Duration::from_secs(2),
        limits: Default::default(),
    };
    engine
        .create_container(&spec)
        .and_then(|_| engine.start_container(&name))
        .context("cannot start the control plane container")?;
    let host_port = engine
        .published_ports(&name)?
        .get(&(CONTROL_PLANE_PORT, "tcp".to_string()))
        .copied()
        .context("the control plane container has no published port")?;
    let address = SocketAddr::new(location.publish_ip(), host_port);
    let server = RemoteControlPlane::connect(address, Duration::from_secs(30))?;
    Ok(RunControlPlane {
        endpoint: format!("{CONTROL_PLANE_SERVICE}:{CONTROL_PLANE_PORT}"),
        status_address: address,
        process_endpoint: None,
        server: Arc::new(server),
    })
}
