//! `spec.driver: process` against real processes: our flowctl.v1 binaries (raw-ledger-source,
//! ttp-processor-v1, consumer-app-v1, built by the workspace) in a `./bin` folder, as
//! upstream's files expect them, started by the real flowctl. Every test has its own runtime
//! directory (`FLOWCTL_RUNTIME_DIR`), so its run records are its own, and checks afterwards that
//! no process it started is left (by pid and start time) and no record either.

mod support;

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::process_lab::{assert_gone, raw_ledger_source, started_processes, Lab};
use support::{is_running, kill9, repo, stat_field};

/// The binaries a test's `bin/` holds, from the workspace's release build.
const BINARIES: [&str; 3] = ["raw-ledger-source", "ttp-processor-v1", "consumer-app-v1"];

/// The pipeline of our three v1 binaries over the testnet lake; `end` "0" streams forever.
fn pipeline(end: &str, extra_source_env: &str) -> String {
    let source = raw_ledger_source(end);
    format!(
        r#"apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: process-ttp
spec:
  driver: process
  sources:
{source}
{extra_source_env}
  processors:
    - id: ttp-processor-v1
      command: ["./bin/ttp-processor-v1"]
      inputs: [raw-ledger-source]
      env:
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
  sinks:
    - id: consumer-app-v1
      command: ["./bin/consumer-app-v1"]
      inputs: [ttp-processor-v1]
"#
    )
}

/// The components' JSON lines of `stdout` (the consumer prints one per event).
fn events(stdout: &str) -> Vec<String> {
    let mut events: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_once(" | "))
        .filter(|(id, line)| id.trim() == "consumer-app-v1" && line.starts_with('{'))
        .map(|(_, line)| line.to_string())
        .collect();
    events.sort();
    events
}

fn expected_events() -> Vec<String> {
    let mut events = support::testnet_997_998_events();
    events.sort();
    events
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn upstreams_process_pipeline_files_validate_as_they_are() {
    let dir = repo().join("tests/pipelines/upstream/process");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 7, "{files:?}");
    for path in files {
        let (status, stdout, stderr) = support::flowctl(
            &["validate", &path.display().to_string()],
            &[("FLOWCTL_DOCKER_BIN", "/nonexistent/docker")],
        );
        assert!(status.success(), "{}: {stderr}", path.display());
        assert!(stdout.contains("is valid"), "{stdout}");
    }
    // Translations describe containers: a process component is refused, naming it.
    let file = dir.join("local-ducklake.yaml");
    let (status, stdout, stderr) = support::flowctl(
        &["translate", &file.display().to_string(), "--to", "compose"],
        &[],
    );
    assert!(!status.success(), "{stdout}");
    assert!(
        stderr.contains("component `raw-ledger-source`: command: it runs as a process"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn a_process_pipeline_relays_every_event_and_leaves_nothing() {
    let lab = Lab::new(&BINARIES, "proc-run-");
    let file = lab.file("pipeline.yaml", &pipeline("998", ""));
    let summary = lab.path().join("summary.json");
    let (status, stdout, stderr) = lab.run(&[
        "run",
        &file.display().to_string(),
        "--summary",
        &summary.display().to_string(),
    ]);
    let output = format!("{stderr}\n{stdout}");
    assert!(status.success(), "{output}");
    assert_eq!(events(&stdout), expected_events(), "{output}");
    assert!(
        stderr.contains("pipeline process-ttp is complete"),
        "{stderr}"
    );
    // Ours register as upstream's do, with the id the file gives.
    for id in BINARIES {
        assert!(
            stderr.contains(&format!("{id} registered with the control plane as {id}")),
            "{stderr}"
        );
    }
    let started = started_processes(&stderr);
    assert_eq!(started.len(), 3, "{stderr}");
    assert_gone(&started, Duration::ZERO, &output);
    assert!(lab.records().is_empty(), "{:?}", lab.records());

    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["engine"]["kind"], "process");
    for component in summary["components"].as_array().unwrap() {
        let id = component["id"].as_str().unwrap();
        assert_eq!(component["pids"], serde_json::json!([started[id]]), "{id}");
        assert!(
            component["command"]
                .as_str()
                .unwrap()
                .ends_with(&format!("bin/{id}")),
            "{component}"
        );
    }
}

/// Upstream's shape: ports and the control plane's endpoint pinned in `env`, honoured as given.
#[test]
fn pinned_ports_and_the_files_control_plane_endpoint_are_used() {
    let lab = Lab::new(&BINARIES, "proc-pinned-");
    let (grpc, health, control) = (free_port(), free_port(), free_port());
    let extra = format!(
        "        GRPC_PORT: \"{grpc}\"\n        HEALTH_PORT: \"{health}\"\n        \
         FLOWCTL_ENDPOINT: \"127.0.0.1:{control}\""
    );
    let file = lab.file("pipeline.yaml", &pipeline("998", &extra));
    let (status, stdout, stderr) = lab.run(&["run", &file.display().to_string()]);
    assert!(status.success(), "{stderr}");
    assert_eq!(events(&stdout), expected_events());
    assert!(
        stderr.contains(&format!("control plane listening on 127.0.0.1:{control}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("(ports {grpc}, {health})")),
        "{stderr}"
    );
    // The file's FLOWCTL_ENDPOINT is the one flowctl serves: no warning that it is ignored.
    assert!(!stderr.contains("is ignored"), "{stderr}");
}

#[test]
fn sigterm_and_sigint_stop_every_process_in_order() {
    for signal in ["TERM", "INT"] {
        let lab = Lab::new(&BINARIES, "proc-signal-");
        let file = lab.file("pipeline.yaml", &pipeline("0", ""));
        let mut run = lab.spawn(&["run", &file.display().to_string()]);
        run.wait_for("relaying between 3 flowctl.v1 component(s)");
        let started = started_processes(&run.stderr());
        assert_eq!(started.len(), 3, "{}", run.output());
        run.signal(signal);
        let status = run.wait();
        assert_eq!(status.code(), Some(130), "{signal}: {}", run.output());
        assert_gone(&started, Duration::ZERO, &run.output());
        assert!(lab.records().is_empty(), "{signal}: {:?}", lab.records());
        let stdout = run.stdout();
        // Sinks first: the consumer stopped before the processor, the processor before the
        // source.
        let at = |id: &str| support::line_index(&stdout, &format!("{id}: SIGTERM received"));
        assert!(at("consumer-app-v1") < at("ttp-processor-v1"), "{stdout}");
        assert!(at("ttp-processor-v1") < at("raw-ledger-source"), "{stdout}");
    }
}

#[test]
fn after_kill_9_the_reaper_stops_the_processes_and_gc_finds_nothing() {
    let lab = Lab::new(&BINARIES, "proc-kill-");
    let file = lab.file("pipeline.yaml", &pipeline("0", ""));
    let mut run = lab.spawn(&["run", &file.display().to_string()]);
    run.wait_for("relaying between 3 flowctl.v1 component(s)");
    let started = started_processes(&run.stderr());
    let reaper = run.reaper_pid().expect("a reaper");
    assert_eq!(lab.records().len(), 1);
    kill9(run.pid);
    run.wait();
    assert_gone(&started, Duration::from_secs(30), &run.output());
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_running(reaper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_running(reaper), "the reaper did not finish");
    assert!(lab.records().is_empty(), "{:?}", lab.records());
    let (status, stdout, stderr) = lab.run(&["gc"]);
    assert!(status.success(), "{stderr}");
    assert!(!stdout.contains("process run"), "{stdout}");
}

#[test]
fn when_flowctl_and_its_reaper_are_killed_gc_stops_exactly_the_recorded_processes() {
    let lab = Lab::new(&BINARIES, "proc-gc-");
    let file = lab.file("pipeline.yaml", &pipeline("0", ""));
    let mut run = lab.spawn(&["run", &file.display().to_string()]);
    run.wait_for("relaying between 3 flowctl.v1 component(s)");
    let started = started_processes(&run.stderr());
    kill9(run.reaper_pid().expect("a reaper"));
    kill9(run.pid);
    run.wait();
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<_> = started.values().filter(|pid| is_running(**pid)).collect();
    assert_eq!(left.len(), 3, "nothing stopped them yet");
    // An unrelated process of the same user is never touched.
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();

    let (status, stdout, stderr) = lab.run(&["gc", "--dry-run"]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("would stop process run"), "{stdout}");
    assert_eq!(started.values().filter(|pid| is_running(**pid)).count(), 3);

    let (status, stdout, stderr) = lab.run(&["gc"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("stopped process run"), "{stdout}");
    assert_gone(&started, Duration::ZERO, &stdout);
    assert!(lab.records().is_empty(), "{:?}", lab.records());
    assert!(is_running(bystander.id()));
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn a_crashing_process_fails_the_run_naming_it_and_nothing_is_left() {
    let lab = Lab::new(&BINARIES, "proc-crash-");
    let text = pipeline("0", "").replace(
        "      command: [\"./bin/ttp-processor-v1\"]",
        "      command: [\"sh\", \"-c\", \"echo processor output; sleep 30 & exit 3\"]",
    );
    let file = lab.file("pipeline.yaml", &text);
    let (status, _stdout, stderr) = lab.run(&["run", &file.display().to_string()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("component `ttp-processor-v1` exited with code 3 while starting"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ttp-processor-v1 | processor output"),
        "{stderr}"
    );
    // The source, and the crashed processor's own child (its group), are gone too.
    let started = started_processes(&stderr);
    assert_gone(&started, Duration::ZERO, &stderr);
    let sleeping = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 30$"])
        .output()
        .unwrap();
    let orphans: Vec<u32> = String::from_utf8_lossy(&sleeping.stdout)
        .lines()
        .filter_map(|pid| pid.parse().ok())
        .filter(|pid| {
            // Only those that ran in this test's folder.
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == lab.path())
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "the processor's child is left: {orphans:?}"
    );
    assert!(lab.records().is_empty(), "{:?}", lab.records());
}

#[test]
fn bad_process_components_are_refused_before_anything_starts() {
    let lab = Lab::new(&BINARIES, "proc-bad-");
    fs::write(lab.path().join("bin/not-executable"), "data").unwrap();
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let text = pipeline("998", &format!("        GRPC_PORT: \"{busy_port}\""))
        .replace("./bin/ttp-processor-v1", "./bin/missing")
        .replace("./bin/consumer-app-v1", "./bin/not-executable");
    let file = lab.file("pipeline.yaml", &text);
    let (status, stdout, stderr) = lab.run(&["run", &file.display().to_string()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let name = file.display().to_string();
    for expected in [
        "component `ttp-processor-v1`: command: `./bin/missing` does not exist".to_string(),
        "component `consumer-app-v1`: command: `./bin/not-executable` is not executable"
            .to_string(),
        format!("component `raw-ledger-source`: env.GRPC_PORT: port {busy_port} is already in use"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    }
    // File and line of each field.
    assert!(stderr.contains(&name), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");
    assert!(!stderr.contains("starting "), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(lab.records().is_empty());
    drop(busy);

    // A field only a container has.
    let text = pipeline("998", "").replace(
        "      inputs: [raw-ledger-source]\n",
        "      inputs: [raw-ledger-source]\n      volumes:\n        - {host_path: /tmp, \
         container_path: /data}\n",
    );
    let file = lab.file("volumes.yaml", &text);
    let (status, _, stderr) = lab.run(&["validate", &file.display().to_string()]);
    assert!(!status.success());
    assert!(
        stderr.contains("component `ttp-processor-v1`: volumes: not supported for a process"),
        "{stderr}"
    );
}

/// The pids flowctl recorded are the processes' own, with their start times.
#[test]
fn the_record_names_each_process_by_pid_and_start_time() {
    let lab = Lab::new(&BINARIES, "proc-record-");
    let file = lab.file("pipeline.yaml", &pipeline("0", ""));
    let mut run = lab.spawn(&["run", &file.display().to_string()]);
    run.wait_for("relaying between 3 flowctl.v1 component(s)");
    let records = lab.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(lab.runtime().join(&records[0])).unwrap())
            .unwrap();
    assert_eq!(record["owner_pid"], run.pid);
    let started = started_processes(&run.stderr());
    for process in record["processes"].as_array().unwrap() {
        let id = process["component"].as_str().unwrap();
        let pid = process["pid"].as_u64().unwrap() as u32;
        assert_eq!(started[id], pid);
        assert_eq!(
            stat_field(pid, 22).unwrap(),
            process["start_ticks"].to_string()
        );
        // Each leads a process group of its own.
        assert_eq!(stat_field(pid, 5).unwrap(), pid.to_string());
    }
    // `flowctl status` finds the run by its record, without any engine.
    let env = lab.env();
    let (status, stdout, stderr) = support::flowctl(
        &["status", "--wide"],
        &[
            (env[0].0, env[0].1.as_str()),
            ("FLOWCTL_DOCKER_BIN", "/nonexistent/docker"),
        ],
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("pipeline process-ttp (run "), "{stdout}");
    for (id, pid) in &started {
        let row = stdout
            .lines()
            .find(|l| l.contains(id.as_str()) && l.contains(&format!("pid {pid}")))
            .unwrap_or_else(|| panic!("no row of {id}:\n{stdout}"));
        assert!(row.contains("running") && row.contains("yes"), "{row}");
    }
    run.signal("TERM");
    run.wait();
    assert_gone(&started, Duration::ZERO, &run.output());
}
