//! Output: components' log lines multiplexed on stdout, each prefixed with its component id
//! (padded, coloured on a terminal only, like Compose), and flowctl's own progress lines on
//! stderr. With `--logs-dir`, each component's whole output (every container it ran, restarts
//! included) is also kept in `DIR/<id>.log`, unprefixed, for CI to keep.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineError};

/// ANSI colours given to components in start order.
const PALETTE: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

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
}

fn with_path(error: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[derive(Debug)]
struct Follower {
    id: String,
    child: Child,
    readers: Vec<JoinHandle<()>>,
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
        }
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

    /// Starts following `container`'s output as component `id` (colour `index`).
    pub fn follow(
        &self,
        engine: &Engine,
        id: &str,
        index: usize,
        container: &str,
    ) -> Result<(), EngineError> {
        let mut child = engine.follow_logs(container)?;
        let prefix = if self.color {
            let color = PALETTE[index % PALETTE.len()];
            format!("\x1b[{color}m{id:<width$} |\x1b[0m ", width = self.width)
        } else {
            format!("{id:<width$} | ", width = self.width)
        };
        // One file handle per component, shared by its stdout and stderr readers and by every
        // container it runs (appended to), so a restart's output follows the first's.
        let file = match &self.dir {
            Some(dir) => {
                let path = dir.join(format!("{id}.log"));
                let opened = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path);
                match opened {
                    Ok(file) => Some(Arc::new(Mutex::new(file))),
                    Err(e) => {
                        log::warn!("cannot write {}: {e}", path.display());
                        None
                    }
                }
            }
            None => None,
        };
        let mut readers = Vec::new();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let prefix = prefix.clone();
            let out = self.out.clone();
            let file = file.clone();
            let reader = thread::Builder::new()
                .name(format!("logs-{id}"))
                .spawn(move || copy_lines(stream, &prefix, &out, file.as_deref()));
            match reader {
                Ok(handle) => readers.push(handle),
                Err(e) => log::warn!("cannot follow the logs of {container}: {e}"),
            }
        }
        self.lock_followers().push(Follower {
            id: id.to_string(),
            child,
            readers,
        });
        Ok(())
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
                .any(|f| matches!(f.child.try_wait(), Ok(None)));
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
            while Instant::now() < deadline {
                match follower.child.try_wait() {
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    _ => break,
                }
            }
            // Only our own `logs --follow` child, by its handle.
            let _ = follower.child.kill();
            let _ = follower.child.wait();
        }
        for follower in followers {
            for reader in follower.readers {
                let _ = reader.join();
            }
        }
    }
}

fn copy_lines(
    stream: Box<dyn Read + Send>,
    prefix: &str,
    out: &Mutex<()>,
    file: Option<&Mutex<std::fs::File>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if let Some(file) = file {
                    let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(file, "{}", text.trim_end_matches(['\n', '\r']));
                }
                let _guard = out.lock().unwrap_or_else(|p| p.into_inner());
                let mut stdout = std::io::stdout().lock();
                // A closed stdout (e.g. piped into `head`) must not stop the run.
                let _ = writeln!(stdout, "{prefix}{}", text.trim_end_matches(['\n', '\r']));
                let _ = stdout.flush();
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
