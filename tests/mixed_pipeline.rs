//! A `driver: process` file mixing processes and containers, as upstream's files may once
//! they name an image for some component: our `raw-ledger-source` binary as a process of this
//! machine (from `./bin`, as upstream's files expect it), `ttp-processor-v1` and
//! `consumer-app-v1` as containers of the real engine, relayed by flowctl between the two. Each
//! test checks afterwards that no process it started is left (by pid and start time), no run
//! record, and no container or network labelled with its pipeline.

mod support;

use std::fs;
use std::time::Duration;

use support::process_lab::{assert_gone, raw_ledger_source, started_processes, Lab};
use support::{require_images, unique};

const IMAGES: [&str; 2] = [
    "flowctl/ttp-processor-v1:dev",
    "flowctl/consumer-app-v1:dev",
];

/// The process source over the testnet lake (`end` "0" streams forever) feeding two
/// containers; `name` is the pipeline's (and so its labels').
fn pipeline(name: &str, end: &str) -> String {
    let source = raw_ledger_source(end);
    format!(
        r#"apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: {name}
spec:
  driver: process
  sources:
{source}
  processors:
    - id: ttp-processor-v1
      image: flowctl/ttp-processor-v1:dev
      inputs: [raw-ledger-source]
      env:
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
        PORT: ":50051"
      ports:
        - containerPort: 50051
        - containerPort: 8088
      health_check: /health
      health_port: 8088
      register: true
      grpc: {{port: 50051, service: flowctl.v1.ProcessorService}}
  sinks:
    - id: consumer-app-v1
      image: flowctl/consumer-app-v1:dev
      inputs: [ttp-processor-v1]
      env:
        PORT: ":50053"
      ports:
        - containerPort: 50053
        - containerPort: 8088
      health_check: /health
      health_port: 8088
      register: true
      grpc: {{port: 50053, service: flowctl.v1.ConsumerService}}
"#
    )
}

/// Containers and networks labelled with pipeline `name`, on the engine under test.
fn leftovers(name: &str) -> Vec<String> {
    let filter = format!("label=io.flowctl.pipeline={name}");
    let mut left = Vec::new();
    for what in [&["ps", "-aq"][..], &["network", "ls", "-q"][..]] {
        let mut args: Vec<&str> = what.to_vec();
        args.extend(["--filter", &filter]);
        left.extend(support::docker(&args).lines().map(String::from));
    }
    left
}

/// The consumer's JSON lines (one per event), in order.
fn events(stdout: &str) -> Vec<String> {
    support::lines_of(stdout, "consumer-app-v1")
        .into_iter()
        .filter(|line| line.starts_with('{'))
        .map(String::from)
        .collect()
}

/// `flowctl run FILE` with the test's own project (so its names are its own) and any free
/// control plane port, then `extra`.
fn run_args(file: &std::path::Path, name: &str, extra: &[&str]) -> Vec<String> {
    ["run", &file.display().to_string(), "--project", name]
        .into_iter()
        .chain(["--no-color", "--control-plane-port", "0"])
        .chain(extra.iter().copied())
        .map(String::from)
        .collect()
}

#[test]
fn a_process_source_feeds_container_components_through_the_relay() {
    require_images(&IMAGES);
    let lab = Lab::new(&["raw-ledger-source"], "mixed-run-");
    let name = unique("mixed-run-");
    let file = lab.file("pipeline.yaml", &pipeline(&name, "998"));
    let summary = lab.path().join("summary.json");
    let summary_arg = summary.display().to_string();
    let args = run_args(&file, &name, &["--summary", &summary_arg]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stdout, stderr) = lab.run(&args);
    let output = format!("{stderr}\n{stdout}");
    assert!(status.success(), "{output}");
    assert_eq!(
        events(&stdout),
        support::testnet_997_998_events(),
        "{output}"
    );
    // Everything registered with the one control plane, the process too.
    for id in ["raw-ledger-source", "ttp-processor-v1", "consumer-app-v1"] {
        assert!(
            stderr.contains(&format!("{id} registered with the control plane as {id}")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("relay raw-ledger-source -> ttp-processor-v1: 2 event(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("created 2 container(s)"), "{stderr}");
    let started = started_processes(&stderr);
    assert_eq!(started.len(), 1, "{stderr}");
    assert_gone(&started, Duration::ZERO, &output);
    assert!(lab.records().is_empty(), "{:?}", lab.records());
    assert_eq!(leftovers(&name), Vec::<String>::new(), "{output}");

    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "completed");
    for component in summary["components"].as_array().unwrap() {
        match component["id"].as_str().unwrap() {
            "raw-ledger-source" => {
                assert_eq!(
                    component["pids"],
                    serde_json::json!([started["raw-ledger-source"]])
                );
                assert!(component["command"]
                    .as_str()
                    .unwrap()
                    .ends_with("bin/raw-ledger-source"));
            }
            id => assert!(
                IMAGES.contains(&component["image"].as_str().unwrap()),
                "{id}: {component}"
            ),
        }
    }
}

/// SIGTERM and SIGINT of a streaming mixed run: one stop order for both kinds (the sink's
/// container, then the processor's, then the source's process), nothing left.
#[test]
fn a_signal_stops_processes_and_containers_in_one_order() {
    require_images(&IMAGES);
    for signal in ["TERM", "INT"] {
        let lab = Lab::new(&["raw-ledger-source"], "mixed-signal-");
        let name = unique("mixed-signal-");
        let file = lab.file("pipeline.yaml", &pipeline(&name, "0"));
        let args = run_args(&file, &name, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut run = lab.spawn(&args);
        run.wait_for("relaying between 3 flowctl.v1 component(s)");
        let started = started_processes(&run.stderr());
        assert_eq!(started.len(), 1, "{}", run.output());
        run.signal(signal);
        let status = run.wait();
        assert_eq!(status.code(), Some(130), "{signal}: {}", run.output());
        assert_gone(&started, Duration::ZERO, &run.output());
        assert!(lab.records().is_empty(), "{signal}: {:?}", lab.records());
        assert_eq!(leftovers(&name), Vec::<String>::new(), "{}", run.output());
        let stdout = run.stdout();
        let at = |id: &str| support::line_index(&stdout, &format!("{id}: SIGTERM received"));
        assert!(at("consumer-app-v1") < at("ttp-processor-v1"), "{stdout}");
        assert!(at("ttp-processor-v1") < at("raw-ledger-source"), "{stdout}");
    }
}

/// Both tests again with `FLOWCTL_DOCKER_BIN=podman`.
#[test]
fn podman_runs_a_mixed_pipeline() {
    support::rerun_under_podman(
        "a pipeline mixing processes and containers",
        &[
            "a_process_source_feeds_container_components_through_the_relay",
            "a_signal_stops_processes_and_containers_in_one_order",
        ],
        2,
    );
}
