//! End to end: `flowctl run examples/ttp-pipeline.yaml` with the real images
//! (`scripts/build-images.sh`) on the real ledgers in `examples/ledgers/`, through the real
//! container engine (`FLOWCTL_DOCKER_BIN`, default `docker`; the upstream-events test runs again
//! under Podman, see [`podman_runs_the_example_end_to_end`]). Each test uses its own
//! `--project`, so container and network names are unique, and checks that nothing of its run
//! is left behind.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::{docker_bin, flowctl_command, repo, require_images, unique, wait_bounded, TempDir};

const IMAGES: [&str; 3] = [
    "flowctl/stellar-live-source-datalake:dev",
    "flowctl/ttp-processor:dev",
    "flowctl/consumer-app:dev",
];
/// Upper bound for a whole run, only so that a broken run fails instead of hanging the suite.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn example() -> PathBuf {
    repo().join("examples/ttp-pipeline.yaml")
}

/// The container CLI's output, whatever its status (cleanup tries removals that may fail).
fn docker(args: &[&str]) -> Output {
    Command::new(docker_bin())
        .args(args)
        .output()
        .expect("the container CLI runs")
}

/// A project name no other test (or concurrent run of this suite) uses.
fn project(test: &str) -> String {
    unique(&format!("ex-{test}-"))
}

/// Containers and networks of `project` that still exist.
fn leftovers(project: &str) -> Vec<String> {
    let label = format!("label=io.flowctl.project={project}");
    let containers = docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
    let networks = docker(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"]);
    String::from_utf8_lossy(&containers.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&networks.stdout).lines())
        .map(str::to_string)
        .collect()
}

/// Removes whatever a failed test left, by the project's unique names only.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in leftovers(&self.0) {
            let _ = docker(&["rm", "-f", &name]);
            let _ = docker(&["network", "rm", &name]);
        }
    }
}

/// A copy of the example pipeline with `replacements` applied, in a scratch folder (removed on
/// drop). Relative `host_path`s are made absolute, since the copy lives elsewhere.
struct Variant {
    dir: TempDir,
    file: PathBuf,
}

impl Variant {
    fn new(test: &str, replacements: &[(&str, &str)]) -> Variant {
        let mut text = fs::read_to_string(example()).unwrap();
        let ledgers = repo().join("examples/ledgers");
        text = text.replace(
            "host_path: ledgers/",
            &format!("host_path: {}/", ledgers.display()),
        );
        for (from, to) in replacements {
            assert!(
                text.contains(from),
                "the example no longer contains {from:?}"
            );
            text = text.replace(from, to);
        }
        let dir = TempDir::new(&format!("flowctl-example-{test}-"));
        let file = dir.0.join("pipeline.yaml");
        fs::write(&file, text).unwrap();
        Variant { dir, file }
    }

    /// Mounts the data lake at `lake` instead of the real testnet lake.
    fn mount_lake(&self, lake: &Path) {
        let real = format!(
            "host_path: {}/testnet-997-999",
            repo().join("examples/ledgers").display()
        );
        let text = fs::read_to_string(&self.file).unwrap();
        assert!(text.contains(&real), "the example no longer mounts {real}");
        let mounted = format!("host_path: {}", lake.display());
        fs::write(&self.file, text.replace(&real, &mounted)).unwrap();
    }
}

fn flowctl_run(pipeline: &Path, project: &str) -> Command {
    let mut command = flowctl_command();
    command
        .args([
            "run",
            "--no-color",
            "--control-plane-port",
            "0",
            "--project",
            project,
        ])
        .arg(pipeline);
    command
}

/// `flowctl run` of `pipeline` to its end (at most [`RUN_LIMIT`]): status, stdout, stderr.
fn run_bounded(pipeline: &Path, project: &str) -> (std::process::ExitStatus, String, String) {
    let mut child = flowctl_run(pipeline, project)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // On the bound it is killed and the test fails.
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = wait_bounded(&mut child, RUN_LIMIT, "flowctl run");
    (status, out.join().unwrap(), err.join().unwrap())
}

/// The consumer's JSON event lines (its log lines and summary are not JSON objects).
fn events(output: &str) -> Vec<&str> {
    support::lines_of(output, "consumer-app")
        .into_iter()
        .filter(|line| line.starts_with('{'))
        .collect()
}

fn summary(output: &str) -> serde_json::Value {
    let line = support::lines_of(output, "consumer-app")
        .into_iter()
        .find_map(|line| line.strip_prefix("consumer-app summary: "))
        .unwrap_or_else(|| panic!("no consumer summary in:\n{output}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn testnet_997_998_through_three_containers_matches_upstream_exactly() {
    require_images(&IMAGES);
    let project = project("testnet");
    let _cleanup = Cleanup(project.clone());
    let (status, stdout, stderr) = run_bounded(&example(), &project);
    assert!(
        status.success(),
        "flowctl run failed: {status}\n{stdout}\n{stderr}"
    );
    let expected = fs::read_to_string(
        repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl"),
    )
    .unwrap();
    assert_eq!(
        events(&stdout),
        expected.lines().collect::<Vec<_>>(),
        "consumer output differs from the upstream events\nstderr:\n{stderr}"
    );
    let summary = summary(&stdout);
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["events"], expected.lines().count());
    assert_eq!(leftovers(&project), Vec::<String>::new());
}

/// The upstream-events test again with `FLOWCTL_DOCKER_BIN=podman` (Podman's own copies of the
/// images: `FLOWCTL_DOCKER_BIN=podman scripts/build-images.sh`).
#[test]
fn podman_runs_the_example_end_to_end() {
    support::rerun_under_podman(
        "the example pipeline",
        &[
            "testnet_997_998_through_three_containers_matches_upstream_exactly",
            "--exact",
        ],
        1,
    );
}

#[test]
fn standalone_p25_bounded_range_ends_without_a_later_ledger() {
    require_images(&IMAGES);
    // 10077 is the lake's last ledger: the run must end after it, not wait for 10078.
    let variant = Variant::new(
        "standalone",
        &[
            ("/testnet-997-999", "/standalone-p25-10048-10077"),
            (
                "\"Test SDF Network ; September 2015\"",
                "\"Standalone Network ; February 2017\"",
            ),
            ("start_ledger: 997", "start_ledger: 10070"),
            ("end_ledger: 998", "end_ledger: 10071"),
            ("args: [\"997\", \"998\"]", "args: [\"10070\", \"10077\"]"),
        ],
    );
    let project = project("standalone");
    let _cleanup = Cleanup(project.clone());
    let (status, stdout, stderr) = run_bounded(&variant.file, &project);
    assert!(
        status.success(),
        "flowctl run failed: {status}\n{stdout}\n{stderr}"
    );

    // The same range extracted offline, in one process, is what the containers must deliver.
    let offline =
        Command::new(repo().join("target/x86_64-unknown-linux-gnu/release/ttp-processor"))
            .args(["events", "--datalake"])
            .arg(repo().join("examples/ledgers/standalone-p25-10048-10077"))
            .args(["--start", "10070", "--end", "10077"])
            .output()
            .unwrap();
    assert!(offline.status.success());
    let offline = String::from_utf8(offline.stdout).unwrap();
    let received = events(&stdout);
    assert!(!received.is_empty());
    assert_eq!(received, offline.lines().collect::<Vec<_>>());
    let summary = summary(&stdout);
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["end_ledger"], 10077);
    assert_eq!(summary["last_ledger_with_events"], 10077);
    assert_eq!(leftovers(&project), Vec::<String>::new());
}

/// Copies ledger `sequence` of the real testnet lake into the lake at `to` (same layout), as an
/// exporter publishes an object: written aside, then renamed into place.
fn publish_testnet_ledger(to: &Path, sequence: u32) {
    let name = format!("{:08X}--{sequence}.xdr.zstd", u32::MAX - sequence);
    let from = repo()
        .join("examples/ledgers/testnet-997-999/FFFFFFFF--0-63999")
        .join(&name);
    let folder = to.join("FFFFFFFF--0-63999");
    fs::create_dir_all(&folder).unwrap();
    let partial = folder.join(format!("{name}.partial"));
    fs::copy(from, &partial).unwrap();
    fs::rename(partial, folder.join(name)).unwrap();
}

/// Waits for a line of flowctl's output that satisfies `wanted`, with an upper bound.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    child: &mut Child,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) {
    let began = Instant::now();
    loop {
        match rx.recv_timeout(RUN_LIMIT.saturating_sub(began.elapsed())) {
            Ok(line) if wanted(&line) => return,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("flowctl never printed {what}");
            }
        }
    }
}

/// Live mode (end 0) on a lake that grows while the pipeline runs: the source streams each new
/// ledger as its file appears; `docker logs` of each component shows that activity; a SIGINT to
/// flowctl stops everything and leaves nothing.
#[test]
fn live_run_follows_a_growing_lake_and_stops_on_sigint() {
    require_images(&IMAGES);
    let variant = Variant::new(
        "live",
        &[("args: [\"997\", \"998\"]", "args: [\"997\", \"0\"]")],
    );
    // A copy of the testnet lake holding only 997 for now, mounted instead of the real one.
    let lake = variant.dir.0.join("lake");
    fs::create_dir_all(&lake).unwrap();
    fs::copy(
        repo().join("examples/ledgers/testnet-997-999/.config.json"),
        lake.join(".config.json"),
    )
    .unwrap();
    publish_testnet_ledger(&lake, 997);
    variant.mount_lake(&lake);

    let project = project("live");
    let _cleanup = Cleanup(project.clone());
    let mut child = flowctl_run(&variant.file, &project)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let event_of = |ledger: u32| {
        move |line: &str| {
            line.starts_with("consumer-app")
                && line.contains(&format!("\"ledger_sequence\": {ledger},"))
        }
    };
    wait_line(&rx, &mut child, "an event of ledger 997", event_of(997));
    // 998 and 999 appear while the pipeline runs; their events must follow.
    publish_testnet_ledger(&lake, 998);
    wait_line(&rx, &mut child, "an event of ledger 998", event_of(998));
    publish_testnet_ledger(&lake, 999);
    wait_line(&rx, &mut child, "an event of ledger 999", event_of(999));
    let logs_now = |component: &str| {
        let out = docker(&["logs", &format!("{project}-{component}")]);
        assert!(out.status.success(), "docker logs {component}");
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };
    // The engine copies each container's output asynchronously, so a line another container
    // already acted on may reach `docker logs` a moment later: poll until the expected lines
    // are there (bounded), then check them.
    let expected_lines: &[(&str, &[&str])] = &[
        (
            "stellar-live-source-datalake",
            &[
                "ledger 998 is not there yet",
                "ledger 998 appeared",
                "ledger 999 appeared",
            ],
        ),
        (
            "ttp-processor",
            &["token transfer events for ledgers 997- (live)"],
        ),
        (
            "consumer-app",
            &[
                "receiving token transfer events for ledgers 997- (live)",
                "\"ledger_sequence\": 999",
            ],
        ),
    ];
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30)
        && !expected_lines.iter().all(|(component, lines)| {
            let logs = logs_now(component);
            lines.iter().all(|line| logs.contains(line))
        })
    {
        thread::sleep(Duration::from_millis(100));
    }
    let logs = logs_now;
    let source = logs("stellar-live-source-datalake");
    for expected in [
        "ledger 998 is not there yet",
        "ledger 998 appeared",
        "ledger 999 appeared",
    ] {
        assert!(source.contains(expected), "source logs:\n{source}");
    }
    let processor = logs("ttp-processor");
    assert!(
        processor.contains("token transfer events for ledgers 997- (live)"),
        "{processor}"
    );
    let consumer = logs("consumer-app");
    assert!(
        consumer.contains("receiving token transfer events for ledgers 997- (live)"),
        "{consumer}"
    );
    assert!(consumer.contains("\"ledger_sequence\": 999"), "{consumer}");

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = wait_bounded(&mut child, RUN_LIMIT, "flowctl after SIGINT");
    let stdout = reader.join().unwrap();
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
    // Ctrl+C is how a live pipeline is meant to end: a clean stop, not a failure.
    assert!(
        status.success() || status.code() == Some(130),
        "flowctl after SIGINT: {status}\n{stderr}"
    );
    // Each component stopped on its own SIGTERM (PID 1 handles it) and said so.
    for component in ["stellar-live-source-datalake", "ttp-processor"] {
        assert!(
            support::lines_of(&stdout, component)
                .iter()
                .any(|line| line.contains("SIGTERM received, stopping")),
            "{component} did not log its SIGTERM:\n{stdout}"
        );
    }
    assert_eq!(leftovers(&project), Vec::<String>::new());
}

/// A generated data lake (examples/stellar/datagen, `datalake-gen`): 128 ledgers, 64 per
/// file, through the three containers; the consumer prints exactly the events the generator
/// computed on its own, in order.
#[test]
fn generated_lake_through_three_containers_matches_the_generators_events() {
    require_images(&IMAGES);
    let generator = support::datalake_gen();
    let variant = Variant::new(
        "generated",
        &[
            (
                "\"Test SDF Network ; September 2015\"",
                "\"Standalone Network ; February 2017\"",
            ),
            ("LEDGERS_PER_FILE: \"1\"", "LEDGERS_PER_FILE: \"64\""),
            (
                "FILES_PER_PARTITION: \"64000\"",
                "FILES_PER_PARTITION: \"10\"",
            ),
            ("start_ledger: 997", "start_ledger: 6400"),
            ("end_ledger: 998", "end_ledger: 6401"),
            ("args: [\"997\", \"998\"]", "args: [\"6400\", \"6527\"]"),
        ],
    );
    let lake = variant.dir.0.join("lake");
    let expected_file = variant.dir.0.join("expected.jsonl");
    let generated = Command::new(&generator)
        .args([
            "--start",
            "6400",
            "--ledgers",
            // 128 ledgers print about 9,000 events: enough to cross several of the
            // processor's files, small enough for the test's time budget.
            "128",
            "--ledgers-per-file",
            "64",
        ])
        .args(["--files-per-partition", "10", "--out"])
        .arg(&lake)
        .arg("--expected")
        .arg(&expected_file)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", stderr_of(&generated));
    variant.mount_lake(&lake);

    let project = project("generated");
    let _cleanup = Cleanup(project.clone());
    let (status, stdout, stderr) = run_bounded(&variant.file, &project);
    assert!(status.success(), "flowctl run failed: {status}\n{stderr}");
    let expected = fs::read_to_string(&expected_file).unwrap();
    let received = events(&stdout);
    assert!(received.len() > 1000, "{} events", received.len());
    assert!(
        received == expected.lines().collect::<Vec<_>>(),
        "consumer output ({} events) differs from the generator's ({} events)",
        received.len(),
        expected.lines().count()
    );
    let summary = summary(&stdout);
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["events"], expected.lines().count());
    assert_eq!(leftovers(&project), Vec::<String>::new());
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
