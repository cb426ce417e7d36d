//! `flowctl gc`: finds every flowctl-managed container and network by label (and, on a Swarm
//! manager, every service), groups them by run, and removes the runs whose owner is no longer
//! alive (every run with `--all`), through the same [`cleanup::remove_run`] (or, for a run
//! with services, [`cleanup::remove_swarm_run`]) every other exit path uses. The records of
//! `driver: process` runs ([`crate::processes`]) are swept the same way by [`gc_processes`].

use std::collections::BTreeMap;

use crate::cleanup::{self, StopOrder};
use crate::engine::swarm::SwarmRole;
use crate::engine::{Engine, EngineError};
use crate::labels;
use crate::owner::{Liveness, RunOwner};
use crate::processes::RunRecord;

/// `flowctl gc` settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Remove live runs' resources too.
    pub all: bool,
    /// List only.
    pub dry_run: bool,
    /// Only runs made from a CI job container that is gone (what every `flowctl run` in a job
    /// container sweeps first).
    pub job_orphans_only: bool,
}

/// Whether the run whose resources carry `labels` is still alive: its job container running,
/// when it ran in one (pids there mean nothing here), else its owner process (see owner.rs).
pub fn run_liveness(engine: &Engine, labels: &BTreeMap<String, String>) -> Liveness {
    if let Some(container) = labels.get(labels::OWNER_CONTAINER) {
        return match engine.inspect_container(container) {
            Ok(Some(info)) if info.state.running => Liveness::Alive,
            Ok(_) => Liveness::Dead,
            Err(e) => Liveness::Unknown(format!("cannot inspect its job container: {e}")),
        };
    }
    match RunOwner::from_labels(labels) {
        Some(owner) => owner.liveness(),
        None => Liveness::Unknown("no owner labels".into()),
    }
}

/// One run found by `gc`.
#[derive(Debug, Clone)]
pub struct RunResources {
    pub run_id: String,
    pub pipeline: String,
    pub owner: Option<RunOwner>,
    pub liveness: Liveness,
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    /// Swarm services (`flowctl run --swarm`), when the engine is a Swarm manager.
    pub services: Vec<String>,
}

/// What `gc` did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Runs whose resources were removed (or would be, with `--dry-run`).
    pub removed: Vec<RunResources>,
    /// Runs left alone because their owner is alive (or cannot be judged).
    pub kept: Vec<RunResources>,
    pub errors: Vec<EngineError>,
}

/// Finds every flowctl-managed container and network, groups them by run, and removes the runs
/// whose owner is no longer alive (all with `options.all`).
pub fn gc(engine: &Engine, options: GcOptions) -> Result<GcReport, EngineError> {
    let managed = [labels::managed_filter()];
    let mut runs: BTreeMap<String, RunResources> = BTreeMap::new();
    let entry = |runs: &mut BTreeMap<String, RunResources>, labels: &BTreeMap<String, String>| {
        let run_id = labels.get(labels::RUN).cloned().unwrap_or_default();
        runs.entry(run_id.clone())
            .or_insert_with(|| {
                let owner = RunOwner::from_labels(labels);
                let liveness =
                    if options.job_orphans_only && !labels.contains_key(labels::OWNER_CONTAINER) {
                        Liveness::Unknown("not a CI job's run".into())
                    } else {
                        run_liveness(engine, labels)
                    };
                RunResources {
                    run_id,
                    pipeline: labels.get(labels::PIPELINE).cloned().unwrap_or_default(),
                    owner,
                    liveness,
                    containers: Vec::new(),
                    networks: Vec::new(),
                    services: Vec::new(),
                }
            })
            .run_id
            .clone()
    };
    let ids = engine.list_containers(&managed)?;
    for info in engine.inspect_containers(&ids)? {
        let run = entry(&mut runs, &info.labels);
        if let Some(r) = runs.get_mut(&run) {
            r.containers.push(info.name);
        }
    }
    for network in engine.list_networks(&managed)? {
        let run = entry(&mut runs, &network.labels);
        if let Some(r) = runs.get_mut(&run) {
            r.networks.push(network.name);
        }
    }
    // Services exist only on a Swarm manager; elsewhere `service ls` is an error (Podman has
    // no Swarm at all: its `info` cannot say, which counts as "no services").
    if matches!(engine.swarm_role(), Ok(SwarmRole::Manager)) {
        for (_, name, labels) in engine.list_services(&managed)? {
            let run = entry(&mut runs, &labels);
            if let Some(r) = runs.get_mut(&run) {
                r.services.push(name);
            }
        }
    }

    let mut report = GcReport::default();
    for (run_id, run) in runs {
        let remove = options.all || run.liveness == Liveness::Dead;
        if !remove {
            report.kept.push(run);
            continue;
        }
        if !options.dry_run {
            if !run.services.is_empty() && !run_id.is_empty() {
                let removal = cleanup::remove_swarm_run(engine, &run_id);
                report.errors.extend(removal.errors);
            } else if run_id.is_empty() {
                // Managed but without a run label: remove by name, never by a broader filter.
                if let Err(e) = engine.remove_containers(&run.containers) {
                    report.errors.push(e);
                }
                for network in &run.networks {
                    if let Err(e) = engine.remove_network(network) {
                        report.errors.push(e);
                    }
                }
            } else {
                let removal = cleanup::remove_run(engine, &run_id, &StopOrder::default());
                report.errors.extend(removal.errors);
            }
        }
        report.removed.push(run);
    }
    Ok(report)
}

/// What `gc` did with the records of `driver: process` runs.
#[derive(Debug, Default)]
pub struct ProcessGcReport {
    /// Dead runs whose processes were stopped and records deleted (or would be).
    pub removed: Vec<(RunRecord, Vec<String>)>,
    /// Live runs, left alone.
    pub kept: Vec<RunRecord>,
    pub errors: Vec<String>,
}

/// Stops what dead process runs left running (each recorded process still running, checked by
/// start time, and its group's members) and deletes their records; live runs' too with
/// `options.all`. A run of another host (a shared runtime directory) is never touched.
pub fn gc_processes(options: GcOptions) -> anyhow::Result<ProcessGcReport> {
    let mut report = ProcessGcReport::default();
    if options.job_orphans_only {
        return Ok(report); // CI jobs' runs are containers
    }
    if !options.dry_run {
        crate::processes::sweep_stale_reservations();
    }
    for (path, record) in RunRecord::all()? {
        let remove = match record.liveness() {
            Liveness::Dead => true,
            Liveness::Alive => options.all,
            Liveness::Unknown(_) => false,
        };
        if !remove {
            report.kept.push(record);
            continue;
        }
        if options.dry_run {
            let running = record
                .processes
                .iter()
                .filter(|p| {
                    crate::processes::proc_stat(p.pid)
                        .is_some_and(|s| s.start_ticks == p.start_ticks && !s.zombie)
                })
                .map(|p| p.component.clone())
                .collect();
            report.removed.push((record, running));
            continue;
        }
        // Each with its grace period: a dead run's sinks may still be writing.
        match record.stop_all(None) {
            Ok(stopped) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    report
                        .errors
                        .push(format!("cannot delete {}: {e}", path.display()));
                }
                report.removed.push((record, stopped));
            }
            Err(left) => report.errors.push(format!("run {}: {left}", record.run_id)),
        }
    }
    Ok(report)
}
