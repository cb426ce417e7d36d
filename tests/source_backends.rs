//! End to end with the source reading S3: `flowctl run examples/ttp-pipeline-s3.yaml` with the
//! real images (`scripts/build-images.sh`, which also wraps the `s3s-fs` S3 server), on the
//! real ledgers of `examples/ledgers` served by that server as a component of the pipeline.
//! The consumer must print exactly the upstream events of testnet 997-998, and nothing of the
//! run may be left behind. (The backends themselves are tested against real servers in
//! `examples/stellar/components/tests/backends.rs`.)

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use support::{docker_bin, Scratch};

const S3_IMAGE: &str = "flowctl/s3s-fs:dev";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the consumer printed as JSON event lines, from flowctl's `<id> | <line>` output.
fn consumer_events(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|line| line.split_once(" | "))
        .filter(|(prefix, line)| prefix.trim() == "consumer-app" && line.starts_with('{'))
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn the_s3_example_gives_the_upstream_events_of_testnet_997_998() {
    let present = Command::new(docker_bin())
        .args(["image", "inspect", "--format", "{{.Id}}", S3_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        present,
        "the image {S3_IMAGE} is missing: install s3s-fs statically linked \
         (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo install s3s-fs --version 0.12.0 \
         --features binary --locked --target x86_64-unknown-linux-gnu) and run \
         scripts/build-images.sh"
    );
    let scratch = Scratch::new("s3-example");
    let example = fs::read_to_string(repo().join("examples/ttp-pipeline-s3.yaml")).unwrap();
    // The copy lives in the scratch folder: absolute host path, and the scratch's unique name
    // so that the run is labelled (and cleaned up) as this test's.
    let text = example
        .replace(
            "host_path: ledgers",
            &format!("host_path: {}", repo().join("examples/ledgers").display()),
        )
        .replace("name: ttp-pipeline-s3", &format!("name: {}", scratch.name));
    assert_ne!(
        text, example,
        "the example no longer has the expected fields"
    );
    let pipeline = scratch.dir.join("ttp-pipeline-s3.yaml");
    fs::write(&pipeline, text).unwrap();

    let mut run = scratch.run(&pipeline, &[], &[]);
    let status = run.wait();
    assert!(status.success(), "flowctl run failed: {}", run.output());
    let expected = fs::read_to_string(
        repo().join("examples/ledgers/testnet-997-999/expected-events-997-998.jsonl"),
    )
    .unwrap();
    let stdout = run.stdout();
    assert_eq!(
        consumer_events(&stdout),
        expected.lines().collect::<Vec<_>>(),
        "consumer output differs from the upstream events\n{}",
        run.output()
    );
    assert!(stdout.contains("\"outcome\":\"completed\""), "{stdout}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}
