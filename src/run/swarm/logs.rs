//! The output of every task of a Swarm run, multiplexed: `service logs --follow` per service,
//! started right after the service is created (it reads each task's log from its first line,
//! so a task that ends during start-up loses nothing), each line printed as
//! `COMPONENT@NODE | line` (`COMPONENT.SLOT@NODE` with replicas) and written to `--logs-dir`.
//!
//! A follow call relays lines while tasks run, but says nothing of when a task's last line
//! has come. So before the run's services are removed, [`ServiceLogs::catch_up`] reads each
//! service's whole log once more and prints, per task and stream, the lines the follow call
//! had not relayed yet: every line is printed exactly once.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::engine::{Engine, Streaming};
use crate::logs::Console;

/// Lines kept per component for a failure's message.
const LAST_LINES: usize = 20;

/// One line of `service logs`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub slot: &'a str,
    pub task: &'a str,
    pub node: &'a str,
    pub text: &'a str,
}

/// `NAME.SLOT.TASK@NODE    | text` -> its parts; `None` for a line without that prefix.
pub fn parse(line: &str) -> Option<LogLine<'_>> {
    let (prefix, text) = line.split_once('|')?;
    let text = text.strip_prefix(' ').unwrap_or(text);
    let (task_name, node) = prefix.trim_end().rsplit_once('@')?;
    let mut parts = task_name.rsplitn(3, '.');
    let task = parts.next()?;
    let slot = parts.next()?;
    parts.next()?;
    Some(LogLine {
        slot,
        task,
        node,
        text,
    })
}

/// What the relay shares between its reader threads.
#[derive(Debug, Default)]
struct Shared {
    /// Lines printed per (task, stderr?).
    printed: BTreeMap<(String, bool), usize>,
    /// The last lines of each component.
    last: BTreeMap<String, VecDeque<String>>,
}

/// A service's follow call and its readers.
#[derive(Debug)]
struct Follower {
    service: String,
    target: Target,
    call: Streaming,
    readers: Vec<JoinHandle<()>>,
}

/// The relay of a run's task output; see the module documentation.
#[derive(Debug)]
pub struct ServiceLogs {
    color: bool,
    width: usize,
    dir: Option<PathBuf>,
    /// Held while printing one line, and while a catch-up reads what was printed.
    shared: Arc<Mutex<Shared>>,
    followers: Mutex<Vec<Follower>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where one service's lines go.
#[derive(Debug, Clone)]
struct Target {
    component: String,
    replicated: bool,
    width: usize,
    color: Option<u8>,
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl Target {
    fn write(&self, shared: &mut Shared, line: &str, stderr: bool) {
        let Some(parsed) = parse(line) else {
            return;
        };
        *shared
            .printed
            .entry((parsed.task.to_string(), stderr))
            .or_default() += 1;
        let last = shared.last.entry(self.component.clone()).or_default();
        last.push_back(parsed.text.to_string());
        if last.len() > LAST_LINES {
            last.pop_front();
        }
        if let Some(file) = &self.file {
            let _ = writeln!(lock(file), "{}", parsed.text);
        }
        let who = if self.replicated {
            format!("{}.{}@{}", self.component, parsed.slot, parsed.node)
        } else {
            format!("{}@{}", self.component, parsed.node)
        };
        let prefix = match self.color {
            Some(color) => format!("\x1b[{color}m{who:<width$} |\x1b[0m ", width = self.width),
            None => format!("{who:<width$} | ", width = self.width),
        };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. piped into `head`) must not stop the run.
        let _ = writeln!(stdout, "{prefix}{}", parsed.text);
        let _ = stdout.flush();
    }
}

const PALETTE: [u8; 6] = [36, 33, 35, 32, 34, 31];

impl ServiceLogs {
    /// A relay for components whose ids are `ids` (for the prefix width).
    pub fn new(ids: &[&str], color: bool, dir: Option<PathBuf>) -> ServiceLogs {
        // Room for `@` and a node name of usual length.
        let width = ids.iter().map(|id| id.len()).max().unwrap_or(0) + 9;
        ServiceLogs {
            color,
            width,
            dir,
            shared: Arc::default(),
            followers: Mutex::default(),
        }
    }

    fn target(&self, component: &str, index: usize, replicated: bool) -> Target {
        let file = self.dir.as_ref().and_then(|dir| {
            let path = dir.join(format!("{component}.log"));
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => Some(Arc::new(Mutex::new(file))),
                Err(e) => {
                    Console { color: self.color }
                        .warn(format!("cannot write {}: {e}", path.display()));
                    None
                }
            }
        });
        Target {
            component: component.to_string(),
            replicated,
            width: self.width,
            color: self.color.then(|| PALETTE[index % PALETTE.len()]),
            file,
        }
    }

    /// Follows the output of every task of `service` (component `component`, the `index`th).
    pub fn follow(
        &self,
        engine: &Engine,
        service: &str,
        component: &str,
        index: usize,
        replicated: bool,
    ) -> anyhow::Result<()> {
        let mut call = engine.service_logs(service, true)?;
        call.release();
        let target = self.target(component, index, replicated);
        let mut readers = Vec::new();
        let streams: [(Option<Box<dyn Read + Send>>, bool); 2] = [
            (call.child.stdout.take().map(|s| Box::new(s) as _), false),
            (call.child.stderr.take().map(|s| Box::new(s) as _), true),
        ];
        for (stream, stderr) in streams {
            let Some(stream) = stream else { continue };
            let (target, shared) = (target.clone(), self.shared.clone());
            let reader = thread::Builder::new()
                .name(format!("logs-{component}"))
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
                                target.write(&mut lock(&shared), text, stderr);
                            }
                        }
                    }
                });
            if let Ok(reader) = reader {
                readers.push(reader);
            }
        }
        lock(&self.followers).push(Follower {
            service: service.to_string(),
            target,
            call,
            readers,
        });
        Ok(())
    }

    /// The last lines component `id` wrote, for a failure's message.
    pub fn last_lines(&self, id: &str) -> Vec<String> {
        lock(&self.shared)
            .last
            .get(id)
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Prints what the follow calls have not relayed yet of every followed service: its whole
    /// log read once, less what was printed, per task and stream. Then the follow calls end.
    pub fn catch_up(&self, engine: &Engine) {
        let followers = std::mem::take(&mut *lock(&self.followers));
        for mut follower in followers {
            let all = engine
                .service_logs_all(&follower.service)
                .unwrap_or_default();
            let mut shared = lock(&self.shared);
            for (text, stderr) in [(&all.0, false), (&all.1, true)] {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for line in text.lines() {
                    let Some(parsed) = parse(line) else { continue };
                    let count = seen.entry(parsed.task.to_string()).or_default();
                    *count += 1;
                    let printed = shared
                        .printed
                        .get(&(parsed.task.to_string(), stderr))
                        .copied()
                        .unwrap_or(0);
                    if *count > printed {
                        follower.target.write(&mut shared, line, stderr);
                    }
                }
            }
            drop(shared);
            follower.call.kill();
            for reader in follower.readers {
                let _ = reader.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_log_line_is_split_into_slot_task_node_and_text() {
        let line = "consumer-app.1.q2w3e4r5t6y7@lab-n3    | {\"a\": \"b | c\"}";
        assert_eq!(
            parse(line),
            Some(LogLine {
                slot: "1",
                task: "q2w3e4r5t6y7",
                node: "lab-n3",
                text: "{\"a\": \"b | c\"}",
            })
        );
        // A project-prefixed service name with dots and dashes.
        let line = "p.x-proc.2.abc@node.example.com | started";
        let parsed = parse(line).unwrap();
        assert_eq!(
            (parsed.slot, parsed.task, parsed.node),
            ("2", "abc", "node.example.com")
        );
        assert_eq!(parse("error from daemon in stream"), None);
    }
}
