//! Removing what a run created. [`remove_run`] is the one cleanup function: `flowctl run` calls
//! it on every exit path (normal end, signal, failure, panic) and `flowctl gc` calls it for dead
//! runs. It works from the run's label, so it is idempotent and needs no memory of what was
//! started.

use std::thread;
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineError};
use crate::labels;

/// Containers to stop gracefully, in order: each group is stopped together (sinks first).
#[derive(Debug, Clone, Default)]
pub struct StopOrder {
    pub groups: Vec<StopGroup>,
}

/// Containers stopped in one call, with the longest grace period among them.
#[derive(Debug, Clone)]
pub struct StopGroup {
    pub containers: Vec<String>,
    pub grace: Duration,
}

impl StopOrder {
    /// Every group in one: for a run whose sinks have all completed, nothing reads any more,
    /// so the order is moot and one `stop` call (with the longest grace) saves a round of the
    /// engine per level.
    pub fn all_at_once(&self) -> StopOrder {
        let containers: Vec<String> = self
            .groups
            .iter()
            .flat_map(|g| g.containers.iter().cloned())
            .collect();
        if containers.is_empty() {
            return StopOrder::default();
        }
        let grace = self
            .groups
            .iter()
            .map(|g| g.grace)
            .max()
            .unwrap_or_default();
        StopOrder {
            groups: vec![StopGroup { containers, grace }],
        }
    }
}

/// What [`remove_run`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct Removal {
    /// Swarm services (`run --swarm`).
    pub services: Vec<String>,
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub errors: Vec<EngineError>,
}

impl Removal {
    /// Whether everything went.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Stops `order` gracefully (skip with an empty order to force), then removes every container
/// and network labelled with `run_id`.
///
/// What the run labelled is listed while the containers stop (nothing new is created then; a
/// container that appeared anyway is found when its network will not go), so the removal
/// starts as soon as the last group has stopped.
pub fn remove_run(engine: &Engine, run_id: &str, order: &StopOrder) -> Removal {
    let mut removal = Removal::default();
    let filter = [labels::run_filter(run_id)];
    let (containers, networks) = thread::scope(|scope| {
        let containers = scope.spawn(|| engine.list_containers_named(&filter));
        let networks = scope.spawn(|| engine.list_networks(&filter));
        for group in &order.groups {
            if let Err(e) = engine.stop(&group.containers, group.grace) {
                // Not fatal: `rm --force` below kills whatever did not stop.
                removal.errors.push(e);
            }
        }
        (joined(containers), joined(networks))
    });
    if order.groups.is_empty() {
        // Forced: kill first. Podman's `rm --force` of a container that another `podman stop`
        // is waiting on drops the record but leaves the process running (seen with 4.3).
        if let Ok(found) = &containers {
            let ids: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
            let _ = engine.kill(&ids);
        }
    }
    remove_listed(engine, containers, &mut removal);
    match networks {
        Ok(networks) => {
            for network in networks {
                // flowctl's own container joined the network when it ran in a CI job
                // container; it is not the run's to remove, only to detach.
                if let Some(owner) = network.labels.get(labels::OWNER_CONTAINER) {
                    if let Err(e) = engine.disconnect_network(&network.id, owner) {
                        removal.errors.push(e);
                    }
                }
                let mut result = engine.remove_network(&network.id);
                if result.is_err() {
                    // A container may have appeared meanwhile (a concurrent forced stop, a
                    // start that raced the signal): remove again, then retry once.
                    remove_containers(engine, &filter, &mut removal);
                    result = engine.remove_network(&network.id);
                }
                match result {
                    Ok(()) => removal.networks.push(network.name),
                    Err(e) => removal.errors.push(e),
                }
            }
        }
        Err(e) => removal.errors.push(e),
    }
    if !removal.errors.is_empty() && !order.groups.is_empty() {
        // Stop errors only matter if something is actually left.
        let left = engine.list_containers(&filter).map(|c| c.is_empty());
        let networks_left = engine.list_networks(&filter).map(|n| n.is_empty());
        if matches!((left, networks_left), (Ok(true), Ok(true))) {
            removal.errors.clear();
        }
    }
    removal
}

/// How long [`remove_swarm_run`] waits for a removed service's tasks to be gone from every
/// node (the network can go only then).
const SWARM_TASKS_GONE: Duration = Duration::from_secs(90);

/// The Swarm form of [`remove_run`] (`run --swarm`): removes every service labelled with
/// `run_id` (Swarm stops their tasks with each service's grace period), then the run's
/// networks once the manager lets them go, which it does only when no task on any node is
/// attached any more; then whatever container of the run is left on the manager's engine.
pub fn remove_swarm_run(engine: &Engine, run_id: &str) -> Removal {
    let mut removal = Removal::default();
    let filter = [labels::run_filter(run_id)];
    let mut tasks = Vec::new();
    match engine.list_services(&filter) {
        Ok(services) if !services.is_empty() => {
            let (ids, names): (Vec<String>, Vec<String>) =
                services.into_iter().map(|(id, name, _)| (id, name)).unzip();
            match engine.service_tasks(&ids) {
                Ok(list) => tasks = list.into_iter().map(|t| t.id).collect(),
                Err(e) => removal.errors.push(e),
            }
            match engine.remove_services(&ids) {
                Ok(()) => removal.services.extend(names),
                Err(e) => removal.errors.push(e),
            }
        }
        Ok(_) => {}
        Err(e) => removal.errors.push(e),
    }
    let deadline = Instant::now() + SWARM_TASKS_GONE;
    // The manager forgets a removed service's task once its node has removed the container.
    while !tasks.is_empty() {
        match engine.existing_tasks(&tasks) {
            Ok(left) => tasks = left,
            Err(e) => {
                removal.errors.push(e);
                break;
            }
        }
        if !tasks.is_empty() && Instant::now() >= deadline {
            removal.errors.push(EngineError::unexpected_output(
                "docker inspect --type task".to_string(),
                format!(
                    "{} task(s) still on their nodes after {} s",
                    tasks.len(),
                    SWARM_TASKS_GONE.as_secs()
                ),
            ));
            break;
        }
        if !tasks.is_empty() {
            thread::sleep(Duration::from_millis(250));
        }
    }
    match engine.list_networks(&filter) {
        Ok(networks) => {
            for network in networks {
                loop {
                    match engine.remove_network(&network.id) {
                        Ok(()) => {
                            removal.networks.push(network.name);
                            break;
                        }
                        Err(e) if e.is_not_found() => break,
                        Err(e) if Instant::now() >= deadline => {
                            removal.errors.push(e);
                            break;
                        }
                        // Tasks still attached somewhere: they are being shut down.
                        Err(_) => thread::sleep(Duration::from_millis(250)),
                    }
                }
            }
        }
        Err(e) => removal.errors.push(e),
    }
    remove_containers(engine, &filter, &mut removal);
    removal
}

/// Removes everything of the run at once, no grace: the forced path of a second signal and of
/// the reaper, for a run on one engine or on a Swarm (`swarm`).
pub fn remove_forced(engine: &Engine, run_id: &str, swarm: bool) -> Removal {
    if swarm {
        remove_swarm_run(engine, run_id)
    } else {
        remove_run(engine, run_id, &StopOrder::default())
    }
}

/// What a listing thread of the teardown returned; its panic is the caller's.
fn joined<T>(listing: thread::ScopedJoinHandle<'_, T>) -> T {
    listing
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn remove_containers(engine: &Engine, filter: &[String], removal: &mut Removal) {
    remove_listed(engine, engine.list_containers_named(filter), removal);
}

/// Removes the containers `listed` (ids with names), as [`remove_containers`] does.
fn remove_listed(
    engine: &Engine,
    listed: Result<Vec<(String, String)>, EngineError>,
    removal: &mut Removal,
) {
    let (ids, names): (Vec<String>, Vec<String>) = match listed {
        Ok(found) => found.into_iter().unzip(),
        Err(e) => return removal.errors.push(e),
    };
    if ids.is_empty() {
        return;
    }
    match engine.remove_containers(&ids) {
        Ok(()) => removal.containers.extend(names),
        Err(e) => removal.errors.push(e),
    }
}
