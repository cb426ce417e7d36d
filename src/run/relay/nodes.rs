//! Which components the relay serves and where it reaches them, resolved from the plan and
//! the started containers before the relay starts.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{anyhow, Result};

use crate::plan::{ComponentPlan, GrpcService, RunPlan};
use crate::run::reach::Reachable;

/// One relayed component, resolved from the plan before the relay starts.
#[derive(Debug, Clone)]
pub struct RelayNode {
    pub id: String,
    pub service: GrpcService,
    /// Where flowctl reaches its gRPC port.
    pub address: SocketAddr,
    /// Its gRPC port's address on the pipeline network, tried first (see
    /// [`PortAccess::network`](super::reach::PortAccess::network)).
    pub network: Option<SocketAddr>,
    /// Its inputs (all relayed components).
    pub inputs: Vec<String>,
    /// Event types it takes (the file's `input_event_types`); empty: ask `GetInfo`.
    pub accepts: Vec<String>,
    /// `StreamRequest.params` of a source.
    pub params: HashMap<String, String>,
    /// The container port of its gRPC service (to find a restarted container's address).
    pub grpc_port: u16,
    /// How often a source may be restarted (`restart:`); 0 for every other component, whose
    /// `restart:` validation refuses.
    pub restarts: u32,
}

/// The relayed components of `plan`, or an error naming a v1 component whose gRPC port flowctl
/// cannot reach. (That every input of one is relayed too is a rule of the plan, checked before
/// anything runs.)
pub fn nodes_of(plan: &RunPlan, reachable: &Reachable) -> Result<Vec<RelayNode>> {
    let reachable = reachable
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut nodes = Vec::new();
    for component in plan.components.iter().filter(|c| c.is_relayed()) {
        let Some(grpc) = &component.grpc else {
            continue;
        };
        let port = reachable
            .get(&component.id)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|port| port.container_port == grpc.container_port)
            })
            .ok_or_else(|| {
                anyhow!(
                    "component `{}`: flowctl cannot reach its gRPC port {} to relay {}",
                    component.id,
                    grpc.container_port,
                    grpc.service
                )
            })?;
        nodes.push(RelayNode {
            id: component.id.clone(),
            service: grpc.service,
            address: port.address,
            network: port.network,
            // The relayed ones: an input without `grpc` only ordered the start.
            inputs: component
                .inputs
                .iter()
                .filter(|input| plan.component(input).is_some_and(|c| c.is_relayed()))
                .cloned()
                .collect(),
            accepts: component.input_event_types.clone(),
            params: stream_params(component),
            grpc_port: grpc.container_port,
            restarts: match grpc.service {
                GrpcService::V1Source => component.restart.max_restarts(),
                _ => 0,
            },
        });
    }
    Ok(nodes)
}

/// `start_ledger`/`end_ledger` for a source: `grpc.verify` if the file has it, else the
/// component's `START_LEDGER`/`END_LEDGER`.
pub(super) fn stream_params(component: &ComponentPlan) -> HashMap<String, String> {
    let mut params = HashMap::new();
    if component.grpc.as_ref().map(|g| g.service) != Some(GrpcService::V1Source) {
        return params;
    }
    let verify = component.grpc.as_ref();
    let start = verify
        .and_then(|g| g.start_ledger)
        .map(|n| n.to_string())
        .or_else(|| component.env.get("START_LEDGER").cloned());
    let end = verify
        .and_then(|g| g.end_ledger)
        .map(|n| n.to_string())
        .or_else(|| component.env.get("END_LEDGER").cloned());
    for (key, value) in [("start_ledger", start), ("end_ledger", end)] {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            params.insert(key.to_string(), value.trim().to_string());
        }
    }
    params
}
