//! `flowctl status`: finds running pipelines by the labels of their containers and asks each
//! run's control plane for its services.
//!
//! The control plane's `ip:port` is the value of the label [`labels::CONTROL_PLANE`] that
//! `flowctl run` puts on every container it starts: the pipeline's bridge gateway, which the
//! host can reach too. Labels survive a crashed flowctl and need no state file; a dead run
//! simply does not answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use tonic::transport::Endpoint;

use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
use flowctl_proto::flowctl::{ServiceStatus, ServiceType};

use crate::control_plane::{MatchedBy, ServiceSnapshot};
use crate::engine::Engine;
use crate::labels;
use crate::status::{add_unlisted_services, render, StatusRow};

pub use crate::status::table_width;

/// How long `flowctl status` waits for a control plane.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// `flowctl status`: a table per running pipeline (optionally only `project`'s). Runs are
/// found by the labels of their containers; each run's control plane is asked with
/// `ListServices` at the address in [`labels::CONTROL_PLANE`]. Tables fit `width` (see
/// [`crate::status::render`]).
pub fn show(engine: &Engine, project: Option<&str>, width: Option<usize>) -> Result<String> {
    let mut filters = vec![labels::managed_filter()];
    if let Some(project) = project {
        filters.push(format!("{}={project}", labels::PROJECT));
    }
    let ids = engine.list_containers(&filters)?;
    let containers = engine.inspect_containers(&ids)?;
    if containers.is_empty() {
        return Ok(match project {
            Some(project) => format!("no flowctl pipeline of project {project} is running\n"),
            None => "no flowctl pipeline is running\n".to_string(),
        });
    }
    let mut runs: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for container in containers {
        let run = container
            .labels
            .get(labels::RUN)
            .cloned()
            .unwrap_or_default();
        runs.entry(run).or_default().push(container);
    }
    let mut out = String::new();
    for (index, (run, mut containers)) in runs.into_iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let label = |key: &str| {
            containers
                .iter()
                .find_map(|c| c.labels.get(key).cloned())
                .unwrap_or_default()
        };
        let pipeline = label(labels::PIPELINE);
        let endpoint = label(labels::CONTROL_PLANE);
        let _ = write!(out, "pipeline {pipeline} (run {run}");
        let project = label(labels::PROJECT);
        if !project.is_empty() {
            let _ = write!(out, ", project {project}");
        }
        let services = match endpoint.parse::<SocketAddr>() {
            Ok(address) => match list_services(address, STATUS_TIMEOUT) {
                Ok(list) => {
                    let _ = writeln!(out, "): control plane {address}");
                    let now = SystemTime::now();
                    list.into_iter().map(|s| snapshot_of(s, now)).collect()
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "): control plane {address} does not answer ({}); if its flowctl \
                         has ended, `flowctl gc` removes what is left",
                        e.root_cause()
                    );
                    Vec::new()
                }
            },
            Err(_) => {
                let _ = writeln!(out, "): no control plane recorded");
                Vec::new()
            }
        };
        let mut rows: Vec<StatusRow> = containers
            .iter()
            .map(|container| {
                let component = container
                    .labels
                    .get(labels::COMPONENT)
                    .cloned()
                    .unwrap_or_else(|| container.name.clone());
                let state = if container.state.running {
                    container.state.status.clone()
                } else {
                    format!("{} ({})", container.state.status, container.state.exit_code)
                };
                StatusRow {
                    service: services
                        .iter()
                        .find(|s: &&ServiceSnapshot| s.component.as_deref() == Some(&component))
                        .cloned(),
                    component,
                    container: container.name.clone(),
                    image: container.image.clone(),
                    ports: container.ports.clone(),
                    state,
                    expects_registration: !endpoint.is_empty(),
                }
            })
            .collect();
        add_unlisted_services(&mut rows, services);
        out.push_str(&render(&rows, width));
    }
    Ok(out)
}

/// Converts what `ListServices` returned into the shape the table uses; `now` dates the
/// heartbeat ages.
pub fn snapshot_of(status: ServiceStatus, now: SystemTime) -> ServiceSnapshot {
    let last_heartbeat_age = status
        .last_heartbeat
        .and_then(|at| SystemTime::try_from(at).ok())
        .map(|at| now.duration_since(at).unwrap_or_default());
    ServiceSnapshot {
        service_type: ServiceType::try_from(status.service_type).unwrap_or_default(),
        component: (!status.component_id.is_empty()).then_some(status.component_id),
        matched_by: MatchedBy::Unmatched,
        service_id: status.service_id,
        healthy: status.is_healthy,
        last_heartbeat_age,
        metrics: status.metrics.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// Calls `ListServices` on the control plane at `address`.
pub fn list_services(address: SocketAddr, timeout: Duration) -> Result<Vec<ServiceStatus>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    runtime.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("cannot connect to the control plane at {address}"))?;
        let list = ControlPlaneClient::new(channel)
            .list_services(())
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "control plane at {address}: ListServices failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok(list.into_inner().services)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_services_status_becomes_a_snapshot() {
        let now = SystemTime::now();
        let status = ServiceStatus {
            service_id: "s".into(),
            service_type: ServiceType::Sink as i32,
            is_healthy: true,
            last_heartbeat: Some((now - Duration::from_secs(4)).into()),
            metrics: [("total_processed".to_string(), 2.0)].into(),
            component_id: "consumer-app".into(),
        };
        let snapshot = snapshot_of(status, now);
        assert_eq!(snapshot.component.as_deref(), Some("consumer-app"));
        assert_eq!(snapshot.service_type, ServiceType::Sink);
        assert_eq!(snapshot.last_heartbeat_age, Some(Duration::from_secs(4)));
        assert_eq!(snapshot.metrics["total_processed"], 2.0);
    }

    #[test]
    fn list_services_against_a_real_control_plane() {
        use crate::control_plane::{ControlPlane, ControlPlaneConfig};
        let plane = ControlPlane::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ControlPlaneConfig::new(Duration::from_secs(10), vec![]),
        )
        .unwrap();
        assert!(list_services(plane.local_addr(), Duration::from_secs(10))
            .unwrap()
            .is_empty());
        let address = plane.local_addr();
        plane.shutdown();
        let err = list_services(address, Duration::from_secs(2)).unwrap_err();
        assert!(format!("{err:#}").contains(&address.to_string()), "{err:#}");
    }
}
