//! End to end: `flowctl run examples/ttp-pipeline-v1.yaml` — flowctl.v1 components
//! (`scripts/build-images.sh` builds `flowctl/*-v1:dev`) registering with
//! `flowctl.v1.ControlPlaneService` and relayed by flowctl — through the real container engine
//! (`FLOWCTL_DOCKER_BIN`, default `docker`; again under Podman, see
//! [`podman_relays_the_v1_example`]) on the real testnet ledgers. Each test runs a copy of the
//! example under a unique pipeline name and checks that nothing of it is left behind.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{repo, require_images, Scratch};

const IMAGES: [&str; 3] = [
    "flowctl/stellar-live-source-v1:dev",
    "flowctl/ttp-processor-v1:dev",
    "flowctl/consumer-app-v1:dev",
];

/// The example's `spec:` with `lake` mounted as its data lake.
fn example_spec(lake: &Path) -> String {
    let text = fs::read_to_string(repo().join("examples/ttp-pipeline-v1.yaml")).unwrap();
    let (_, spec) = text
        .split_once("\nspec:\n")
        .expect("the example has a spec");
    let mount = "host_path: ledgers/testnet-997-999";
    assert!(spec.contains(mount), "the example no longer mounts {mount}");
    spec.replace(mount, &format!("host_path: {}", lake.display()))
}

fn real_lake() -> PathBuf {
    repo().join("examples/ledgers/testnet-997-999")
}

/// What `component` printed, from flowctl's multiplexed `<id> | <line>` output.
fn lines_of<'a>(output: &'a str, component: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(prefix, _)| prefix.trim() == component)
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn the_v1_example_relays_exactly_the_upstream_events_of_testnet_997_998() {
    require_images(&IMAGES);
    let scratch = Scratch::new("v1");
    let pipeline = scratch.pipeline(&example_spec(&real_lake()));
    let mut run = scratch.run(&pipeline, &[], &[]);
    let status = run.wait();
    let (stdout, stderr) = (run.stdout(), run.stderr());
    assert!(status.success(), "{}", run.output());

    let expected = fs::read_to_string(real_lake().join("expected-events-997-998.jsonl")).unwrap();
    let events: Vec<&str> = lines_of(&stdout, "consumer-app-v1")
        .into_iter()
        .filter(|line| line.starts_with('{'))
        .collect();
    assert_eq!(events, expected.lines().collect::<Vec<_>>(), "{stderr}");

    // Each registered through flowctl.v1 and the RPC answered OK (upstream's SDK components
    // exit at once when it fails, as it did before flowctl served flowctl.v1): flowctl saw the
    // registration, and the component logged the OK answer.
    for id in [
        "stellar-live-source-v1",
        "ttp-processor-v1",
        "consumer-app-v1",
    ] {
        assert!(
            stderr.contains(&format!("{id} registered with the control plane as {id}")),
            "{stderr}"
        );
        assert!(
            lines_of(&stdout, id)
                .iter()
                .any(|line| line.contains("registered with flowctl.v1.ControlPlaneService at")),
            "{stdout}"
        );
    }
    // Per-edge counts and the consumer's answer; the run ends with the relay.
    assert!(
        stderr.contains("relay stellar-live-source-v1 -> ttp-processor-v1: 2 event(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("relay ttp-processor-v1 -> consumer-app-v1: 18 event(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("relay: consumer-app-v1 answered: 18 event(s) consumed, 0 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("the relay ended: pipeline"), "{stderr}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

/// The upstream-events test again with `FLOWCTL_DOCKER_BIN=podman` (Podman's own copies of the
/// images: `FLOWCTL_DOCKER_BIN=podman scripts/build-images.sh`).
#[test]
fn podman_relays_the_v1_example() {
    support::rerun_under_podman(
        "the flowctl.v1 example pipeline",
        &[
            "the_v1_example_relays_exactly_the_upstream_events_of_testnet_997_998",
            "--exact",
        ],
        1,
    );
}

/// Ledger 998 of a copy of the lake is garbage: the source's stream breaks after 997, so the
/// edge source -> processor breaks mid-stream. The run fails naming both components and the
/// gRPC status, and removes everything.
#[test]
fn an_edge_that_breaks_mid_stream_fails_the_run_naming_both_components() {
    require_images(&IMAGES);
    let scratch = Scratch::new("v1-broken");
    let lake = scratch.dir.join("lake");
    let partition = lake.join("FFFFFFFF--0-63999");
    fs::create_dir_all(&partition).unwrap();
    fs::copy(real_lake().join(".config.json"), lake.join(".config.json")).unwrap();
    for name in ["FFFFFC1A--997.xdr.zstd", "FFFFFC18--999.xdr.zstd"] {
        fs::copy(
            real_lake().join("FFFFFFFF--0-63999").join(name),
            partition.join(name),
        )
        .unwrap();
    }
    fs::write(partition.join("FFFFFC19--998.xdr.zstd"), b"not zstd at all").unwrap();
    let pipeline = scratch.pipeline(&example_spec(&lake));

    let stderr = scratch.run_failing(&pipeline);
    let broke = stderr
        .lines()
        .find(|line| line.contains("relay: edge"))
        .unwrap_or_else(|| panic!("no broken edge reported:\n{stderr}"));
    assert!(
        broke.contains("stellar-live-source-v1 -> ttp-processor-v1"),
        "{broke}"
    );
    assert!(
        broke.contains("StreamEvents failed with gRPC status"),
        "{broke}"
    );
    assert!(broke.contains("998"), "{broke}");
    // Ledger 997 got through before the break: the break was mid-stream.
    assert!(
        stderr.contains("relay stellar-live-source-v1 -> ttp-processor-v1: 1 event(s)"),
        "{stderr}"
    );
}
