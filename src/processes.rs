//! What a `driver: process` run started, and stopping exactly that. Containers carry labels the
//! engine keeps; processes have no such thing, so each run keeps a record on disk, one JSON file
//! per run in the user's runtime directory ([`records_dir`]): its owner (as in labels), and for
//! every process it started the pid and the start time from `/proc`. The reaper (after `kill -9`
//! of flowctl) and `flowctl gc` read it and stop those processes and their process groups'
//! members, never anything else: a pid is only signalled while `/proc` shows the same process
//! (same start time, this boot), and a group member only if it started after its leader.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::owner::{self, Liveness, RunOwner};

/// Overrides [`records_dir`] (tests keep their records apart with it).
pub const RUNTIME_DIR_VAR: &str = "FLOWCTL_RUNTIME_DIR";

/// After SIGKILL, how long stopping waits for the processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Pause between looks at `/proc` while waiting.
const POLL: Duration = Duration::from_millis(20);

/// One started process: its component and its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedProcess {
    pub component: String,
    /// Also its process group: each is started as the leader of a group of its own.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` when it was started.
    pub start_ticks: u64,
    /// Its SIGTERM-to-SIGKILL grace period.
    pub stop_grace_ms: u64,
}

/// A process run's record (`<records_dir>/<run_id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub owner_host: String,
    pub owner_boot_id: String,
    pub owner_pid: u32,
    pub owner_start_ticks: u64,
    /// `ip:port` of the run's control plane, for `flowctl status`.
    #[serde(default)]
    pub control_plane: Option<String>,
    #[serde(default)]
    pub processes: Vec<RecordedProcess>,
}

impl RunRecord {
    /// A record for a run of the current process.
    pub fn new(run_id: &str, pipeline: &str) -> RunRecord {
        let owner = RunOwner::current();
        RunRecord {
            run_id: run_id.to_string(),
            pipeline: pipeline.to_string(),
            owner_host: owner.host,
            owner_boot_id: owner.boot_id,
            owner_pid: owner.pid,
            owner_start_ticks: owner.start_ticks,
            control_plane: None,
            processes: Vec::new(),
        }
    }

    /// The `flowctl run` that wrote it.
    pub fn owner(&self) -> RunOwner {
        RunOwner {
            host: self.owner_host.clone(),
            boot_id: self.owner_boot_id.clone(),
            pid: self.owner_pid,
            start_ticks: self.owner_start_ticks,
        }
    }

    /// Whether that run is still alive.
    pub fn liveness(&self) -> Liveness {
        self.owner().liveness()
    }

    /// Where the record of `run_id` lives.
    pub fn path(run_id: &str) -> Result<PathBuf> {
        Ok(records_dir()?.join(format!("{run_id}.json")))
    }

    /// Writes the record whole (a temporary file renamed over it, so a reader never sees half).
    pub fn save(&self) -> Result<PathBuf> {
        let path = RunRecord::path(&self.run_id)?;
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_vec_pretty(self)?;
        let mut file = fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Reads the record at `path`.
    pub fn load(path: &Path) -> Result<RunRecord> {
        let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is no run record", path.display()))
    }

    /// Every record in [`records_dir`], with its path; unreadable ones are skipped.
    pub fn all() -> Result<Vec<(PathBuf, RunRecord)>> {
        let dir = records_dir()?;
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Ok(record) = RunRecord::load(&path) {
                    records.push((path, record));
                }
            }
        }
        records.sort_by(|a, b| a.1.run_id.cmp(&b.1.run_id));
        Ok(records)
    }

    /// Stops every recorded process of this boot that still runs, and its group's members:
    /// SIGTERM, up to `grace` (`None`: each one's own grace period; zero: SIGKILL at once),
    /// then SIGKILL, sinks first (the reverse of the record's start order). Returns the
    /// components that had something left to stop; `Err` lists what would not go.
    pub fn stop_all(&self, grace: Option<Duration>) -> Result<Vec<String>, String> {
        if self.owner_boot_id != owner::boot_id() {
            return Ok(Vec::new()); // rebooted since: nothing of it runs
        }
        let mut stopped = Vec::new();
        let mut left = Vec::new();
        for process in self.processes.iter().rev() {
            let group = Group::of(process);
            let grace = grace.unwrap_or(Duration::from_millis(process.stop_grace_ms));
            match group.stop(grace) {
                Ok(true) => stopped.push(process.component.clone()),
                Ok(false) => {}
                Err(pids) => left.push(format!("{} (pids {pids:?})", process.component)),
            }
        }
        if left.is_empty() {
            Ok(stopped)
        } else {
            Err(format!("still running after SIGKILL: {}", left.join(", ")))
        }
    }
}

/// The runtime directory of flowctl's run records, created (mode 0700) if needed:
/// `$FLOWCTL_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/flowctl/runs`, else
/// `/tmp/flowctl-<uid>/runs`.
pub fn records_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os(RUNTIME_DIR_VAR).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(runtime) => PathBuf::from(runtime).join("flowctl/runs"),
            None => std::env::temp_dir()
                .join(format!("flowctl-{}", current_uid()))
                .join("runs"),
        },
    };
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Records name processes to kill: only their user may write them.
    use std::os::unix::fs::PermissionsExt as _;
    for path in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
        let meta = fs::metadata(path)?;
        if std::os::unix::fs::MetadataExt::uid(&meta) == current_uid() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        }
    }
    Ok(dir)
}

fn current_uid() -> u32 {
    extern "C" {
        fn getuid() -> u32;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { getuid() }
}

/// What `/proc/<pid>/stat` says of a process: its group, start time and whether it is a
/// zombie (exited, not yet reaped: it runs no more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pgrp: u32,
    pub start_ticks: u64,
    pub zombie: bool,
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold anything: split after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // Fields after the name start at field 3: state is 3, pgrp 5, starttime 22.
    Some(ProcStat {
        zombie: matches!(*fields.first()?, "Z" | "X"),
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        start_ticks: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// A recorded process's group: the leader (if it is still the recorded process) and the
/// members that started after it.
struct Group {
    pgid: u32,
    since: u64,
}

impl Group {
    fn of(process: &RecordedProcess) -> Group {
        Group {
            pgid: process.pid,
            since: process.start_ticks,
        }
    }

    /// The pids of the group's live members that started no earlier than its leader (the
    /// leader included while it is the recorded process): a pid reused since is never one.
    fn members(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                proc_stat(*pid).is_some_and(|stat| {
                    stat.pgrp == self.pgid && stat.start_ticks >= self.since && !stat.zombie
                })
            })
            .collect()
    }

    /// SIGTERM, `grace`, SIGKILL. `Ok(true)` if something was stopped, `Ok(false)` if
    /// nothing ran; `Err` with what is left.
    fn stop(&self, grace: Duration) -> Result<bool, Vec<u32>> {
        let first = self.members();
        if first.is_empty() {
            return Ok(false);
        }
        if !grace.is_zero() {
            self.signal_all(SIGTERM);
            if self.wait_gone(grace) {
                return Ok(true);
            }
        }
        self.signal_all(SIGKILL);
        if self.wait_gone(KILL_WAIT) {
            Ok(true)
        } else {
            Err(self.members())
        }
    }

    /// Signals each member found now (each checked by start time just before).
    fn signal_all(&self, signal: i32) {
        for pid in self.members() {
            send(pid, signal);
        }
    }

    /// Whether the group is empty within `limit` (members forked meanwhile are signalled too).
    fn wait_gone(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.members().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }
}

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

/// Sends `signal` to `pid` (errors: it is gone already).
pub fn send(pid: u32, signal: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if pid > 1 {
        // SAFETY: kill has no memory effects; a positive pid names one process.
        unsafe {
            kill(pid, signal);
        }
    }
}

/// Stops the group that `pid` (started at `start_ticks`) leads, as [`RunRecord::stop_all`]
/// does for each recorded process.
pub fn stop_group(pid: u32, start_ticks: u64, grace: Duration) -> Result<bool, Vec<u32>> {
    Group {
        pgid: pid,
        since: start_ticks,
    }
    .stop(grace)
}

/// The ports this run gave its processes, reserved machine-wide until it ends: a port is free
/// from when flowctl picks it until the process listens on it, and another flowctl run picking
/// meanwhile must not take it too. A reservation is a file `PORT` in [`reservations_dir`],
/// created exclusively and naming its run's flowctl (pid and start time); one whose flowctl is
/// gone is taken over.
#[derive(Debug, Default)]
pub struct Reservations {
    files: Vec<std::path::PathBuf>,
}

impl Drop for Reservations {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `$TMPDIR/flowctl-ports`, shared by every flowctl of the machine (sticky and world-writable,
/// as /tmp is, so each user removes only their own files).
fn reservations_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join("flowctl-ports");
    if std::fs::create_dir(&dir).is_ok() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    dir.is_dir().then_some(dir)
}

impl Reservations {
    /// Reserves `port` for this run; `false` if another live run holds it.
    pub fn reserve(&mut self, port: u16) -> bool {
        use std::io::Write as _;
        let Some(dir) = reservations_dir() else {
            return true; // no shared folder: the bind check alone
        };
        let path = dir.join(port.to_string());
        let me = crate::owner::RunOwner::current();
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{} {}", me.pid, me.start_ticks);
                    self.files.push(path);
                    return true;
                }
                Err(_) => {
                    if holder_alive(&path) || std::fs::remove_file(&path).is_err() {
                        return false;
                    }
                }
            }
        }
        false
    }
}

/// Whether the flowctl named in the reservation file `path` still runs (a file being written
/// this instant, or unreadable, counts as held).
fn holder_alive(path: &Path) -> bool {
    let holder = fs::read_to_string(path).unwrap_or_default();
    let mut fields = holder.split_whitespace().map(|f| f.parse::<u64>().ok());
    match (fields.next().flatten(), fields.next().flatten()) {
        (Some(pid), Some(ticks)) => {
            proc_stat(pid as u32).is_some_and(|stat| stat.start_ticks == ticks && !stat.zombie)
        }
        _ => true,
    }
}

/// Deletes the port reservations of flowctl runs that are gone (what a killed run leaves; the
/// reaper and `gc` call this). Only this user's files can go.
pub fn sweep_stale_reservations() {
    let Some(dir) = reservations_dir() else {
        return;
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !holder_alive(&path) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn stat_lines_are_read_after_the_name_whatever_it_holds() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 100";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            (stat.pgrp, stat.start_ticks, stat.zombie),
            (4242, 987654, false)
        );
        let zombie = line.replace(") S ", ") Z ");
        assert!(parse_stat(&zombie).unwrap().zombie);
        assert_eq!(parse_stat("garbage"), None);
    }

    /// A real group: the leader and the child it forked both go; SIGTERM ignored, SIGKILL
    /// ends them; a record with a start time that does not match stops nothing.
    #[test]
    fn a_recorded_group_is_stopped_whole_and_a_stale_record_touches_nothing() {
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = leader.id();
        let start_ticks = proc_stat(pid).unwrap().start_ticks;
        let group = Group {
            pgid: pid,
            since: start_ticks,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while group.members().len() < 2 && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        assert_eq!(group.members().len(), 2, "the leader and its sleep");

        let stale = Group {
            pgid: pid,
            since: start_ticks + 1_000_000,
        };
        assert_eq!(stale.stop(Duration::ZERO), Ok(false));
        assert_eq!(group.members().len(), 2);

        assert_eq!(group.stop(Duration::from_millis(300)), Ok(true));
        leader.wait().unwrap();
        assert!(group.members().is_empty());
    }
}
