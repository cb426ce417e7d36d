//! End to end: `flowctl run examples/ttp-pipeline-v1.yaml` — flowctl.v1 components
//! (`scripts/build-images.sh` builds `flowctl/*-v1:dev`) registering with
//! `flowctl.v1.ControlPlaneService` and relayed by flowctl — through the real container engine
//! (`FLOWCTL_DOCKER_BIN`, default `docker`; again under Podman, see
//! [`podman_relays_the_v1_example`]) on the real testnet ledgers, and a source killed
//! mid-stream and restarted on a generated lake. Each test runs a copy of the
//! example under a unique pipeline name and checks that nothing of it is left behind.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::{repo, require_images, Scratch};

/// The S3 server `scripts/build-images.sh` wraps (`s3s-fs`).
const S3_IMAGE: &str = "flowctl/s3s-fs:dev";

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
    let events: Vec<&str> = support::lines_of(&stdout, "consumer-app-v1")
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
            support::lines_of(&stdout, id)
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

/// The example with its source swapped for `raw-ledger-source`, configured as upstream's
/// pipeline files configure it (`BACKEND_TYPE`, `ARCHIVE_*`, `GRPC_PORT`,
/// `FLOWCTL_COMPONENT_ID`), reading mainnet ledger 53312000 (protocol 21, `LedgerCloseMeta` v1
/// with `LedgerCloseMetaExtV1`, which the v1 source once misread): the first generation's 296
/// events, and the image's upstream-style `/metadata.json` (`output_types`) is taken as it is.
#[test]
fn raw_ledger_source_with_upstreams_variables_gives_the_first_generations_events() {
    let images = ["flowctl/raw-ledger-source:dev", IMAGES[1], IMAGES[2]];
    require_images(&images);
    let scratch = Scratch::new("raw-ledger-source");
    let lake = repo().join("examples/ledgers/pubnet-53312000");
    let example = example_spec(&lake);
    let source_env = "        STORAGE_TYPE: FS
        BUCKET_NAME: /data/ledgers
        LEDGERS_PER_FILE: \"1\"
        FILES_PER_PARTITION: \"64000\"
        NETWORK_PASSPHRASE: \"Test SDF Network ; September 2015\"
        START_LEDGER: \"997\"
        END_LEDGER: \"998\"
        PORT: \":50052\"
";
    assert!(
        example.contains(source_env),
        "the example's source env changed"
    );
    let upstream_env = format!(
        "        FLOWCTL_COMPONENT_ID: raw-ledger-source
        BACKEND_TYPE: ARCHIVE
        ARCHIVE_STORAGE_TYPE: FS
        ARCHIVE_BUCKET_NAME: /data
        ARCHIVE_PATH: ledgers
        LEDGERS_PER_FILE: \"1\"
        FILES_PER_PARTITION: \"64000\"
        NETWORK_PASSPHRASE: \"{PUBNET}\"
        START_LEDGER: \"53312000\"
        END_LEDGER: \"53312000\"
        GRPC_PORT: \"50052\"
"
    );
    let spec = example
        .replace(source_env, &upstream_env)
        .replace("stellar-live-source-v1", "raw-ledger-source")
        .replace(&format!("\"{TESTNET}\""), &format!("\"{PUBNET}\""));
    let pipeline = scratch.pipeline(&spec);
    let mut run = scratch.run(&pipeline, &[], &[]);
    let status = run.wait();
    assert!(status.success(), "{}", run.output());
    let (stdout, stderr) = (run.stdout(), run.stderr());
    let events: Vec<&str> = support::lines_of(&stdout, "consumer-app-v1")
        .into_iter()
        .filter(|line| line.starts_with('{'))
        .collect();
    let set = Dataset {
        name: "pubnet-53312000".to_string(),
        lake,
        passphrase: PUBNET,
        start: 53312000,
        end: 53312000,
    };
    let expected = first_generation_events(&set);
    assert_eq!(expected.len(), 296);
    assert_eq!(events, expected, "{stderr}");
    assert!(
        stderr.contains("raw-ledger-source registered with the control plane as raw-ledger-source"),
        "{stderr}"
    );
    assert!(
        stderr.contains("relay raw-ledger-source -> ttp-processor-v1: 1 event(s)"),
        "{stderr}"
    );
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn podman_runs_raw_ledger_source_with_upstreams_variables() {
    support::rerun_under_podman(
        "raw-ledger-source with upstream's variables",
        &[
            "raw_ledger_source_with_upstreams_variables_gives_the_first_generations_events",
            "--exact",
        ],
        1,
    );
}

/// One real dataset of `examples/ledgers` and the bounded range read from it.
struct Dataset {
    name: String,
    lake: PathBuf,
    passphrase: &'static str,
    start: u32,
    end: u32,
}

const TESTNET: &str = "Test SDF Network ; September 2015";
const PUBNET: &str = "Public Global Stellar Network ; September 2015";
const STANDALONE: &str = "Standalone Network ; February 2017";

/// Every real dataset: the four lakes (each version of `LedgerCloseMeta` and its extension
/// arms: protocol 20 to 25, mainnet's `LedgerCloseMetaExtV1` in 53312000), and each ledger of
/// the base64 mainnet example (protocols 2 to 19, `LedgerCloseMeta` v0) written as a lake of
/// its own (`datalake-gen --from-base64`; its ledgers are far apart, and a bounded range
/// waits at a gap).
fn real_datasets(dir: &Path) -> Vec<Dataset> {
    let ledgers = repo().join("examples/ledgers");
    let lake = |name: &str, passphrase, start, end| Dataset {
        name: name.to_string(),
        lake: ledgers.join(name),
        passphrase,
        start,
        end,
    };
    let mut sets = vec![
        lake("testnet-997-999", TESTNET, 997, 999),
        lake("pubnet-53312000", PUBNET, 53312000, 53312000),
        lake("standalone-p23-sac", STANDALONE, 84, 85),
        lake("standalone-p25-10048-10077", STANDALONE, 10048, 10077),
    ];
    let base64_lake = dir.join("pubnet-ttp-example");
    let made = std::process::Command::new(support::datalake_gen())
        .arg("--from-base64")
        .arg(ledgers.join("pubnet-ttp-example/ledgers-base64.txt"))
        .arg("--out")
        .arg(&base64_lake)
        .args(["--network-passphrase", PUBNET])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    for sequence in [6154623, 16154623, 26154623, 36154623, 46154623] {
        sets.push(Dataset {
            name: format!("pubnet-ttp-example {sequence}"),
            lake: base64_lake.clone(),
            passphrase: PUBNET,
            start: sequence,
            end: sequence,
        });
    }
    sets
}

/// The first generation's extraction of `set` (`ttp-processor events`, the code of the
/// first-generation processor, whose output the first-generation pipeline prints).
fn first_generation_events(set: &Dataset) -> Vec<String> {
    let out = std::process::Command::new(
        repo().join("target/x86_64-unknown-linux-gnu/release/ttp-processor"),
    )
    .args(["events", "--datalake"])
    .arg(&set.lake)
    .args([
        "--start",
        &set.start.to_string(),
        "--end",
        &set.end.to_string(),
    ])
    .args(["--network-passphrase", set.passphrase])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        set.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// The v1 example on every real dataset: the consumer prints event for event what the first
/// generation extracts from the same ledgers.
#[test]
fn the_v1_pipeline_gives_the_first_generations_events_on_every_real_dataset() {
    require_images(&IMAGES);
    let scratch = Scratch::new("v1-parity");
    let mut table = Vec::new();
    for set in real_datasets(&scratch.dir) {
        let spec = example_spec(&set.lake)
            .replace(
                &format!("\"{TESTNET}\""),
                &format!("\"{}\"", set.passphrase),
            )
            .replace(
                "START_LEDGER: \"997\"",
                &format!("START_LEDGER: \"{}\"", set.start),
            )
            .replace(
                "END_LEDGER: \"998\"",
                &format!("END_LEDGER: \"{}\"", set.end),
            );
        let pipeline = scratch.pipeline(&spec);
        let mut run = scratch.run(&pipeline, &[], &[]);
        let status = run.wait();
        assert!(status.success(), "{}:\n{}", set.name, run.output());
        let stdout = run.stdout();
        let events: Vec<&str> = support::lines_of(&stdout, "consumer-app-v1")
            .into_iter()
            .filter(|line| line.starts_with('{'))
            .collect();
        let expected = first_generation_events(&set);
        assert_eq!(events, expected, "{}:\n{}", set.name, run.stderr());
        assert_eq!(scratch.leftovers(), Vec::<String>::new(), "{}", set.name);
        table.push(format!(
            "{} {}-{}: {} event(s)",
            set.name,
            set.start,
            set.end,
            events.len()
        ));
    }
    // Shown with --nocapture: the parity table.
    println!("{}", table.join("\n"));
    // Not every dataset may be empty: that would compare nothing.
    assert!(
        table
            .iter()
            .filter(|row| !row.ends_with(": 0 event(s)"))
            .count()
            >= 4,
        "{table:?}"
    );
}

#[test]
fn podman_gives_the_same_events_on_every_real_dataset() {
    support::rerun_under_podman(
        "the flowctl.v1 parity on every real dataset",
        &[
            "the_v1_pipeline_gives_the_first_generations_events_on_every_real_dataset",
            "--exact",
        ],
        1,
    );
}

/// The restarted-source test again with `FLOWCTL_DOCKER_BIN=podman` (`podman kill`; the relay
/// reaches Podman's containers at their network or published addresses as under Docker).
/// The v1 source reading each real lake from an S3 server (`s3s-fs`, a component of the
/// pipeline the source lists as an input: started first, not relayed), instead of a mounted
/// folder: event for event what the first generation extracts.
#[test]
fn the_v1_pipeline_reading_s3_gives_the_first_generations_events_on_every_real_dataset() {
    require_images(&IMAGES);
    let mut probe = std::process::Command::new(support::docker_bin());
    probe.args(["image", "inspect", "--format", "{{.Id}}", S3_IMAGE]);
    let hint = "the image of the s3s-fs S3 server is missing: scripts/test.sh installs s3s-fs \
                and builds it";
    if !support::require_tool("s3", &mut probe, hint) {
        return;
    }
    let scratch = Scratch::new("v1-s3-parity");
    let mut table = Vec::new();
    for set in real_datasets(&scratch.dir) {
        let bucket = set.lake.file_name().unwrap().to_string_lossy().into_owned();
        let served = set.lake.parent().unwrap();
        let folder = format!(
            "      volumes:\n        - host_path: {}\n          container_path: /data/ledgers\n          readonly: true\n",
            set.lake.display()
        );
        let spec = example_spec(&set.lake);
        assert!(spec.contains(&folder), "the example's source mount changed");
        let spec = spec
            .replace(&folder, "      inputs: [s3-server]\n")
            .replace(
                "STORAGE_TYPE: FS\n        BUCKET_NAME: /data/ledgers",
                &format!(
                    "STORAGE_TYPE: S3\n        BUCKET_NAME: {bucket}\n        \
                     S3_ENDPOINT_URL: http://s3-server:8014\n        S3_FORCE_PATH_STYLE: \"true\""
                ),
            )
            .replace(
                "  sources:\n",
                &format!(
                    "  sources:\n    - id: s3-server\n      image: {S3_IMAGE}\n      \
                     args: [\"--host\", \"0.0.0.0\", \"--port\", \"8014\", \"/data\"]\n      \
                     volumes:\n        - {{host_path: {}, container_path: /data, readonly: true}}\n      \
                     ports:\n        - {{name: s3, containerPort: 8014}}\n",
                    served.display()
                ),
            )
            .replace(
                &format!("\"{TESTNET}\""),
                &format!("\"{}\"", set.passphrase),
            )
            .replace(
                "START_LEDGER: \"997\"",
                &format!("START_LEDGER: \"{}\"", set.start),
            )
            .replace(
                "END_LEDGER: \"998\"",
                &format!("END_LEDGER: \"{}\"", set.end),
            );
        assert!(
            spec.contains("STORAGE_TYPE: S3"),
            "the example's env changed"
        );
        let pipeline = scratch.pipeline(&spec);
        let mut run = scratch.run(&pipeline, &[], &[]);
        let status = run.wait();
        assert!(status.success(), "{}:\n{}", set.name, run.output());
        let stdout = run.stdout();
        let events: Vec<&str> = support::lines_of(&stdout, "consumer-app-v1")
            .into_iter()
            .filter(|line| line.starts_with('{'))
            .collect();
        assert_eq!(
            events,
            first_generation_events(&set),
            "{}:\n{}",
            set.name,
            run.stderr()
        );
        assert_eq!(scratch.leftovers(), Vec::<String>::new(), "{}", set.name);
        table.push(format!(
            "{} {}-{} from S3: {} event(s)",
            set.name,
            set.start,
            set.end,
            events.len()
        ));
    }
    println!("{}", table.join("\n"));
    assert!(
        table
            .iter()
            .filter(|row| !row.ends_with(": 0 event(s)"))
            .count()
            >= 4,
        "{table:?}"
    );
}

#[test]
fn podman_reads_s3_with_the_same_events_on_every_real_dataset() {
    support::rerun_under_podman(
        "the flowctl.v1 parity from S3 on every real dataset",
        &[
            "the_v1_pipeline_reading_s3_gives_the_first_generations_events_on_every_real_dataset",
            "--exact",
        ],
        1,
    );
}

#[test]
fn podman_resumes_a_killed_v1_source() {
    support::rerun_under_podman(
        "the restarted flowctl.v1 source",
        &[
            "a_killed_v1_source_is_restarted_and_its_stream_resumes_exactly",
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

/// A relayed source killed mid-stream (`docker kill`) with `restart: on-failure`: flowctl
/// restarts its container, the relay dials the new one and resumes the stream at the last
/// forwarded ledger, and the consumer prints exactly the events of an uninterrupted stream
/// (the generator's own list), each once. The source is held to 2% of a CPU
/// (`resources.limits.cpu`) so that the kill lands mid-stream; the test waits until the
/// status table shows ledgers relayed before killing it.
#[test]
fn a_killed_v1_source_is_restarted_and_its_stream_resumes_exactly() {
    require_images(&IMAGES);
    let generator = support::datalake_gen();
    let scratch = Scratch::new("v1-restart");
    let lake = scratch.dir.join("lake");
    let expected_file = scratch.dir.join("expected.jsonl");
    const FIRST: u32 = 1024;
    const LEDGERS: u32 = 160;
    let generated = std::process::Command::new(&generator)
        .args([
            "--start",
            &FIRST.to_string(),
            "--ledgers",
            &LEDGERS.to_string(),
        ])
        .args(["--profile", "small", "--ledgers-per-file", "1"])
        .args(["--files-per-partition", "64000", "--out"])
        .arg(&lake)
        .arg("--expected")
        .arg(&expected_file)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let last = FIRST + LEDGERS - 1;
    let mut spec = example_spec(&lake);
    for (from, to) in [
        (
            "\"Test SDF Network ; September 2015\"",
            "\"Standalone Network ; February 2017\"",
        ),
        ("START_LEDGER: \"997\"", &format!("START_LEDGER: \"{FIRST}\"")),
        ("END_LEDGER: \"998\"", &format!("END_LEDGER: \"{last}\"")),
        (
            "      register: true\n      grpc:\n        port: 50052\n",
            "      register: true\n      restart: on-failure\n      resources: {limits: {cpu: 20m}}\n      grpc:\n        port: 50052\n",
        ),
    ] {
        assert!(spec.contains(from), "the example no longer has {from:?}");
        spec = spec.replace(from, to);
    }
    let pipeline = scratch.pipeline(&spec);
    let mut run = scratch.run(&pipeline, &["--status-interval", "200ms"], &[]);

    // Mid-stream: some ledgers relayed, not all.
    let edge = "relay stellar-live-source-v1 -> ttp-processor-v1: ";
    loop {
        let line = run.wait_for(edge);
        let count: u32 = line
            .split(edge)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}"));
        assert!(
            count < LEDGERS,
            "the stream ended before the source could be killed: {line}"
        );
        if count >= 2 {
            break;
        }
    }
    support::docker(&["kill", &scratch.container("stellar-live-source-v1")]);
    let status = run.wait();
    let (stdout, stderr) = (run.stdout(), run.stderr());
    assert!(status.success(), "{}", run.output());

    assert!(
        stderr.contains("component `stellar-live-source-v1` exited with code 137"),
        "{stderr}"
    );
    let resumed = stderr
        .lines()
        .find(|line| line.contains("relay: stellar-live-source-v1 restarted (attempt 1)"))
        .unwrap_or_else(|| panic!("the relay did not resume the source:\n{stderr}"));
    assert!(
        resumed.contains("resuming its stream at ledger"),
        "{resumed}"
    );
    eprintln!("{resumed}");
    let expected = std::fs::read_to_string(&expected_file).unwrap();
    // Every ledger once into the processor, every event once into the consumer.
    assert!(
        stderr.contains(&format!("{edge}{LEDGERS} event(s)")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "relay: consumer-app-v1 answered: {} event(s) consumed, 0 failed",
            expected.lines().count()
        )),
        "{stderr}"
    );
    // And what it printed is exactly the generator's list, in order.
    let events: Vec<&str> = support::lines_of(&stdout, "consumer-app-v1")
        .into_iter()
        .filter(|line| line.starts_with('{'))
        .collect();
    assert!(
        events == expected.lines().collect::<Vec<_>>(),
        "the consumer printed {} events, the generator computed {}:\n{stderr}",
        events.len(),
        expected.lines().count()
    );
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

/// Upstream's current generation as its current files use it: images whose /metadata.json
/// says what they are (`input_types` / `output_types`), and not one `grpc:`, `health_*` or
/// `ports:` field in the file. Our `raw-ledger-source`, `stellar-ledger-processor` and
/// `jsonl-sink` images are built that way: flowctl takes them as flowctl.v1 components on the
/// ports their metadata gives and relays them.
const BATCH_IMAGES: [&str; 3] = [
    "flowctl/raw-ledger-source:dev",
    "flowctl/stellar-ledger-processor:dev",
    "flowctl/jsonl-sink:dev",
];

#[test]
fn upstreams_current_images_are_relayed_without_any_grpc_field() {
    require_images(&BATCH_IMAGES);
    let scratch = Scratch::new("v1-batches");
    let out = support::TempDir::new("v1-batches-out-");
    // The images run as an unprivileged user: the folder it writes into must let it.
    fs::set_permissions(&out.0, fs::Permissions::from_mode(0o777)).unwrap();
    let spec = format!(
        r#"  sources:
    - id: raw-ledger-source
      image: flowctl/raw-ledger-source:dev
      env:
        BACKEND_TYPE: ARCHIVE
        ARCHIVE_STORAGE_TYPE: FS
        ARCHIVE_BUCKET_NAME: /data/ledgers
        LEDGERS_PER_FILE: "1"
        FILES_PER_PARTITION: "64000"
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
        START_LEDGER: "997"
        END_LEDGER: "998"
      volumes:
        - {{host_path: {lake}, container_path: /data/ledgers, readonly: true}}
  processors:
    - id: stellar-ledger-processor
      image: flowctl/stellar-ledger-processor:dev
      inputs: [raw-ledger-source]
      env:
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
  sinks:
    - id: jsonl-sink
      image: flowctl/jsonl-sink:dev
      inputs: [stellar-ledger-processor]
      env:
        JSONL_PATH: /out/ledger_batches.jsonl
      volumes:
        - {{host_path: {out}, container_path: /out, readonly: false}}
"#,
        lake = real_lake().display(),
        out = out.0.display()
    );
    let pipeline = scratch.pipeline(&spec);
    let mut run = scratch.run(&pipeline, &[], &[]);
    let status = run.wait();
    let stderr = run.stderr();
    assert!(status.success(), "{}", run.output());
    assert!(
        stderr.contains("relaying between 3 flowctl.v1 component(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("relay raw-ledger-source -> stellar-ledger-processor: 2 event(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("relay: jsonl-sink answered: 2 event(s) consumed, 0 failed"),
        "{stderr}"
    );
    let text = fs::read_to_string(out.0.join("ledger_batches.jsonl")).unwrap();
    let batches: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let shape: Vec<(u64, usize, usize)> = batches
        .iter()
        .map(|b| {
            (
                b["ledgerSequence"].as_u64().unwrap(),
                b["transactions"].as_array().unwrap().len(),
                b["tokenTransfers"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(shape, [(997, 7, 9), (998, 7, 9)], "{text}");
    assert_eq!(scratch.leftovers(), Vec::<String>::new());
}

#[test]
fn podman_relays_upstreams_current_images_without_any_grpc_field() {
    support::rerun_under_podman(
        "upstream's current images without grpc fields",
        &[
            "upstreams_current_images_are_relayed_without_any_grpc_field",
            "--exact",
        ],
        1,
    );
}
