//! How flowctl reaches the ports of the components it started: through the port the engine
//! published on its host, or at the container's address on the pipeline network when flowctl
//! is on that network (in a CI job container). Filled in as components start; read by health
//! probes, stream verification, the relay and the status table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// How flowctl reaches one container port of a started component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAccess {
    pub container_port: u16,
    /// Where the engine publishes it (`ip:port` on the engine's host), if it does.
    pub published: Option<SocketAddr>,
    /// Where flowctl connects to it: the published port, or the container's address on the
    /// pipeline network when flowctl is on that network.
    pub address: SocketAddr,
    /// The container's address on the pipeline network, when flowctl learned it (flowctl.v1
    /// components started from the engine's host): the relay dials it first, which bypasses
    /// the engine's userland port proxy, and falls back to `address` if it is unreachable
    /// (rootless engines, engines in a VM).
    pub network: Option<SocketAddr>,
}

/// The ports of each started component, by component id, filled in as components start.
pub type Reachable = Mutex<BTreeMap<String, Vec<PortAccess>>>;

/// `(container port, address)` pairs by component id, as stream verification wants them.
pub fn addresses(reachable: &Reachable) -> BTreeMap<String, Vec<(u16, SocketAddr)>> {
    reachable
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|(id, ports)| {
            let pairs = ports
                .iter()
                .map(|p| (p.container_port, p.address))
                .collect();
            (id.clone(), pairs)
        })
        .collect()
}
