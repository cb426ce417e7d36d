//! The processes of a process run: each started as the leader of a process group of its own
//! (so stopping it stops whatever it forked), with the file's env over flowctl's own plus what
//! flowctl injects, its output relayed with its prefix, its exit watched on a thread, and its
//! pid and start time written to the run's record before anything else happens. [`Children`]
//! stops them in reverse start order (SIGTERM to the group, the grace period, SIGKILL) on every
//! exit path, also when dropped while unwinding, and dismisses the reaper once all are gone.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::events::{Exit, RunEvents};
use crate::logs::{elapsed_ms, Console, LogMux};
use crate::plan::{ComponentPlan, RunPlan};
use crate::processes::{self, RecordedProcess, RunRecord};
use crate::reaper::Reaper;

/// The run's processes and their record.
#[derive(Debug)]
pub struct Children {
    record: Mutex<RunRecord>,
    /// Component ids, one group per level, sinks first, with the group's longest grace.
    order: Vec<(Vec<String>, Duration)>,
    console: Console,
    reaper: Option<Reaper>,
    done: bool,
}

impl Children {
    /// Writes the run's (empty) record; the reaper is started after, so that it always finds
    /// one.
    pub fn new(run_id: &str, plan: &RunPlan, console: Console) -> Result<Children> {
        let record = RunRecord::new(run_id, &plan.pipeline);
        let path = record.save().context("cannot write the run's record")?;
        let reaper = match Reaper::spawn_for_processes(run_id) {
            Ok(reaper) => {
                console.info(format!(
                    "reaper pid {} watches run {run_id} (record {})",
                    reaper.pid(),
                    path.display()
                ));
                Some(reaper)
            }
            Err(e) => {
                console.warn(format!(
                    "cannot start the reaper ({e}): if flowctl is killed, `flowctl gc` stops \
                     what it leaves"
                ));
                None
            }
        };
        let order = plan
            .levels()
            .into_iter()
            .rev()
            .map(|level| {
                (
                    level.iter().map(|c| c.id.clone()).collect(),
                    level.iter().map(|c| c.stop_grace).max().unwrap_or_default(),
                )
            })
            .collect();
        Ok(Children {
            record: Mutex::new(record),
            order,
            console,
            reaper,
            done: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, RunRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records where the control plane is, for `flowctl status`.
    pub fn set_control_plane(&self, address: String) -> Result<()> {
        let mut record = self.lock();
        record.control_plane = Some(address);
        record.save().map(drop)
    }

    /// After a completed run: nothing reads any more, so everything stops at once.
    pub fn completed(&mut self) {
        let ids = self.order.iter().flat_map(|(ids, _)| ids.clone()).collect();
        let grace = self.order.iter().map(|(_, g)| *g).max().unwrap_or_default();
        self.order = vec![(ids, grace)];
    }

    /// Starts attempt `attempt` of `component` and returns its pid: recorded before this
    /// returns, its output relayed (colour `index`), its exit reported to `events`.
    pub fn spawn(
        &self,
        component: &ComponentPlan,
        env: &std::collections::BTreeMap<String, String>,
        attempt: u32,
        index: usize,
        logs: &LogMux,
        events: &Arc<RunEvents>,
    ) -> Result<u32> {
        let id = &component.id;
        let process = component
            .process
            .as_ref()
            .with_context(|| format!("component `{id}` is not a process"))?;
        let mut command = Command::new(&process.program);
        command
            .args(&process.args)
            .current_dir(&process.working_dir)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // The record is written while holding its lock: a forced stop that reads it meanwhile
        // waits and sees this process too.
        let mut record = self.lock();
        let mut child = command.spawn().with_context(|| {
            format!(
                "component `{id}`: cannot start {} ({})",
                process.command,
                process.program.display()
            )
        })?;
        let pid = child.id();
        // An unreaped child keeps its /proc entry, even if it exited already.
        let start_ticks = processes::proc_stat(pid).map_or(0, |stat| stat.start_ticks);
        record.processes.push(RecordedProcess {
            component: id.clone(),
            pid,
            start_ticks,
            stop_grace_ms: component.stop_grace.as_millis() as u64,
        });
        let saved = record.save();
        drop(record);
        if let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) {
            logs.follow_process(id, index, stdout, stderr);
        }
        let events = events.clone();
        let component_id = id.clone();
        thread::Builder::new()
            .name(format!("wait-{id}"))
            .spawn(move || {
                let (code, error) = match child.wait() {
                    Ok(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => (Some(i64::from(code)), None),
                        (None, Some(signal)) => (
                            Some(128 + i64::from(signal)),
                            Some(format!("was killed by signal {signal}")),
                        ),
                        (None, None) => (None, Some("stopped".to_string())),
                    },
                    Err(e) => (None, Some(format!("could not be watched: {e}"))),
                };
                events.exited(Exit {
                    component: component_id,
                    attempt,
                    code,
                    error,
                    at: SystemTime::now(),
                });
            })
            .with_context(|| format!("component `{id}`: cannot watch its process"))?;
        saved.with_context(|| format!("component `{id}`: cannot record its process"))?;
        Ok(pid)
    }

    /// Stops every process in order, once: each level's in parallel (SIGTERM to its group, its
    /// grace period, SIGKILL), then deletes the record and dismisses the reaper; whatever
    /// would not stop is said, and the record and the reaper stay for it.
    pub fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let started = Instant::now();
        let record = self.lock().clone();
        if record.processes.is_empty() {
            self.conclude(&record, Vec::new(), started);
            return;
        }
        self.console.info("stopping processes...");
        let mut left = Vec::new();
        for (ids, grace) in &self.order {
            left.extend(stop(&record, ids, *grace));
        }
        self.conclude(&record, left, started);
    }

    /// Stops the processes of the components `ids` at once (SIGTERM to each group, `grace`,
    /// SIGKILL), ahead of [`Children::teardown`], which then finds them gone: for a run that
    /// stops its processes and containers in one order. Says which would not stop.
    pub fn stop(&self, ids: &[String], grace: Duration) -> Vec<String> {
        let record = self.lock().clone();
        stop(&record, ids, grace)
    }

    fn conclude(&mut self, record: &RunRecord, left: Vec<String>, started: Instant) {
        if left.is_empty() {
            if let Ok(path) = RunRecord::path(&record.run_id) {
                let _ = std::fs::remove_file(path);
            }
            if let Some(reaper) = self.reaper.take() {
                reaper.dismiss();
            }
            self.console.info(format!(
                "stopped {} process(es) in {} ms",
                record.processes.len(),
                elapsed_ms(started)
            ));
        } else {
            self.console.warn(format!(
                "cleanup: still running after SIGKILL: {}; `flowctl gc` stops them",
                left.join(", ")
            ));
        }
    }
}

/// Stops the recorded processes of the components `ids` in parallel; those left running.
fn stop(record: &RunRecord, ids: &[String], grace: Duration) -> Vec<String> {
    let group: Vec<&RecordedProcess> = record
        .processes
        .iter()
        .filter(|p| ids.contains(&p.component))
        .collect();
    let results: Vec<(String, Result<bool, Vec<u32>>)> = thread::scope(|scope| {
        let handles: Vec<_> = group
            .iter()
            .map(|p| {
                scope.spawn(move || {
                    let result = processes::stop_group(p.pid, p.start_ticks, grace);
                    (p.component.clone(), result)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    results
        .into_iter()
        .filter_map(|(component, result)| {
            result
                .err()
                .map(|pids| format!("{component} (pids {pids:?})"))
        })
        .collect()
}

impl Drop for Children {
    fn drop(&mut self) {
        self.teardown();
    }
}
