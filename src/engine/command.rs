//! One call of the container CLI: an argument vector (never a shell string), its own process
//! group, no stdin, a deadline, and the command line plus the CLI's stderr in every error.
//!
//! Calls in flight are recorded by process id so that a signal can end them: they run in their
//! own process groups (a terminal's Ctrl+C must not kill the `docker stop` that cleanup depends
//! on), so nothing else would. [`kill_in_flight`] is what the signal policy calls.
//!
//! A long call whose progress the user should see (`pull`) is streamed: each line it prints is
//! handed over as it comes, on the calling thread, under the same deadline and kill rules.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, BufRead as _, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// A failed container CLI call: what was run, and what the CLI said.
#[derive(Debug)]
pub struct EngineError {
    /// The command line, for the user to re-run by hand.
    pub command: String,
    /// The exit code, `None` when the CLI could not be started, was killed or timed out.
    pub code: Option<i32>,
    /// The CLI's stderr (or the spawn error), trimmed.
    pub stderr: String,
    /// Set when the CLI itself could not be started.
    pub spawn_error: Option<io::ErrorKind>,
    /// Set when the call passed its deadline and was killed.
    pub timed_out: Option<Duration>,
}

impl EngineError {
    /// The CLI could not be started at all (missing binary, no permission, ...).
    pub(crate) fn spawn_failed(command: String, error: &io::Error) -> EngineError {
        EngineError {
            command,
            code: None,
            stderr: error.to_string(),
            spawn_error: Some(error.kind()),
            timed_out: None,
        }
    }

    /// The CLI answered with exit code 0 but said something flowctl cannot read.
    pub(crate) fn unexpected_output(command: String, what: impl fmt::Display) -> EngineError {
        EngineError {
            command,
            code: Some(0),
            stderr: format!("unexpected output ({what})"),
            spawn_error: None,
            timed_out: None,
        }
    }

    /// Whether the CLI said the container, network or image does not exist. Docker says
    /// "No such container", Podman "no such container" or "... not known"/"not found".
    pub fn is_not_found(&self) -> bool {
        self.spawn_error.is_none() && self.timed_out.is_none() && is_not_found_text(&self.stderr)
    }
}

/// Whether one line (or all) of the CLI's stderr says "does not exist".
pub(crate) fn is_not_found_text(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("no such") || text.contains("not known") || text.contains("not found")
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(limit) = self.timed_out {
            return write!(
                f,
                "`{}` did not finish within {} s and was stopped: the container engine is not \
                 answering (is its daemon hung?); FLOWCTL_ENGINE_TIMEOUT / --engine-timeout sets \
                 this deadline",
                self.command,
                limit.as_secs()
            );
        }
        match (self.spawn_error, self.code) {
            (Some(io::ErrorKind::NotFound), _) => write!(
                f,
                "cannot run `{}`: the container CLI was not found (install Docker or Podman, or \
                 point --docker-bin / FLOWCTL_DOCKER_BIN at it)",
                self.command
            ),
            (Some(_), _) => write!(f, "cannot run `{}`: {}", self.command, self.stderr),
            (None, Some(code)) => write!(
                f,
                "`{}` failed with exit code {code}: {}",
                self.command, self.stderr
            ),
            (None, None) => write!(
                f,
                "`{}` was killed by a signal: {}",
                self.command, self.stderr
            ),
        }
    }
}

impl std::error::Error for EngineError {}

/// Process ids (= process group ids) of the CLI calls running now.
static IN_FLIGHT: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn in_flight() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner())
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}
const SIGKILL: i32 = 9;

/// Kills the process group of `pid` (the CLI and anything it started).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; a negative pid names the process group our
        // own child leads (process_group(0)), so it cannot reach anyone else's processes.
        unsafe {
            kill(-pid, SIGKILL);
        }
    }
}

/// How many times [`kill_in_flight`] ran in this process (its one caller is the signal policy).
static KILLS: AtomicUsize = AtomicUsize::new(0);

/// Whether [`kill_in_flight`] has run: a signal arrived, and a call that failed since may have
/// failed because it was killed.
pub fn calls_were_killed() -> bool {
    KILLS.load(Ordering::SeqCst) > 0
}

/// Kills every container CLI call that is running now (with its process group). Called by the
/// signal policy so that a hung engine call cannot hold flowctl; the callers see an error.
pub fn kill_in_flight() -> usize {
    KILLS.fetch_add(1, Ordering::SeqCst);
    let pids: Vec<u32> = in_flight().iter().copied().collect();
    for pid in &pids {
        kill_group(*pid);
    }
    pids.len()
}

/// Run-check-capture in one call, with the command line and stderr in the error (as cross-rs
/// does for its engine calls).
pub trait CommandExt {
    /// The command as a user could type it (arguments quoted where needed).
    fn command_line(&self) -> String;
    /// Runs to completion (killed after `deadline`); a non-zero exit is an error.
    fn run_checked(&mut self, deadline: Duration) -> Result<(), EngineError>;
    /// Runs to completion (killed after `deadline`) and returns stdout; a non-zero exit is an
    /// error.
    fn capture(&mut self, deadline: Duration) -> Result<String, EngineError>;
    /// Runs to completion (killed after `deadline`) and returns whatever it printed, whatever
    /// its exit code.
    fn output_within(&mut self, deadline: Duration) -> Result<Output, EngineError>;
    /// Runs to completion (killed after `deadline`), handing each line the CLI prints on stdout
    /// or stderr to `on_line` as it comes (a `\r` also ends a line); returns stdout. A non-zero
    /// exit is an error whose stderr is everything the CLI printed there.
    fn stream_lines(
        &mut self,
        deadline: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String, EngineError>;
    /// Runs to completion with no deadline, untouched by [`kill_in_flight`]: for calls that
    /// last as long as a container does (`wait`), which a signal must not cut short (teardown
    /// still needs to know how the container ended).
    fn capture_unbounded(&mut self) -> Result<String, EngineError>;
    /// Starts a call whose output is read while it runs (`start --attach`), stdout and stderr
    /// piped. It counts as in flight (a signal kills it) until [`Streaming::release`]d.
    fn spawn_streaming(&mut self) -> Result<Streaming, EngineError>;
}

impl CommandExt for Command {
    fn command_line(&self) -> String {
        std::iter::once(self.get_program())
            .chain(self.get_args())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn run_checked(&mut self, deadline: Duration) -> Result<(), EngineError> {
        self.capture(deadline).map(|_| ())
    }

    fn capture(&mut self, deadline: Duration) -> Result<String, EngineError> {
        let output = self.output_within(deadline)?;
        checked(self, output)
    }

    fn capture_unbounded(&mut self) -> Result<String, EngineError> {
        let output = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .output()
            .map_err(|e| EngineError::spawn_failed(self.command_line(), &e))?;
        checked(self, output)
    }

    fn spawn_streaming(&mut self) -> Result<Streaming, EngineError> {
        let child = spawn_in_flight(self)?;
        Ok(Streaming {
            pid: child.id(),
            child,
            command: self.command_line(),
            in_flight: true,
        })
    }

    fn stream_lines(
        &mut self,
        deadline: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String, EngineError> {
        let mut child = spawn_in_flight(self)?;
        let pid = child.id();
        let started = Instant::now();
        let (line_tx, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            spawn_line_reader(stdout, Stream::Stdout, line_tx.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            spawn_line_reader(stderr, Stream::Stderr, line_tx.clone());
        }
        drop(line_tx);
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            match lines.recv_timeout(left) {
                Ok((stream, line)) => {
                    let text = match stream {
                        Stream::Stdout => &mut stdout,
                        Stream::Stderr => &mut stderr,
                    };
                    text.push_str(&line);
                    text.push('\n');
                    on_line(&line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
            }
        }
        // Both pipes are closed: the CLI has (almost always) exited; it still gets the rest
        // of its deadline to say so.
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) if !timed_out => break Ok(status),
                Ok(None) if !timed_out && started.elapsed() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Ok(_) => {
                    kill_group(pid);
                    let _ = child.wait();
                    break Err(EngineError {
                        command: self.command_line(),
                        code: None,
                        stderr: stderr.trim().to_string(),
                        spawn_error: None,
                        timed_out: Some(deadline),
                    });
                }
                Err(e) => {
                    kill_group(pid);
                    break Err(EngineError::spawn_failed(self.command_line(), &e));
                }
            }
        };
        in_flight().remove(&pid);
        let status = status?;
        if status.success() {
            Ok(stdout)
        } else {
            Err(EngineError {
                command: self.command_line(),
                code: status.code(),
                stderr: stderr.trim().to_string(),
                spawn_error: None,
                timed_out: None,
            })
        }
    }

    fn output_within(&mut self, deadline: Duration) -> Result<Output, EngineError> {
        let child = spawn_in_flight(self)?;
        let pid = child.id();
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = thread::Builder::new()
            .name("engine-call".into())
            .spawn(move || {
                let _ = done_tx.send(child.wait_with_output());
            });
        let result = match waiter {
            Ok(_) => match done_rx.recv_timeout(deadline) {
                Ok(output) => {
                    output.map_err(|e| EngineError::spawn_failed(self.command_line(), &e))
                }
                Err(_) => {
                    kill_group(pid);
                    // The waiter ends once the killed group's pipes close.
                    let _ = done_rx.recv_timeout(Duration::from_secs(5));
                    Err(EngineError {
                        command: self.command_line(),
                        code: None,
                        stderr: String::new(),
                        spawn_error: None,
                        timed_out: Some(deadline),
                    })
                }
            },
            Err(e) => {
                kill_group(pid);
                Err(EngineError::spawn_failed(self.command_line(), &e))
            }
        };
        in_flight().remove(&pid);
        result
    }
}

/// Spawns `command` (no stdin, stdout and stderr piped, its own process group) and records it
/// in flight. The record's lock is held across the spawn, so a signal's [`kill_in_flight`]
/// either runs before the process exists or sees its pid: it cannot miss it.
fn spawn_in_flight(command: &mut Command) -> Result<Child, EngineError> {
    let mut calls = in_flight();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| EngineError::spawn_failed(command.command_line(), &e))?;
    calls.insert(child.id());
    Ok(child)
}

/// A CLI call whose output is read while it runs. Until [`Streaming::release`] it is in
/// flight like any call (a signal kills it); after, it lives until it ends or is killed by its
/// owner, so that the output of a container stopped by teardown is still read to its end.
#[derive(Debug)]
pub struct Streaming {
    pub child: Child,
    pid: u32,
    command: String,
    in_flight: bool,
}

impl Streaming {
    /// The command line, for errors.
    pub fn command_line(&self) -> &str {
        &self.command
    }

    /// No longer killed by [`kill_in_flight`].
    pub fn release(&mut self) {
        if std::mem::take(&mut self.in_flight) {
            in_flight().remove(&self.pid);
        }
    }

    /// Kills the call with its process group and reaps it.
    pub fn kill(&mut self) {
        // Only while it runs: once reaped, its pid may belong to someone else.
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_group(self.pid);
        }
        let _ = self.child.wait();
        self.release();
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.release();
    }
}

/// Which of the CLI's output streams a line came from.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Reads `pipe` on a thread of its own, sending each line (ended by `\n` or `\r`, without
/// it; empty ones left out) to `lines`. Should no thread start, the pipe closes, and the CLI
/// sees a broken pipe when it writes.
fn spawn_line_reader(
    pipe: impl Read + Send + 'static,
    stream: Stream,
    lines: mpsc::Sender<(Stream, String)>,
) {
    let _ = thread::Builder::new()
        .name("engine-output".into())
        .spawn(move || {
            let mut pipe = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match pipe.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        for part in line.split(|b| *b == b'\n' || *b == b'\r') {
                            let text = String::from_utf8_lossy(part);
                            if !text.trim().is_empty() && lines.send((stream, text.into())).is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }
        });
}

/// Stdout of a successful call; otherwise the error with the command line and stderr.
fn checked(command: &Command, output: Output) -> Result<String, EngineError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(EngineError {
            command: command.command_line(),
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            spawn_error: None,
            timed_out: None,
        })
    }
}

/// Quotes one argument for display only; commands are always run as argument vectors.
pub(crate) fn quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%{}".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_its_deadline_is_killed_with_its_process_group_and_named() {
        // `sh` starts a grandchild that would hold the pipes open if only `sh` were killed.
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 30 & sleep 30"]);
        let started = Instant::now();
        let err = command.capture(Duration::from_millis(300)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not killed: {err}"
        );
        assert_eq!(err.timed_out, Some(Duration::from_millis(300)));
        let text = err.to_string();
        assert!(text.contains("sh -c 'sleep 30 & sleep 30'"), "{text}");
        assert!(text.contains("not answering"), "{text}");
    }

    #[test]
    fn streamed_lines_arrive_in_order_from_both_streams_and_errors_keep_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; printf 'two\\rthree\\n' >&2; echo four"]);
        let mut seen = Vec::new();
        let stdout = command
            .stream_lines(Duration::from_secs(20), &mut |line| {
                seen.push(line.to_string())
            })
            .unwrap();
        assert_eq!(stdout, "one\nfour\n");
        seen.sort();
        assert_eq!(seen, ["four", "one", "three", "two"]);

        let mut failing = Command::new("sh");
        failing.args(["-c", "echo progress >&2; echo 'Error: denied' >&2; exit 3"]);
        let err = failing
            .stream_lines(Duration::from_secs(20), &mut |_| {})
            .unwrap_err();
        assert_eq!(err.code, Some(3));
        assert_eq!(err.stderr, "progress\nError: denied");
    }

    #[test]
    fn a_streamed_call_past_its_deadline_is_killed() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; sleep 30 & sleep 30"]);
        let mut seen = Vec::new();
        let err = command
            .stream_lines(Duration::from_millis(300), &mut |line| {
                seen.push(line.to_string())
            })
            .unwrap_err();
        assert_eq!(err.timed_out, Some(Duration::from_millis(300)));
        assert_eq!(seen, ["started"]);
    }
}
