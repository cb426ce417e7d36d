//! The reaper: a tiny process of flowctl itself that removes a run's containers and networks
//! when the `flowctl run` that made them dies without cleaning up (`kill -9`, OOM killer, a
//! crash that skips destructors).
//!
//! `flowctl run` starts it (`flowctl __reap`, the current binary re-executed) before it creates
//! anything, in its own session so that no terminal signal (Ctrl+C, SIGHUP on a closed terminal)
//! reaches it, and keeps the write end of a pipe to its stdin. The kernel closes that pipe when
//! flowctl exits, however it exits, so the reaper sees end-of-file exactly when its parent is
//! gone. A `flowctl run` that cleaned up itself writes one byte first, and the reaper leaves
//! without touching the engine. Otherwise the reaper removes everything labelled with the run
//! through [`cleanup::remove_run`], the same function every other exit path uses, and exits.
//! For a `driver: process` run it stops the processes of the run's record instead
//! ([`crate::processes`]) and deletes the record. No container, no daemon: nothing of flowctl
//! remains afterwards.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cleanup;
use crate::duration;
use crate::engine::Engine;

/// The hidden subcommand that runs [`watch`].
pub const SUBCOMMAND: &str = "__reap";
/// The byte a parent that cleaned up writes to dismiss its reaper.
const DISMISS: u8 = b'd';
/// After the parent died, a `docker create` it had started may still be running: keep
/// sweeping until a sweep finds nothing and at least this long has passed.
const SETTLE: Duration = Duration::from_secs(3);
/// Give up sweeping after this long (the engine is down or refuses; `flowctl gc` remains).
const GIVE_UP: Duration = Duration::from_secs(60);
/// Pause between sweeps.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// The parent's handle on its reaper: the write end of the pipe and the child process.
#[derive(Debug)]
pub struct Reaper {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Reaper {
    /// Starts `flowctl __reap` for `run_id`, in a new session, with its stdin a pipe from this
    /// process. Call before creating anything of the run. The reaper is told what `engine` was
    /// detected as, so it speaks the same dialect without asking again.
    pub fn spawn(engine: &Engine, run_id: &str, swarm: bool) -> io::Result<Reaper> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .arg(SUBCOMMAND)
            .arg("--run-id")
            .arg(run_id)
            .arg("--engine-kind")
            .arg(engine.kind().as_str())
            .arg("--docker-bin")
            .arg(engine.program())
            .arg("--engine-timeout")
            .arg(duration::format(engine.deadlines().call))
            .args(swarm.then_some("--swarm"));
        Reaper::start(command)
    }

    /// Starts `flowctl __reap --processes` for the `driver: process` run `run_id`, whose record
    /// names what it stops. Call before the first process starts.
    pub fn spawn_for_processes(run_id: &str) -> io::Result<Reaper> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg(SUBCOMMAND)
            .arg("--run-id")
            .arg(run_id)
            .arg("--processes");
        Reaper::start(command)
    }

    fn start(mut command: Command) -> io::Result<Reaper> {
        command
            .stdin(Stdio::piped())
            // Not the parent's stdout/stderr: whoever reads those (a pipe, a terminal) must see
            // them close when flowctl exits, not when the reaper does.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            command.pre_exec(|| {
                if setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pipe = child.stdin.take();
        Ok(Reaper { child, pipe })
    }

    /// The reaper's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the reaper that the run is already removed, and waits for it to exit.
    pub fn dismiss(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            // If the write fails the reaper is gone already, or sees end-of-file and sweeps a
            // run that has nothing left: harmless either way.
            let _ = pipe.write_all(&[DISMISS]);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Reaper {
    /// Closing the pipe without dismissing makes the reaper sweep (e.g. cleanup left
    /// something). It is not waited for: sweeping may take a while, and it outlives flowctl by
    /// design.
    fn drop(&mut self) {
        self.pipe.take();
    }
}

extern "C" {
    fn setsid() -> i32;
}

/// What ended the reaper's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The parent removed its run and said so.
    Dismissed,
    /// The pipe closed without a word: the parent is gone; its run must be removed.
    ParentGone,
}

/// Blocks until the parent dismisses the reaper or its end of `input` closes.
pub fn wait_for_parent(mut input: impl Read) -> Verdict {
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => return Verdict::ParentGone,
            Ok(_) if byte[0] == DISMISS => return Verdict::Dismissed,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Verdict::ParentGone,
        }
    }
}

/// What a reaper removes.
#[derive(Debug)]
pub enum Target<'a> {
    /// Everything labelled with the run on `engine` (with `swarm`, its services too).
    Engine { engine: &'a Engine, swarm: bool },
    /// The processes of the run's record.
    Processes,
}

/// The reaper's main: waits on stdin, then removes `run_id` unless dismissed. Returns whether
/// everything of the run is gone.
pub fn watch(run_id: &str, target: Target) -> bool {
    match (wait_for_parent(io::stdin().lock()), target) {
        (Verdict::Dismissed, _) => true,
        (Verdict::ParentGone, Target::Engine { engine, swarm }) => sweep(engine, run_id, swarm),
        (Verdict::ParentGone, Target::Processes) => stop_recorded(run_id),
    }
}

/// Stops the processes of `run_id`'s record, each with its grace period, and deletes the
/// record once nothing of it runs. No record: the run removed everything itself.
fn stop_recorded(run_id: &str) -> bool {
    let Ok(path) = crate::processes::RunRecord::path(run_id) else {
        return false;
    };
    let Ok(record) = crate::processes::RunRecord::load(&path) else {
        return !path.exists();
    };
    let stopped = record.stop_all(None).is_ok();
    if stopped {
        let _ = std::fs::remove_file(&path);
    }
    crate::processes::sweep_stale_reservations();
    stopped
}

/// Removes the run until a sweep finds nothing after [`SETTLE`], or [`GIVE_UP`] passes.
fn sweep(engine: &Engine, run_id: &str, swarm: bool) -> bool {
    let started = Instant::now();
    loop {
        let removal = cleanup::remove_forced(engine, run_id, swarm);
        let nothing_found = removal.services.is_empty()
            && removal.containers.is_empty()
            && removal.networks.is_empty();
        if removal.is_complete() && nothing_found && started.elapsed() >= SETTLE {
            return true;
        }
        if started.elapsed() >= GIVE_UP {
            return removal.is_complete();
        }
        thread::sleep(SWEEP_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_file_means_the_parent_is_gone_and_the_byte_dismisses() {
        assert_eq!(wait_for_parent(&b""[..]), Verdict::ParentGone);
        assert_eq!(wait_for_parent(&b"d"[..]), Verdict::Dismissed);
        // Anything else is not a dismissal.
        assert_eq!(wait_for_parent(&b"xy"[..]), Verdict::ParentGone);
    }
}
