//! Output: components' log lines multiplexed on stdout, each prefixed with its component id
//! (padded, coloured on a terminal only, like Compose), and flowctl's own progress lines on
//! stderr. With `--logs-dir`, each component's whole output (every container it ran, restarts
//! included) is also kept in `DIR/<id>.log`, unprefixed, for CI to keep.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::engine::{ContainerInfo, Engine, EngineError, Streaming};

/// ANSI colours given to components in start order.
const PALETTE: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];
/// Lines kept in memory per component for error messages (a process has no engine log).
const RECENT_LINES: usize = 40;

/// Whether to colour output: `--no-color`, `NO_COLOR` and a non-terminal all turn it off.
pub fn use_color(no_color_flag: bool, stream_is_terminal: bool) -> bool {
    !no_color_flag && stream_is_terminal && std::env::var_os("NO_COLOR").is_none()
}

/// flowctl's own messages, on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    pub color: bool,
}

impl Console {
    /// A progress line.
    pub fn info(&self, message: impl AsRef<str>) {
        self.line("1", message.as_ref());
    }

    /// A problem that does not stop the run.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.line("33", &format!("warning: {}", message.as_ref()));
    }

    fn line(&self, color: &str, message: &str) {
        let mut stderr = std::io::stderr().lock();
        let _ = if self.color {
            writeln!(stderr, "\x1b[{color}mflowctl\x1b[0m {message}")
        } else {
            writeln!(stderr, "flowctl {message}")
        };
    }
}

/// Milliseconds since `start`, for progress lines.
pub fn elapsed_ms(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

/// Writes every component's log lines to stdout with a `id | ` prefix.
#[derive(Debug)]
pub struct LogMux {
    width: usize,
    color: bool,
    out: Arc<Mutex<()>>,
    followers: Mutex<Vec<Follower>>,
    /// `--logs-dir`.
    dir: Option<PathBuf>,
    /// Each component's last lines.
    recent: Mutex<BTreeMap<String, Recent>>,
}

/// A component's last [`RECENT_LINES`] lines.
type Recent = Arc<Mutex<VecDeque<String>>>;

fn with_path(error: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// A started container's attached call (none for a process, whose pipes are read directly)
/// and the threads that relay its output.
#[derive(Debug)]
struct Follower {
    id: String,
    call: Option<Streaming>,
    readers: Vec<JoinHandle<()>>,
}

impl Follower {
    /// Whether its output may still flow.
    fn is_running(&mut self) -> bool {
        match &mut self.call {
            Some(call) => matches!(call.child.try_wait(), Ok(None)),
            None => self.readers.iter().any(|r| !r.is_finished()),
        }
    }
}

/// Where one component's lines go: stdout with its prefix, and its `--logs-dir` file.
#[derive(Debug)]
struct Sink {
    prefix: String,
    out: Arc<Mutex<()>>,
    file: Option<Mutex<std::fs::File>>,
    recent: Recent,
}

impl Sink {
    fn write(&self, line: &str) {
        {
            let mut recent = lock(&self.recent);
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(line.to_string());
        }
        if let Some(file) = &self.file {
            let _ = writeln!(lock(file), "{line}");
        }
        let _guard = lock(&self.out);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. piped into `head`) must not stop the run.
        let _ = writeln!(stdout, "{}{line}", self.prefix);
        let _ = stdout.flush();
    }
}

/// Lines held back until their call is known to have started the container (`None` after).
type Held = Arc<Mutex<Option<Vec<String>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Relays `stream` line by line to `sink` on a thread of its own (held back in `held` while
/// that still collects). `None` if no thread could start: the pipe closes, and the CLI sees a
/// broken pipe when it writes.
fn spawn_reader(
    id: &str,
    stream: Box<dyn Read + Send>,
    sink: Arc<Sink>,
    held: Option<Held>,
) -> Option<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("logs-{id}"))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches(['\n', '\r']);
                        if let Some(held) = &held {
                            if let Some(lines) = lock(held).as_mut() {
                                lines.push(text.to_string());
                                continue;
                            }
                        }
                        sink.write(text);
                    }
                }
            }
        })
        .ok()
}

impl LogMux {
    /// `ids` are all component ids (for the padding width), in start order.
    pub fn new(ids: &[&str], color: bool, dir: Option<PathBuf>) -> LogMux {
        LogMux {
            width: ids.iter().map(|id| id.len()).max().unwrap_or(0),
            color,
            out: Arc::new(Mutex::new(())),
            followers: Mutex::new(Vec::new()),
            dir,
            recent: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where component `id`'s lines go (colour `index`).
    fn sink(&self, id: &str, index: usize) -> Arc<Sink> {
        let prefix = if self.color {
            let color = PALETTE[index % PALETTE.len()];
            format!("\x1b[{color}m{id:<width$} |\x1b[0m ", width = self.width)
        } else {
            format!("{id:<width$} | ", width = self.width)
        };
        let recent = lock(&self.recent)
            .entry(id.to_string())
            .or_default()
            .clone();
        Arc::new(Sink {
            prefix,
            out: self.out.clone(),
            file: self.log_file(id),
            recent,
        })
    }

    /// Component `id`'s last lines, one per line (what error messages show of a process).
    pub fn recent(&self, id: &str) -> String {
        lock(&self.recent)
            .get(id)
            .map(|recent| lock(recent).iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Relays a started process's stdout and stderr as component `id` (colour `index`), from
    /// its first line until its pipes close.
    pub fn follow_process(
        &self,
        id: &str,
        index: usize,
        stdout: impl Read + Send + 'static,
        stderr: impl Read + Send + 'static,
    ) {
        let sink = self.sink(id, index);
        let readers = [
            spawn_reader(id, Box::new(stdout), sink.clone(), None),
            spawn_reader(id, Box::new(stderr), sink, None),
        ];
        self.lock_followers().push(Follower {
            id: id.to_string(),
            call: None,
            readers: readers.into_iter().flatten().collect(),
        });
    }

    /// Creates `--logs-dir` (if needed) and empties each component's log file, so the files
    /// hold this run's output only; the error names the file.
    pub fn prepare_dir(&self, ids: &[&str]) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|e| with_path(e, dir))?;
        for id in ids {
            let path = dir.join(format!("{id}.log"));
            std::fs::File::create(&path).map_err(|e| with_path(e, &path))?;
        }
        Ok(())
    }

    /// Starts `container` as component `id` (colour `index`) with its output relayed from its
    /// very first line (`start --attach`: attached before it starts), and returns once the
    /// engine has started it, with what the engine said of it then. Until then the call's
    /// stderr is held back: if the container does not start, it is the engine's error, not the
    /// component's output.
    pub fn start_attached(
        &self,
        engine: &Engine,
        id: &str,
        index: usize,
        container: &str,
    ) -> Result<ContainerInfo, EngineError> {
        let mut call = engine.start_attached(container)?;
        let sink = self.sink(id, index);
        let held = Arc::new(Mutex::new(Some(Vec::new())));
        let mut readers = Vec::new();
        if let Some(stdout) = call.child.stdout.take() {
            readers.push(spawn_reader(id, Box::new(stdout), sink.clone(), None));
        }
        if let Some(stderr) = call.child.stderr.take() {
            readers.push(spawn_reader(
                id,
                Box::new(stderr),
                sink.clone(),
                Some(held.clone()),
            ));
        }
        let started = engine.wait_started(container, &mut call);
        let info = match started {
            Ok(Some(info)) => info,
            not_started => {
                call.kill();
                for reader in readers.into_iter().flatten() {
                    let _ = reader.join();
                }
                let said = lock(&held).take().unwrap_or_default();
                return Err(not_started.err().unwrap_or_else(|| EngineError {
                    command: call.command_line().to_string(),
                    code: call.child.try_wait().ok().flatten().and_then(|s| s.code()),
                    stderr: said.join("\n").trim().to_string(),
                    spawn_error: None,
                    timed_out: None,
                }));
            }
        };
        // Started: what stderr held is the container's, and from now on it flows.
        // The lock is held while flushing, so a line read meanwhile waits and comes after.
        let mut held = lock(&held);
        for line in held.take().unwrap_or_default() {
            sink.write(&line);
        }
        drop(held);
        call.release();
        self.lock_followers().push(Follower {
            id: id.to_string(),
            call: Some(call),
            readers: readers.into_iter().flatten().collect(),
        });
        Ok(info)
    }

    /// Component `id`'s `--logs-dir` file, opened for appending: one handle per container it
    /// runs, shared by its stdout and stderr readers, so a restart's output follows the first's.
    fn log_file(&self, id: &str) -> Option<Mutex<std::fs::File>> {
        let path = self.dir.as_ref()?.join(format!("{id}.log"));
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => Some(Mutex::new(file)),
            Err(e) => {
                Console { color: self.color }.warn(format!("cannot write {}: {e}", path.display()));
                None
            }
        }
    }

    fn lock_followers(&self) -> std::sync::MutexGuard<'_, Vec<Follower>> {
        self.followers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `limit`) until the log stream of component `id` has ended, which it does
    /// once its container stopped and everything it wrote was read: after that the engine's
    /// log is complete (Podman may still be writing the last lines when `wait` returns).
    pub fn wait_drained(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let running = self
                .lock_followers()
                .iter_mut()
                .filter(|f| f.id == id)
                .any(Follower::is_running);
            if !running {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the containers are gone: lets followers print what is left (up to `grace`), then
    /// ends any that still run.
    pub fn finish(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut followers = std::mem::take(&mut *self.lock_followers());
        for follower in &mut followers {
            while follower.is_running() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            // Detaches only: the container is already stopped, or is left to teardown.
            if let Some(call) = &mut follower.call {
                call.kill();
            }
        }
        for follower in followers {
            for reader in follower.readers {
                // A process's pipe held open by something it left behind is not waited for.
                if follower.call.is_some() || reader.is_finished() {
                    let _ = reader.join();
                }
            }
        }
    }
}

/// Indents log text for an error message, keeping the last `lines` lines.
pub fn last_lines(text: &str, lines: usize, id: &str) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    if all.is_empty() {
        return format!("  ({id} wrote no output)");
    }
    all[start..]
        .iter()
        .map(|line| format!("  {id} | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_not_when_asked_off() {
        assert!(!use_color(true, true));
        assert!(!use_color(false, false));
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2, "x"), "  x | b\n  x | c");
        assert_eq!(last_lines("", 2, "x"), "  (x wrote no output)");
    }
}
