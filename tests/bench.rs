//! The benchmarks run, once each (`flowctl-bench --once`, on a small generated lake), so they
//! cannot rot: every section ends without an error, the bench leaves nothing behind, and every
//! figure it reports is in its JSON results as a number. No figure is compared with anything:
//! times are the bench's to print (docs/performance.md), never a test's to assert.

mod support;

use std::process::Command;

use support::{repo, require_tool, skip_requested, TempDir};

/// The figures each section must have measured (keys of its object in the JSON results).
const FIGURES: &[(&str, &[&str])] = &[
    (
        "lifecycle.docker",
        &[
            "total_flowctl_per_compose",
            "total_flowctl_per_floor",
            "cpu_flowctl_per_compose",
            "up_flowctl_per_compose",
        ],
    ),
    ("scaling", &["flowctl_30_per_3", "floor_30_per_3"]),
    ("datapath", &["pipeline_per_floor", "one_thread_per_floor"]),
    (
        "cost",
        &[
            "peak_rss_example_mb",
            "peak_rss_30_components_mb",
            "stripped_mb",
            "version_ms",
        ],
    ),
    ("backends", &["s3_per_ceiling", "s3_per_folder"]),
    (
        "relay",
        &[
            "events_s_relayed_per_direct",
            "relayed_peak_rss_mb",
            "relayed_relay_cpu",
        ],
    ),
    (
        "processes",
        &["ledgers_s_processes_per_containers", "processes_cpu"],
    ),
    ("soak", &["cpu_s", "peak_rss_mb"]),
];

#[test]
fn every_section_of_the_bench_runs_once_and_reports_its_figures() {
    let bench = repo().join("target/x86_64-unknown-linux-gnu/release/flowctl-bench");
    assert!(
        bench.is_file(),
        "{} is missing: cargo build --release --workspace --bins (scripts/test.sh does)",
        bench.display()
    );
    let compose = std::env::var("COMPOSE").unwrap_or_else(|_| "docker-compose".into());
    let tools = [
        (
            compose.as_str(),
            "version",
            "apt-get install docker-compose (v1.29)",
        ),
        (
            "s3s-fs",
            "--help",
            "scripts/test.sh installs it (cargo install s3s-fs --features binary)",
        ),
        ("curl", "--version", "apt-get install curl"),
    ];
    for (name, probe, hint) in tools {
        let tool = if name == "s3" { "s3s-fs" } else { name };
        if !require_tool(name, Command::new(tool).arg(probe), hint) {
            return;
        }
    }
    // The lifecycle's second engine: Podman, unless FLOWCTL_TEST_SKIP names it.
    if skip_requested("podman") {
        eprintln!("FLOWCTL_TEST_SKIP names podman: the lifecycle is measured on Docker only");
    }
    let podman = !skip_requested("podman")
        && require_tool(
            "podman",
            Command::new("podman").arg("--version"),
            ".ci/install-podman.sh",
        );
    let engines = if podman { "docker,podman" } else { "docker" };
    let dir = TempDir::new("bench");
    let json = dir.0.join("results.json");
    let out = Command::new(&bench)
        .args([
            "--once",
            "all",
            "soak",
            "--soak-minutes",
            "0",
            "--engines",
            engines,
            "--json",
        ])
        .arg(&json)
        .env("BENCH_DATAPATH_LEDGERS", "64")
        .output()
        .expect("the bench starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("leftover containers of this run: 0;"),
        "the bench left containers:\n{stdout}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the bench wrote its results"))
            .expect("the results are JSON");
    assert_eq!(results["complete"], true, "{results:#}");
    let mut figures: Vec<(&str, &[&str])> = FIGURES.to_vec();
    if podman {
        // Compose on Podman only where Podman runs health checks (systemd; the bench says why not).
        figures.push((
            "lifecycle.podman",
            &["total_flowctl_per_floor", "flowctl_cpu_s"],
        ));
    }
    for (section, keys) in figures {
        for key in keys {
            let value = &results["sections"][section][key];
            assert!(
                value.as_f64().is_some_and(|v| v.is_finite() && v > 0.0),
                "{section}.{key} is {value} in the bench's results:\n{stdout}"
            );
        }
    }
    assert_eq!(results["sections"]["relay"]["every_event_delivered"], true);
    assert_eq!(
        results["sections"]["processes"]["every_event_delivered"],
        true
    );
    assert_eq!(results["sections"]["soak"]["warnings"], 0, "{stdout}");
}
