//! Running a command as the sections time it: its output lines with the instant each arrived,
//! optionally stopped with SIGINT (as Ctrl+C would) once a line says it is up, sampled while it
//! runs; and `flowctl run`'s `--summary` record read with serde.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::bench::Bench;

/// When a run is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It ends by itself.
    AtEnd,
    /// SIGINT once a line contains this text.
    When(&'static str),
}

/// flowctl's line once every component is ready.
pub const IS_UP: &str = " is up: ";

/// One finished run: its lines as they arrived, its exit, and when it started and ended.
#[derive(Debug)]
pub struct Logged {
    pub lines: Vec<(Instant, String)>,
    pub status: ExitStatus,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub ended: Instant,
}

impl Logged {
    /// Seconds from the start to the end.
    pub fn seconds(&self) -> f64 {
        (self.ended - self.started).as_secs_f64()
    }

    /// The first line containing `text`.
    pub fn line(&self, text: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(_, l)| l.as_str())
    }

    /// Seconds from the start to the first line containing `text`.
    pub fn seconds_to(&self, text: &str) -> Option<f64> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(at, _)| (*at - self.started).as_secs_f64())
    }

    /// The JSON after `<name> summary: ` that a consumer prints (consumer-app's, consumer-app-v1's).
    pub fn consumer_summary(&self, name: &str) -> Option<serde_json::Value> {
        let marker = format!("{name} summary: ");
        let line = self.line(&marker)?;
        serde_json::from_str(&line[line.find(&marker)? + marker.len()..]).ok()
    }

    /// The last `n` lines, for an error.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let tail: Vec<&str> = self.lines[skip..].iter().map(|(_, l)| l.as_str()).collect();
        tail.join("\n")
    }

    /// An error unless it exited 0.
    pub fn check(&self, what: &str) -> Result<()> {
        if !self.status.success() {
            bail!("{what} failed ({}):\n{}", self.status, self.tail(25));
        }
        Ok(())
    }
}

/// Runs `command` to its end, stopped as `stop` says, calling `sample` with its pid every
/// 100 ms while it runs. Standard output and standard error are read line by line, each line
/// stamped with the instant it arrived; the end is the instant `wait` returned.
pub fn run_logged(
    mut command: Command,
    stop: Stop,
    mut sample: impl FnMut(u32) + Send,
) -> Result<Logged> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started_wall = SystemTime::now();
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let pid = child.id();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let lines = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                if let Stop::When(text) = stop {
                    if line.contains(text) {
                        interrupt(pid);
                    }
                }
                lines.lock().unwrap().push((now, line));
            }
        })
    })
    .collect();
    let done = AtomicBool::new(false);
    let (status, ended) = thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                sample(pid);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let status = child.wait();
        let ended = Instant::now();
        done.store(true, Ordering::Relaxed);
        (status, ended)
    });
    for reader in readers {
        let _ = reader.join();
    }
    let mut lines = std::mem::take(&mut *lines.lock().unwrap());
    lines.sort_by_key(|(at, _)| *at);
    Ok(Logged {
        lines,
        status: status.context("waiting for the run")?,
        started,
        started_wall,
        ended,
    })
}

/// SIGINT to `pid`, as Ctrl+C would send.
pub fn interrupt(pid: u32) {
    // SAFETY: kill(2) with a pid this process started and a valid signal.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
}

impl Bench {
    /// `flowctl run` of `pipeline` as project `project` (with `--docker-bin engine`), its
    /// summary written to a file of the work folder; `extra` goes before the file.
    pub fn flowctl_run(
        &self,
        engine: &str,
        project: &str,
        pipeline: &Path,
        extra: &[&str],
        stop: Stop,
        sample: impl FnMut(u32) + Send,
    ) -> Result<(Logged, Summary)> {
        let summary = self.file(&format!("summary-{project}.json"));
        let _ = std::fs::remove_file(&summary);
        let mut command = Command::new(&self.flowctl);
        command
            .args(["run", "--no-color", "--control-plane-port", "0"])
            .args(["--docker-bin", engine, "--project", project, "--summary"])
            .arg(&summary)
            .args(extra)
            .arg(pipeline);
        let logged = run_logged(command, stop, sample)?;
        let text = std::fs::read_to_string(&summary).with_context(|| {
            format!(
                "flowctl run wrote no summary ({}):\n{}",
                logged.status,
                logged.tail(25)
            )
        })?;
        let summary: Summary = serde_json::from_str(&text)
            .with_context(|| format!("reading flowctl's summary {}", summary.display()))?;
        Ok((logged, summary))
    }
}

/// A `flowctl run` of a live pipeline, up and running until [`Live::stop`] (or drop) sends
/// SIGINT; its output goes to a log file of the work folder.
pub struct Live {
    child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Live {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it as Ctrl+C would and returns flowctl's exit code.
    pub fn stop(mut self) -> Result<i32> {
        interrupt(self.child.id());
        let status = self.child.wait()?;
        Ok(status.code().unwrap_or(-1))
    }

    /// The log so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            interrupt(self.child.id());
            let _ = self.child.wait();
        }
    }
}

impl Bench {
    /// Starts `flowctl run` of `pipeline` (which must not end by itself) as `project` and
    /// returns once it says it is up.
    pub fn flowctl_live(&self, project: &str, pipeline: &Path) -> Result<Live> {
        let log = self.file(&format!("live-{project}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&self.flowctl)
            .args(["run", "--no-color", "--control-plane-port", "0"])
            .args(["--docker-bin", &self.docker, "--project", project])
            .arg(pipeline)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting flowctl run")?;
        let mut live = Live { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !live.text().contains(IS_UP) {
            if let Some(status) = live.child.try_wait()? {
                bail!(
                    "flowctl run ended ({status}) before it was up:\n{}",
                    live.text()
                );
            }
            if Instant::now() > deadline {
                bail!("flowctl run was not up within 60 s:\n{}", live.text());
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(live)
    }
}

/// The parts of `flowctl run --summary`'s record that the bench reads.
#[derive(Debug, Deserialize)]
pub struct Summary {
    pub outcome: String,
    pub components: Vec<ComponentSummary>,
}

#[derive(Debug, Deserialize)]
pub struct ComponentSummary {
    pub id: String,
    pub exited_at: Option<String>,
}

impl Summary {
    pub fn component(&self, id: &str) -> Result<&ComponentSummary> {
        self.components
            .iter()
            .find(|c| c.id == id)
            .with_context(|| format!("the summary has no component {id}"))
    }
}

/// A time of the summary (`2026-12-08T02:43:00.123Z`, UTC, milliseconds) as a `SystemTime`.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let millis: i64 = millis.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + h * 3600 + min * 60 + s) * 1000 + millis)
        .try_into()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

/// Seconds from `earlier` to `later` (negative if `later` is before it).
pub fn seconds_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_times_parse_to_the_millisecond() {
        let t = parse_time("2026-12-08T02:43:00.123Z").unwrap();
        let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(ms, 1_796_697_780_123);
        assert_eq!(parse_time("1970-01-01T00:00:00.000Z").unwrap(), UNIX_EPOCH);
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn lines_are_stamped_and_a_run_can_be_stopped_once_up() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo ' is up: now' >&2; exec sleep 30"]);
        let logged = run_logged(command, Stop::When(IS_UP), |_| {}).unwrap();
        assert!(!logged.status.success());
        assert_eq!(logged.line("one"), Some("one"));
        assert!(logged.seconds_to(IS_UP).unwrap() <= logged.seconds());
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&logged.status),
            Some(libc::SIGINT)
        );
    }

    #[test]
    fn a_consumer_summary_is_read_from_its_line() {
        let mut command = Command::new("sh");
        command.args(["-c", r#"echo 'consumer-app summary: {"events":3}'"#]);
        let logged = run_logged(command, Stop::AtEnd, |_| {}).unwrap();
        logged.check("sh").unwrap();
        assert_eq!(
            logged.consumer_summary("consumer-app").unwrap()["events"],
            3
        );
    }
}
