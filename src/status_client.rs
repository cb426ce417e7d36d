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

use anyhow::Result;

use crate::control_plane::remote::{list_services, snapshot_of};
use crate::control_plane::ServiceSnapshot;
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
        let services = ask(&mut out, endpoint.parse().ok());
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

/// Ends a run's heading in `out` with what its control plane at `address` says, and returns
/// its services (none when it does not answer or is not known).
fn ask(out: &mut String, address: Option<SocketAddr>) -> Vec<ServiceSnapshot> {
    let Some(address) = address else {
        let _ = writeln!(out, "): no control plane recorded");
        return Vec::new();
    };
    match list_services(address, STATUS_TIMEOUT) {
        Ok(list) => {
            let _ = writeln!(out, "): control plane {address}");
            let now = SystemTime::now();
            list.into_iter().map(|s| snapshot_of(s, now)).collect()
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "): control plane {address} does not answer ({}); if its flowctl has ended, \
                 `flowctl gc` removes what is left",
                e.root_cause()
            );
            Vec::new()
        }
    }
}

/// The tables of the live `driver: process` runs of this user, found by their records in the
/// runtime directory ([`crate::processes`]); empty when there is none.
pub fn show_processes(width: Option<usize>) -> Result<String> {
    let mut out = String::new();
    for (_, record) in crate::processes::RunRecord::all()? {
        if record.liveness() != crate::owner::Liveness::Alive {
            continue; // `flowctl gc` is for those
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = write!(
            out,
            "pipeline {} (run {}, processes",
            record.pipeline, record.run_id
        );
        let address = record
            .control_plane
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let services = ask(&mut out, address);
        // The latest process of each component (a restart records another).
        let mut latest: BTreeMap<&str, &crate::processes::RecordedProcess> = BTreeMap::new();
        for process in &record.processes {
            latest.insert(&process.component, process);
        }
        let mut rows: Vec<StatusRow> = record
            .processes
            .iter()
            .filter(|p| {
                latest
                    .get(p.component.as_str())
                    .is_some_and(|l| l.pid == p.pid)
            })
            .map(|process| {
                let running = crate::processes::proc_stat(process.pid)
                    .is_some_and(|s| s.start_ticks == process.start_ticks && !s.zombie);
                StatusRow {
                    service: services
                        .iter()
                        .find(|s| s.component.as_deref() == Some(process.component.as_str()))
                        .cloned(),
                    component: process.component.clone(),
                    container: format!("pid {}", process.pid),
                    image: String::new(),
                    ports: Vec::new(),
                    state: if running { "running" } else { "exited" }.to_string(),
                    expects_registration: address.is_some(),
                }
            })
            .collect();
        add_unlisted_services(&mut rows, services);
        out.push_str(&render(&rows, width));
    }
    Ok(out)
}
