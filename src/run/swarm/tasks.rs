//! What the run's services are doing, read from the manager: every task with its node
//! (hostname and address), and what that means for the run: which services are up, which
//! task failed where, which replica moved to another node, whether the sinks completed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::engine::swarm::{NodeInfo, Task};
use crate::engine::{Engine, EngineError};

/// A task with the node it is on.
#[derive(Debug, Clone)]
pub struct PlacedTask {
    pub task: Task,
    pub node: NodeInfo,
}

impl PlacedTask {
    /// Where flowctl reaches `container_port` of this task: its host-mode published port on
    /// the node's address.
    pub fn address_of(&self, container_port: u16) -> Option<SocketAddr> {
        let published = self.task.ports.get(&container_port)?;
        format!("{}:{published}", self.node.address).parse().ok()
    }
}

/// The nodes seen so far (a node's name and address do not change during a run).
#[derive(Debug, Default)]
pub struct Nodes {
    known: BTreeMap<String, NodeInfo>,
}

impl Nodes {
    /// The tasks of `services` (ids), grouped by service id, each with its node; tasks not yet
    /// assigned to a node have an empty one.
    pub fn tasks(
        &mut self,
        engine: &Engine,
        services: &[String],
    ) -> Result<BTreeMap<String, Vec<PlacedTask>>, EngineError> {
        let tasks = engine.service_tasks(services)?;
        let unknown: Vec<String> = tasks
            .iter()
            .map(|t| t.node_id.clone())
            .filter(|id| !id.is_empty() && !self.known.contains_key(id))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !unknown.is_empty() {
            self.known.extend(engine.nodes(&unknown)?);
        }
        let mut by_service: BTreeMap<String, Vec<PlacedTask>> = BTreeMap::new();
        for task in tasks {
            let node = self.known.get(&task.node_id).cloned().unwrap_or(NodeInfo {
                hostname: String::new(),
                address: String::new(),
            });
            by_service
                .entry(task.service_id.clone())
                .or_default()
                .push(PlacedTask { task, node });
        }
        Ok(by_service)
    }
}

/// A task that failed for good: `component` names it, the rest is Swarm's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub node: String,
    pub state: String,
    pub error: String,
    pub exit_code: Option<i64>,
}

/// The failures among `tasks` beyond what `restarts` allows: Swarm replaces a failed task
/// itself while attempts are left, so only the failures past that count fail the run.
pub fn failure_of(tasks: &[PlacedTask], restarts: u32) -> Option<TaskFailure> {
    let failed: Vec<&PlacedTask> = tasks
        .iter()
        .filter(|t| matches!(t.task.state.as_str(), "failed" | "rejected"))
        .collect();
    // Per slot: more failures than restarts allowed (a rejected task is never retried by the
    // same spec with any hope, so it fails at once).
    let mut per_slot: BTreeMap<u64, u32> = BTreeMap::new();
    for task in &failed {
        let count = per_slot.entry(task.task.slot).or_default();
        *count += 1;
        if task.task.state == "rejected" || *count > restarts {
            return Some(TaskFailure {
                node: task.node.hostname.clone(),
                state: task.task.state.clone(),
                error: task.task.error.clone(),
                exit_code: task.task.exit_code,
            });
        }
    }
    None
}

/// The tasks Swarm wants running now.
pub fn current(tasks: &[PlacedTask]) -> Vec<&PlacedTask> {
    tasks
        .iter()
        .filter(|t| t.task.desired_state == "running" && !t.task.ended())
        .collect()
}

/// Whether `replicas` tasks all ran to completion (exit 0) and none is still wanted running.
pub fn completed(tasks: &[PlacedTask], replicas: u32) -> bool {
    let complete = tasks.iter().filter(|t| t.task.state == "complete").count();
    complete >= replicas as usize && current(tasks).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(slot: u64, state: &str, desired: &str, node: &str) -> PlacedTask {
        PlacedTask {
            task: Task {
                id: format!("t{slot}{state}"),
                service_id: "s".into(),
                slot,
                node_id: node.into(),
                state: state.into(),
                desired_state: desired.into(),
                error: format!("{state} here"),
                exit_code: None,
                ports: BTreeMap::from([(8088, 30001)]),
                addresses: BTreeMap::new(),
            },
            node: NodeInfo {
                hostname: node.into(),
                address: "10.0.0.5".into(),
            },
        }
    }

    #[test]
    fn a_failure_counts_once_its_restarts_are_used_up() {
        let tasks = vec![
            task(1, "failed", "shutdown", "n1"),
            task(1, "running", "running", "n2"),
        ];
        assert_eq!(failure_of(&tasks, 1), None);
        let failure = failure_of(&tasks, 0).unwrap();
        assert_eq!(
            (failure.node.as_str(), failure.error.as_str()),
            ("n1", "failed here")
        );
        let rejected = vec![task(2, "rejected", "shutdown", "n3")];
        assert_eq!(failure_of(&rejected, 3).unwrap().state, "rejected");
    }

    #[test]
    fn completion_needs_every_replica_complete_and_none_running() {
        let one = vec![task(1, "complete", "shutdown", "n1")];
        assert!(completed(&one, 1));
        assert!(!completed(&one, 2));
        let more = vec![
            task(1, "complete", "shutdown", "n1"),
            task(2, "running", "running", "n2"),
        ];
        assert!(!completed(&more, 1));
        assert_eq!(
            more[1].address_of(8088),
            Some("10.0.0.5:30001".parse().unwrap())
        );
        assert_eq!(more[1].address_of(9), None);
    }
}
