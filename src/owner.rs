//! Which process owns a run, recorded in labels so `flowctl gc` can tell a dead run's leftovers
//! from a live run's containers.
//!
//! A pid alone is not enough (pids are reused), so the owner is identified by host name, boot
//! id and the process start time from `/proc`, which together are unique.

use std::collections::BTreeMap;
use std::fs;

use crate::labels;

/// The identity of a `flowctl run` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOwner {
    pub host: String,
    pub boot_id: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Whether a run's owner is still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Cannot be judged from here (e.g. started on another host against the same daemon).
    Unknown(String),
}

impl RunOwner {
    /// The current process.
    pub fn current() -> RunOwner {
        let pid = std::process::id();
        RunOwner {
            host: hostname(),
            boot_id: boot_id(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// The labels that record this owner on what the run creates.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::OWNER_HOST.to_string(), self.host.clone()),
            (labels::OWNER_BOOT.to_string(), self.boot_id.clone()),
            (labels::OWNER_PID.to_string(), self.pid.to_string()),
            (
                labels::OWNER_START.to_string(),
                self.start_ticks.to_string(),
            ),
        ])
    }

    /// Reads the owner back from a container's or network's labels.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<RunOwner> {
        Some(RunOwner {
            host: labels.get(labels::OWNER_HOST)?.clone(),
            boot_id: labels.get(labels::OWNER_BOOT)?.clone(),
            pid: labels.get(labels::OWNER_PID)?.parse().ok()?,
            start_ticks: labels.get(labels::OWNER_START)?.parse().ok()?,
        })
    }

    /// Whether this owner is still running, judged from this machine.
    pub fn liveness(&self) -> Liveness {
        if self.host != hostname() {
            return Liveness::Unknown(format!("started on host `{}`", self.host));
        }
        if self.boot_id != boot_id() {
            // Same host, rebooted since: the process is gone.
            return Liveness::Dead;
        }
        match start_ticks(self.pid) {
            Some(ticks) if ticks == self.start_ticks => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The start time of `pid`, or `None` when no such process exists.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3; starttime is field 22.
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_round_trips_through_labels() {
        let owner = RunOwner::current();
        assert!(owner.start_ticks > 0);
        assert_eq!(owner.liveness(), Liveness::Alive);
        let labels = labels::run_labels("p", None, "r", owner.labels());
        assert_eq!(RunOwner::from_labels(&labels), Some(owner));
    }

    #[test]
    fn a_reused_pid_or_a_finished_process_is_dead() {
        let mut owner = RunOwner::current();
        owner.start_ticks += 1;
        assert_eq!(owner.liveness(), Liveness::Dead);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let owner = RunOwner {
            pid,
            ..RunOwner::current()
        };
        assert_eq!(owner.liveness(), Liveness::Dead);
    }

    #[test]
    fn another_host_is_unknown() {
        let owner = RunOwner {
            host: "elsewhere.invalid".into(),
            ..RunOwner::current()
        };
        assert!(matches!(owner.liveness(), Liveness::Unknown(_)));
    }
}
