//! Against the real engine: flowctl in the CI job shapes it is made for.
//!
//! - A minimal job image built here (`FROM scratch`: the machine's `docker` CLI with the two
//!   libraries it links, and flowctl; one variant with `/tmp`, one without), run with the host's
//!   socket mounted and the checkout mounted at the same path: the example pipeline gives exactly
//!   the upstream events and leaves nothing; SIGTERM to the job container leaves nothing;
//!   `docker kill` of it leaves what `flowctl gc` on the host removes, and nothing else.
//! - A remote engine over TCP: Podman's Docker-compatible service on 127.0.0.1, driven by the
//!   `docker` CLI with `DOCKER_HOST`, the control plane running as a container.
//! - `--logs-dir` and `--summary` after a completed run, a failing component and a SIGTERM.
//!
//! The job-container tests need Docker's socket (`/var/run/docker.sock`); under
//! `FLOWCTL_DOCKER_BIN=podman` they check that Podman's service is what `docker` reaches.

mod support;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Scratch, LONG_RUNNING};

/// The tests of this file run one at a time: each runs whole pipelines in job containers, and
/// side by side on 2 cores they only measure the machine's load.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Failure bound for waits; not a measurement.
const PATIENCE: Duration = Duration::from_secs(120);
const SOCKET: &str = "/var/run/docker.sock";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("cannot run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The upstream events of testnet 997-998, one JSON object a line.
fn expected_events() -> Vec<String> {
    fs::read_to_string(
        repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl"),
    )
    .unwrap()
    .lines()
    .map(String::from)
    .collect()
}

/// The consumer's JSON event lines in flowctl's multiplexed output.
fn consumer_events(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(prefix, line)| prefix.trim() == "consumer-app" && line.starts_with('{'))
        .map(|(_, line)| line.to_string())
        .collect()
}

/// Containers and networks of `project` on the engine `bin` reaches.
fn leftovers(bin: &str, env: &[(&str, &str)], project: &str) -> Vec<String> {
    let label = format!("label=io.flowctl.project={project}");
    let list = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("cannot list leftovers");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut left: Vec<String> = list(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
        .lines()
        .map(String::from)
        .collect();
    left.extend(
        list(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"])
            .lines()
            .map(String::from),
    );
    left
}

/// A job image and a scratch folder inside the checkout (so a job container sees it at the
/// same path); both removed on drop, with any job container left by a failing test.
struct JobImage {
    /// The engine that holds the image and runs the jobs (`docker` or `podman`).
    engine: &'static str,
    /// The engine socket mounted into the jobs at /var/run/docker.sock.
    socket: String,
    tag: String,
    dir: PathBuf,
    jobs: std::cell::RefCell<Vec<String>>,
}

impl JobImage {
    /// `FROM scratch` with the `docker` CLI (and the libraries `ldd` lists for it), flowctl,
    /// and `/tmp` only if `with_tmp`.
    fn build(name: &str, with_tmp: bool) -> JobImage {
        JobImage::build_on("docker", SOCKET, name, with_tmp)
    }

    /// The same image in `engine`'s store, its jobs given `socket`.
    fn build_on(engine: &'static str, socket: &str, name: &str, with_tmp: bool) -> JobImage {
        let unique = format!("{name}-{}", std::process::id());
        let dir = repo().join("target").join(format!("ci-job-{unique}"));
        let _ = fs::remove_dir_all(&dir);
        let context = dir.join("image");
        fs::create_dir_all(&context).unwrap();
        let cli = String::from_utf8_lossy(
            &Command::new("sh")
                .args(["-c", "command -v docker"])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string();
        assert!(!cli.is_empty(), "the docker CLI is not installed");
        let mut copies = vec![(PathBuf::from(&cli), "usr/bin/docker".to_string())];
        let ldd = Command::new("ldd")
            .arg(&cli)
            .output()
            .expect("cannot run ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
            let path = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(path) = path {
                copies.push((
                    PathBuf::from(path),
                    path.trim_start_matches('/').to_string(),
                ));
            }
        }
        copies.push((
            PathBuf::from(env!("CARGO_BIN_EXE_flowctl")),
            "flowctl".to_string(),
        ));
        let mut dockerfile = String::from("FROM scratch\n");
        for (i, (from, to)) in copies.iter().enumerate() {
            let staged = context.join(format!("f{i}"));
            fs::copy(from, &staged).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            dockerfile.push_str(&format!("COPY f{i} /{to}\n"));
        }
        if with_tmp {
            fs::create_dir_all(context.join("tmp")).unwrap();
            dockerfile.push_str("COPY tmp /tmp\n");
        }
        dockerfile.push_str("ENV PATH=/usr/bin HOME=/\nENTRYPOINT [\"/flowctl\"]\n");
        fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        let tag = format!("localhost/flowctl-test/ci-job:{unique}");
        let out = Command::new(engine)
            .args(["build", "--quiet", "--tag", &tag])
            .arg(&context)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot build the job image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        JobImage {
            engine,
            socket: socket.to_string(),
            tag,
            dir,
            jobs: Default::default(),
        }
    }

    /// `docker run` of the job image: the socket and the checkout mounted at the same path,
    /// working directory the checkout; `flowctl ARGS`.
    fn run(&self, job: &str, detach: bool, args: &[&str]) -> Command {
        self.run_at(&repo().display().to_string(), job, detach, args)
    }

    /// The same with the checkout mounted at `inside` (a GitHub Actions container job mounts
    /// the workspace at `/__w/...`, another path than on the host).
    fn run_at(&self, inside: &str, job: &str, detach: bool, args: &[&str]) -> Command {
        self.jobs.borrow_mut().push(job.to_string());
        let root = repo().display().to_string();
        let mut command = Command::new(self.engine);
        command.args(["run", "--name", job]);
        if detach {
            command.arg("--detach");
        }
        command
            .args(["--volume", &format!("{}:{SOCKET}", self.socket)])
            .args(["--volume", &format!("{root}:{inside}")])
            .args(["--workdir", inside, &self.tag])
            .args(args);
        command
    }

    /// A pipeline file in the scratch folder (visible to the job at the same path).
    fn pipeline(&self, name: &str, spec: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.yaml"));
        fs::write(
            &path,
            format!(
                "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: {name}\nspec:\n{spec}"
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for JobImage {
    fn drop(&mut self) {
        for job in self.jobs.borrow().iter() {
            let _ = Command::new(self.engine)
                .args(["rm", "--force", job])
                .output();
        }
        let _ = Command::new(self.engine)
            .args(["image", "rm", "--force", &self.tag])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Skips (returns false) the job-container tests when this run targets Podman: the job image
/// talks to Docker's socket. Docker itself must be there.
/// The job-container tests drive Docker's socket whatever `FLOWCTL_DOCKER_BIN` says (the Podman
/// shape has a test of its own); without it they fail, they never pass unrun.
fn require_docker_socket() {
    assert!(
        Path::new(SOCKET).exists(),
        "{SOCKET} is missing: these tests need the Docker engine"
    );
}

/// `flowctl run PIPELINE --project PROJECT --no-color --control-plane-port 0 EXTRA...`.
fn run_args<'a>(pipeline: &'a str, project: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        pipeline,
        "--project",
        project,
        "--no-color",
        "--control-plane-port",
        "0",
    ];
    args.extend_from_slice(extra);
    args
}

/// Waits until `docker logs job` contains `text`.
fn wait_for_log(job: &str, text: &str) -> String {
    let started = Instant::now();
    loop {
        let out = docker(&["logs", job]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if all.contains(text) {
            return all;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no {text:?} from {job}:\n{all}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn run_example_in_a_job(with_tmp: bool, inside: Option<&str>) {
    let image = JobImage::build(if with_tmp { "tmp" } else { "notmp" }, with_tmp);
    let project = format!(
        "cij-{}-{}-{}",
        with_tmp,
        inside.is_some(),
        std::process::id()
    );
    let job = format!("{project}-job");
    let root = repo().display().to_string();
    let out = image
        .run_at(
            inside.unwrap_or(&root),
            &job,
            false,
            &run_args("examples/ttp-pipeline.yaml", &project, &[]),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("flowctl runs in container")
            && stderr.contains("joins the pipeline network"),
        "{stderr}"
    );
    assert_eq!(consumer_events(&stdout), expected_events(), "{stderr}");
    assert_eq!(leftovers("docker", &[], &project), Vec::<String>::new());
    // The env-file folder it made in the checkout (no /tmp) is gone too.
    let stray: Vec<_> = fs::read_dir(repo())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".flowctl-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    let _ = docker(&["rm", "--force", &job]);
}

#[test]
fn the_example_runs_in_a_podman_job_container_with_podmans_socket_mounted() {
    let _serial = serial();
    let podman = support::require_tool(
        "podman",
        Command::new("podman").arg("version"),
        "the Podman job container test needs podman; .ci/install-podman.sh installs it",
    );
    if !podman {
        return;
    }
    // Podman's Docker-compatible API on a socket of this test's own.
    let scratch = Scratch::new("cijpodman");
    let socket = scratch.dir.join("podman.sock");
    let service = PodmanService(
        Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start podman system service"),
    );
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < PATIENCE,
            "podman's socket never appeared"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let image = JobImage::build_on("podman", &socket.display().to_string(), "podman", true);
    let project = scratch.name.clone();
    let job = format!("{project}-job");
    let out = image
        .run(
            &job,
            false,
            &run_args("examples/ttp-pipeline.yaml", &project, &[]),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let left = leftovers("podman", &[], &project);
    drop(image);
    drop(service);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("flowctl runs in container"), "{stderr}");
    assert_eq!(consumer_events(&stdout), expected_events(), "{stderr}");
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn the_example_runs_in_a_scratch_job_container_with_the_socket_mounted() {
    let _serial = serial();
    require_docker_socket();
    run_example_in_a_job(true, None);
}

#[test]
fn the_example_runs_with_the_checkout_mounted_at_another_path() {
    let _serial = serial();
    require_docker_socket();
    // The ledgers' bind mount is resolved through the job container's own mount.
    run_example_in_a_job(true, Some("/__w/flowctl/flowctl"));
}

#[test]
fn the_example_runs_in_a_job_image_without_tmp() {
    let _serial = serial();
    require_docker_socket();
    run_example_in_a_job(false, None);
}

#[test]
fn sigterm_to_the_job_container_leaves_nothing_and_a_summary() {
    let _serial = serial();
    require_docker_socket();
    let image = JobImage::build("term", true);
    let project = format!("cij-term-{}", std::process::id());
    let job = format!("{project}-job");
    let pipeline = image.pipeline(&project, LONG_RUNNING);
    let summary = image.dir.join("summary.json");
    let out = image
        .run(
            &job,
            true,
            &run_args(
                &pipeline.display().to_string(),
                &project,
                &["--summary", &summary.display().to_string()],
            ),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_log(&job, "is up");
    assert_eq!(leftovers("docker", &[], &project).len(), 3);
    docker_ok(&["kill", "--signal", "TERM", &job]);
    let code = docker_ok(&["wait", &job]);
    let logs = wait_for_log(&job, "removed");
    assert_eq!(code.trim(), "130", "{logs}");
    assert_eq!(
        leftovers("docker", &[], &project),
        Vec::<String>::new(),
        "{logs}"
    );
    let summary: Value = serde_json::from_str(&fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "interrupted");
    assert_eq!(summary["exit_code"], 130);
    assert_eq!(summary["engine"]["location"], "container");
}

#[test]
fn a_killed_job_container_leaves_what_gc_on_the_host_removes_and_nothing_else() {
    let _serial = serial();
    require_docker_socket();
    let image = JobImage::build("kill", true);
    let scratch = Scratch::new("cijkill");
    let project = scratch.name.clone();
    let job = format!("{project}-job");
    let pipeline = image.pipeline(&project, LONG_RUNNING);
    let bystander = support::Unmanaged::create(&format!("{project}-bystander"));
    let out = image
        .run(
            &job,
            true,
            &run_args(&pipeline.display().to_string(), &project, &[]),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_for_log(&job, "is up");
    docker_ok(&["kill", &job]);
    docker_ok(&["wait", &job]);
    // The reaper died with the job: the run is left, labelled with its dead job container.
    assert_eq!(leftovers("docker", &[], &project).len(), 3);
    let (status, stdout, stderr) = support::flowctl(&["gc"], &[]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("removed run "), "{stdout}");
    assert_eq!(
        leftovers("docker", &[], &project),
        Vec::<String>::new(),
        "{stdout}"
    );
    assert!(
        bystander.exists(),
        "gc removed a container flowctl did not make"
    );
}

#[test]
fn logs_dir_and_summary_record_completed_failed_and_interrupted_runs() {
    let _serial = serial();
    support::require_test_image();
    // Completed: the example, with its exact events in the consumer's log file.
    let scratch = Scratch::new("records");
    let logs = scratch.dir.join("logs");
    let summary_path = scratch.dir.join("summary.json");
    let (status, stdout, stderr) = support::flowctl(
        &[
            "run",
            &repo()
                .join("examples/ttp-pipeline.yaml")
                .display()
                .to_string(),
            "--project",
            &scratch.name,
            "--no-color",
            "--control-plane-port",
            "0",
            "--logs-dir",
            &logs.display().to_string(),
            "--summary",
            &summary_path.display().to_string(),
        ],
        &[],
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    let consumer_log = fs::read_to_string(logs.join("consumer-app.log")).unwrap();
    let logged: Vec<&str> = consumer_log
        .lines()
        .filter(|l| l.starts_with('{'))
        .collect();
    assert_eq!(logged, expected_events());
    assert!(fs::read_to_string(logs.join("ttp-processor.log"))
        .unwrap()
        .contains("SIGTERM received"));
    let summary: Value = serde_json::from_str(&fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["pipeline"], "ttp-pipeline");
    assert_eq!(summary["project"], scratch.name.as_str());
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["exit_code"], 0);
    assert!(summary["run_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(summary["error"].is_null());
    assert_eq!(summary["engine"]["location"], "host");
    let components = summary["components"].as_array().unwrap();
    let ids: Vec<&str> = components
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "stellar-live-source-datalake",
            "ttp-processor",
            "consumer-app"
        ]
    );
    for component in components {
        assert!(
            component["image"].as_str().unwrap().starts_with("flowctl/"),
            "{component}"
        );
        assert!(
            component["image_id"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{component}"
        );
        assert!(
            component["started_at"].as_str().unwrap().ends_with('Z'),
            "{component}"
        );
        assert_eq!(component["restarts"], 0);
        assert_eq!(component["registered"], true, "{component}");
    }
    assert_eq!(components[2]["exit_code"], 0);
    assert!(components[2]["exited_at"].is_string());
    assert!(components[0]["ready_at"].is_string());
    let verification = summary["verification"].as_array().unwrap();
    assert_eq!(verification.len(), 2, "{summary}");
    assert!(verification.iter().all(|v| v["ok"] == true), "{summary}");
    assert_eq!(verification[1]["events"], 18);

    // Failed: a component exits 7; the summary says who and why.
    let failing = Scratch::new("recordsfail");
    let pipeline = failing.pipeline(
        "
  sources:
    - id: source
      image: flowctl/test-component:dev
      health_port: 8088
      env: {TEST_FAIL_AFTER_MS: 500, TEST_EXIT_CODE: 7}
",
    );
    let summary_path = failing.dir.join("summary.json");
    let logs = failing.dir.join("logs");
    let mut run = failing.run(
        &pipeline,
        &[
            "--summary",
            &summary_path.display().to_string(),
            "--logs-dir",
            &logs.display().to_string(),
        ],
        &[],
    );
    assert_eq!(run.wait().code(), Some(1), "{}", run.output());
    let summary: Value = serde_json::from_str(&fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "failed");
    assert_eq!(summary["exit_code"], 1);
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("component `source` exited with code 7"),
        "{summary}"
    );
    assert_eq!(summary["components"][0]["exit_code"], 7);
    assert!(logs.join("source.log").exists());

    // Interrupted by SIGTERM.
    let stopped = Scratch::new("recordsterm");
    let pipeline = stopped.pipeline(LONG_RUNNING);
    let summary_path = stopped.dir.join("summary.json");
    let mut run = stopped.run(
        &pipeline,
        &["--summary", &summary_path.display().to_string()],
        &[],
    );
    run.wait_for("is up");
    run.signal("TERM");
    assert_eq!(run.wait().code(), Some(130), "{}", run.output());
    let summary: Value = serde_json::from_str(&fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "interrupted");
    assert_eq!(summary["exit_code"], 130);
    assert_eq!(summary["components"].as_array().unwrap().len(), 2);
}

/// A free TCP port on 127.0.0.1 (released before use; the race is harmless for a test).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `podman system service` on TCP, stopped on drop.
struct PodmanService(Child);

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_example_runs_against_a_remote_engine_over_tcp() {
    let _serial = serial();
    let podman = support::require_tool(
        "podman",
        Command::new("podman").arg("version"),
        "the remote engine test serves Podman's API over TCP; .ci/install-podman.sh installs it",
    );
    if !podman {
        return;
    }
    let port = free_port();
    let service = PodmanService(
        Command::new("podman")
            .args([
                "system",
                "service",
                "--time=0",
                &format!("tcp:127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start podman system service"),
    );
    let host = format!("tcp://127.0.0.1:{port}");
    let env = [
        ("DOCKER_HOST", host.as_str()),
        ("FLOWCTL_DOCKER_BIN", "docker"),
    ];
    let started = Instant::now();
    while !Command::new("docker")
        .arg("version")
        .envs(env)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            started.elapsed() < PATIENCE,
            "podman's service never answered on {host}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let project = format!("cij-remote-{}", std::process::id());
    let (status, stdout, stderr) = support::flowctl(
        &[
            "run",
            &repo()
                .join("examples/ttp-pipeline.yaml")
                .display()
                .to_string(),
            "--project",
            &project,
            "--no-color",
        ],
        &env,
    );
    let left = leftovers("docker", &env, &project);
    drop(service);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("the engine is remote ({host})"))
            && stderr.contains("control plane runs as a container"),
        "{stderr}"
    );
    assert_eq!(consumer_events(&stdout), expected_events(), "{stderr}");
    assert_eq!(left, Vec::<String>::new());
}
