//! Helpers for integration tests against the real container engine: a unique pipeline per
//! test, a running `flowctl` process to watch and signal, and a guard that removes everything
//! labelled with the test's pipeline even when the test fails. Also the one rule for tests whose
//! tool may be missing ([`require_tool`]): they fail with an install hint unless
//! `FLOWCTL_TEST_SKIP` names them, so a test that did not run never counts as passed.

#![allow(dead_code)]

pub mod postgres;
pub mod process_lab;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The image the test pipelines run.
pub const TEST_IMAGE: &str = "flowctl/test-component:dev";
/// Upper bound for anything a test waits for; reaching it fails the test (it is not a
/// measurement).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The repository's root folder (this crate's manifest folder), without symlinks, as flowctl
/// resolves the paths it prints.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .expect("the repository folder exists")
}

/// `flowctl` as a command to complete with arguments (the binary cargo built for these tests).
pub fn flowctl_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowctl"))
}

/// `prefix` followed by this process's id and a per-process counter: unique among the tests of
/// this binary and among concurrent runs of the suite.
/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, `None` when the process is gone.
#[allow(dead_code)]
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(n - 3).map(String::from)
}

/// Whether `pid` is still a running process (a zombie waiting to be reaped is not).
#[allow(dead_code)]
pub fn is_running(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state != "Z" && state != "X")
}

/// `kill -9 pid`; panics when it fails.
#[allow(dead_code)]
pub fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -9 {pid} failed");
}

pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A scratch folder with a unique name, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The variable that lets tests whose tool is missing be skipped: comma-separated names
/// (`podman`, `k8s`, `s3`, `gcs`, `registry`, `swarm`, `postgres`; README, "Running the tests"). CI never sets it.
pub const SKIP_ENV: &str = "FLOWCTL_TEST_SKIP";

/// Whether `FLOWCTL_TEST_SKIP` names `name`.
pub fn skip_requested(name: &str) -> bool {
    std::env::var(SKIP_ENV)
        .map(|names| names.split(',').any(|n| n.trim() == name))
        .unwrap_or(false)
}

/// Whether a test that needs the tool `name` runs: `false` (with a loud SKIPPED line) when
/// `FLOWCTL_TEST_SKIP` names it, `true` when `probe` succeeds; otherwise the test fails with
/// `hint` (how to install the tool), because a test that did not run must not pass.
pub fn require_tool(name: &str, probe: &mut Command, hint: &str) -> bool {
    if skip_requested(name) {
        eprintln!("\n!!! SKIPPED ({SKIP_ENV} names {name}): this test did not run !!!\n");
        return false;
    }
    let found = probe.output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs {name}, and {probe:?} failed: {hint}. To skip it knowingly: \
         {SKIP_ENV}={name}"
    );
    true
}

/// The container CLI the tests use (the same variable flowctl reads).
pub fn docker_bin() -> String {
    std::env::var("FLOWCTL_DOCKER_BIN").unwrap_or_else(|_| "docker".into())
}

/// Set in a Podman re-run so it does not recurse.
const PODMAN_RERUN_ENV: &str = "FLOWCTL_PODMAN_RERUN";

/// Runs `tests` of the calling test binary again with `FLOWCTL_DOCKER_BIN=podman` and checks
/// that `passed` tests passed. Does nothing inside such a re-run or when this run already
/// uses Podman; without Podman it fails ([`require_tool`]) unless `FLOWCTL_TEST_SKIP` names
/// `podman`.
pub fn rerun_under_podman(what: &str, args: &[&str], passed: usize) {
    if std::env::var_os(PODMAN_RERUN_ENV).is_some() || docker_bin().contains("podman") {
        return;
    }
    let hint = format!(
        "{what} must also run under Podman: install it with .ci/install-podman.sh (as root), \
         then build its images with FLOWCTL_DOCKER_BIN=podman scripts/build-images.sh (or run \
         scripts/test.sh, which does both)"
    );
    if !require_tool("podman", Command::new("podman").arg("version"), &hint) {
        return;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(args)
        .env("FLOWCTL_DOCKER_BIN", "podman")
        .env(PODMAN_RERUN_ENV, "1")
        .output()
        .expect("cannot re-run the tests under podman");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{what} under podman:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The re-run must have run the tests, not filtered them all away.
    assert!(
        stdout.contains(&format!("test result: ok. {passed} passed")),
        "{stdout}"
    );
}

/// Runs the container CLI for test set-up and checks; returns stdout.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new(docker_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", docker_bin()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}",
        docker_bin(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails with instructions when one of `images` is missing from `engine`'s image store (each
/// engine has its own).
pub fn require_images_in(engine: &str, images: &[&str]) {
    for image in images {
        let present = Command::new(engine)
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            present,
            "the image {image} is missing from {engine}: run scripts/test.sh, or \
             FLOWCTL_DOCKER_BIN={engine} scripts/build-images.sh, before the integration tests"
        );
    }
}

/// [`require_images_in`] the engine the tests use.
pub fn require_images(images: &[&str]) {
    require_images_in(&docker_bin(), images);
}

/// The `datalake-gen` binary (examples/stellar/datagen); fails with instructions if it is
/// not built.
pub fn datalake_gen() -> PathBuf {
    let generator = repo().join("target/x86_64-unknown-linux-gnu/release/datalake-gen");
    assert!(
        generator.is_file(),
        "{} is missing: build it with scripts/build-images.sh",
        generator.display()
    );
    generator
}

/// Fails with instructions when the test image is missing.
pub fn require_test_image() {
    require_images(&[TEST_IMAGE]);
}

/// A source and a sink of the test component that run until stopped.
pub const LONG_RUNNING: &str = "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
  sinks:
    - id: sink
      image: flowctl/test-component:dev
      inputs: [source]
      health_port: 8088
";

/// One test's pipeline: a unique name (used as `metadata.name` and `--project`), its file in
/// a scratch folder, and cleanup by the pipeline label on drop.
pub struct Scratch {
    pub name: String,
    pub dir: PathBuf,
}

impl Scratch {
    /// `test` should be short; a counter and the pid make the name unique.
    pub fn new(test: &str) -> Scratch {
        require_test_image();
        let name = unique(&format!("ft-{test}-"));
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { name, dir }
    }

    /// Writes a pipeline whose `metadata.name` is this scratch's name; `spec` is the YAML
    /// under `spec:` (indented by two spaces).
    pub fn pipeline(&self, spec: &str) -> PathBuf {
        let text = format!(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: {}\nspec:\n{spec}",
            self.name
        );
        let path = self.dir.join("pipeline.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `flowctl run PIPELINE --project NAME --no-color --control-plane-port 0 EXTRA...`.
    pub fn run(&self, pipeline: &Path, extra: &[&str], env: &[(&str, &str)]) -> Flowctl {
        let mut args = vec![
            "run".to_string(),
            pipeline.display().to_string(),
            "--project".into(),
            self.name.clone(),
            "--no-color".into(),
            "--control-plane-port".into(),
            "0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Flowctl::spawn(&args, env)
    }

    /// Runs `pipeline` to its end, which must be a failure (exit code 1) that leaves nothing
    /// behind; returns what flowctl wrote to stderr.
    pub fn run_failing(&self, pipeline: &Path) -> String {
        let mut run = self.run(pipeline, &[], &[]);
        let status = run.wait();
        assert_eq!(status.code(), Some(1), "{}", run.output());
        assert_eq!(self.leftovers(), Vec::<String>::new(), "{}", run.output());
        run.stderr()
    }

    /// Containers and networks labelled with this pipeline.
    pub fn leftovers(&self) -> Vec<String> {
        self.leftovers_on(&docker_bin())
    }

    /// Containers and networks labelled with this pipeline, as the CLI `bin` lists them.
    pub fn leftovers_on(&self, bin: &str) -> Vec<String> {
        let filter = format!("label=io.flowctl.pipeline={}", self.name);
        let list = |args: &[&str]| {
            let output = Command::new(bin)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {bin} {args:?}: {e}"));
            assert!(output.status.success(), "{bin} {args:?} failed");
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let mut left: Vec<String> =
            list(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
                .lines()
                .map(|l| format!("container {l}"))
                .collect();
        left.extend(
            list(&[
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ])
            .lines()
            .map(|l| format!("network {l}")),
        );
        left
    }

    /// The container name of component `id`.
    pub fn container(&self, id: &str) -> String {
        format!("{}-{id}", self.name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let filter = format!("label=io.flowctl.pipeline={}", self.name);
        let bin = docker_bin();
        let ids = Command::new(&bin)
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new(&bin).args(["rm", "-f", id]).output();
        }
        let networks = Command::new(&bin)
            .args(["network", "ls", "-q", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in networks.split_whitespace() {
            let _ = Command::new(&bin).args(["network", "rm", id]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A container the test creates without flowctl's labels; removed on drop, even when the test
/// fails.
pub struct Unmanaged {
    pub name: String,
}

impl Unmanaged {
    /// `create`s (does not start) a container of the test image named `name`.
    pub fn create(name: &str) -> Unmanaged {
        docker(&["create", "--name", name, TEST_IMAGE]);
        Unmanaged {
            name: name.to_string(),
        }
    }

    /// Whether it still exists.
    pub fn exists(&self) -> bool {
        Command::new(docker_bin())
            .args(["container", "inspect", &self.name])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Unmanaged {
    fn drop(&mut self) {
        let _ = Command::new(docker_bin())
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// A running `flowctl`, its output collected line by line.
pub struct Flowctl {
    pub pid: u32,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    exit: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

impl Flowctl {
    /// Starts `flowctl ARGS` with extra environment.
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Flowctl {
        Flowctl::spawn_in(
            &std::env::current_dir().expect("a current directory"),
            args,
            env,
        )
    }

    /// Starts `flowctl ARGS` in folder `dir` with extra environment.
    pub fn spawn_in(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Flowctl {
        let mut child = flowctl_command()
            .current_dir(dir)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start flowctl");
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, lines) = mpsc::channel();
        let err_stream = child.stderr.take().unwrap();
        let out_stream = child.stdout.take().unwrap();
        collect(err_stream, stderr.clone(), Some(line_tx));
        collect(out_stream, stdout.clone(), None);
        let (exit_tx, exit) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Flowctl {
            pid,
            stderr,
            stdout,
            lines,
            exit,
            status: None,
        }
    }

    /// Waits for a stderr line containing `text`; panics with the output so far if flowctl
    /// exits or [`PATIENCE`] passes first.
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait();
                    panic!(
                        "flowctl exited ({status}) before printing {text:?}\n{}",
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {text:?} from flowctl\n{}", self.output())
                }
            }
        }
    }

    /// Sends `signal` (a `kill -s` name such as INT, TERM, HUP, KILL) to flowctl.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// Waits for flowctl to exit (at most [`PATIENCE`]).
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        match self.exit.recv_timeout(PATIENCE) {
            Ok(status) => {
                self.status = Some(status);
                // Let the readers drain what flowctl wrote last.
                while self.lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
                status
            }
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &self.pid.to_string()])
                    .status();
                panic!("flowctl did not exit\n{}", self.output())
            }
        }
    }

    /// Everything flowctl wrote to stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Everything flowctl wrote to stdout (the components' logs).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// The pid of the run's reaper process, if flowctl started one (`reaper pid N ...`).
    pub fn reaper_pid(&self) -> Option<u32> {
        self.stderr()
            .lines()
            .find_map(|l| l.split("reaper pid ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
    }

    /// Both, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stderr ---\n{}\n--- stdout ---\n{}",
            self.stderr(),
            self.stdout()
        )
    }
}

impl Drop for Flowctl {
    fn drop(&mut self) {
        // A test that failed half-way must not leave flowctl running; its own cleanup runs on
        // SIGTERM, and the Scratch guard removes whatever is left.
        if self.status.is_none() && self.exit.try_recv().is_err() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &self.pid.to_string()])
                .status();
            let _ = self.exit.recv_timeout(PATIENCE);
        }
    }
}

fn collect(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    lines: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line.clone());
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

/// Runs `flowctl ARGS` to completion; returns (status, stdout, stderr).
pub fn flowctl(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let output = flowctl_command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run flowctl");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits for `child` to exit, at most `limit` (a bound, not a measurement): past it the child is
/// killed and the test fails naming `what`.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let began = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if began.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not end within {limit:?}");
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    }
}

/// The position of the first line containing `text` in `output`.
pub fn line_index(output: &str, text: &str) -> usize {
    output
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no line {text:?} in:\n{output}"))
}

/// The upstream ttp-processor's events for testnet ledgers 997–998, one JSON line each: what
/// every pipeline over the example lake must print, exactly.
/// What `component` printed, from flowctl's multiplexed `<id> | <line>` output.
#[allow(dead_code)]
pub fn lines_of<'a>(output: &'a str, component: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(prefix, _)| prefix.trim() == component)
        .map(|(_, line)| line)
        .collect()
}

pub fn testnet_997_998_events() -> Vec<String> {
    let path = repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}
