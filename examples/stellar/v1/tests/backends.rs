//! The flowctl.v1 source on every real dataset through every backend, under both of its names:
//! `stellar-live-source-v1` with this project's variables (`STORAGE_TYPE`, `BUCKET_NAME`) and
//! `raw-ledger-source` with upstream's (`BACKEND_TYPE`, `ARCHIVE_STORAGE_TYPE`,
//! `ARCHIVE_BUCKET_NAME`, `ARCHIVE_PATH`, `GRPC_PORT`, `FLOWCTL_COMPONENT_ID`). For each dataset
//! the three binaries run as processes on 127.0.0.1, chained by the test relay, and the
//! consumer prints event for event what the first generation's extraction
//! (`stellar_ttp::offline`, the first-generation processor's code) gives for the same ledgers.
//!
//! The servers are real and started here: a folder, `s3s-fs` (S3), `fake-gcs-server` (GCS) and
//! the Stellar RPC `getLedgers` server of the components' tests. A missing server fails the test
//! with its install hint unless `FLOWCTL_TEST_SKIP` names it (`s3`, `gcs`).

mod support;

/// The components' test support: its real servers and the offline extraction.
#[path = "../../components/tests/support/mod.rs"]
mod components_support;

use std::path::{Path, PathBuf};

use components_support::rpc_server::RpcServer;
use components_support::servers::{copy_tree, skip, GcsEmulator, S3Server, TempDir};
use stellar_ttp::datalake::Layout;
use support::processes::{component_env, loopback, Process};
use support::{connect, params, real_lake, relay, RecordingControlPlane};

const PUBNET: &str = "Public Global Stellar Network ; September 2015";
/// The bucket every lake of the object storage tests sits in, one prefix each.
const BUCKET: &str = "lakes";

/// One real dataset: a lake folder and a range of it without gaps.
struct Dataset {
    name: String,
    /// The lake's folder name (its prefix in the bucket).
    lake: String,
    /// The folder holding `lake`.
    base: PathBuf,
    start: u32,
    end: u32,
}

impl Dataset {
    fn dir(&self) -> PathBuf {
        self.base.join(&self.lake)
    }

    fn passphrase(&self) -> String {
        stellar_ttp::datalake::Manifest::read(&self.dir())
            .unwrap()
            .unwrap()
            .network_passphrase
            .unwrap()
    }
}

/// Every real dataset: the four lakes under `examples/ledgers` (`LedgerCloseMeta` v1 with and
/// without mainnet's extension, v2) and each ledger of the base64 mainnet example (v0, protocols
/// 2 to 19), written as a lake of its own in `scratch` (its ledgers are far apart: each is a
/// one-ledger range).
fn real_datasets(scratch: &Path) -> Vec<Dataset> {
    let ledgers = real_lake("");
    let mut sets: Vec<Dataset> = components_support::REAL_FOLDERS
        .into_iter()
        .map(|(lake, start, end)| Dataset {
            name: lake.to_string(),
            lake: lake.to_string(),
            base: ledgers.clone(),
            start,
            end,
        })
        .collect();
    let lake = "pubnet-ttp-example";
    let sequences = stellar_datagen::lake_from_base64(
        &ledgers.join(lake).join("ledgers-base64.txt"),
        &scratch.join(lake),
        PUBNET,
        Layout {
            ledgers_per_file: 1,
            files_per_partition: 64000,
        },
    )
    .unwrap();
    assert_eq!(sequences.len(), 5, "{sequences:?}");
    for sequence in sequences {
        sets.push(Dataset {
            name: format!("{lake} {sequence}"),
            lake: lake.to_string(),
            base: scratch.to_path_buf(),
            start: sequence,
            end: sequence,
        });
    }
    sets
}

/// The first generation's events of `set`, one JSON line each.
fn first_generation_events(set: &Dataset) -> String {
    components_support::offline_events(&set.dir(), set.start, set.end)
}

/// Which binary, with which variables.
#[derive(Clone, Copy, PartialEq)]
enum Name {
    /// `stellar-live-source-v1`, `STORAGE_TYPE`/`BUCKET_NAME`, `PORT`, `COMPONENT_ID`.
    Ours,
    /// `raw-ledger-source`, `BACKEND_TYPE`/`ARCHIVE_*`, `GRPC_PORT`, `FLOWCTL_COMPONENT_ID`.
    Upstream,
}

/// Runs the v1 pipeline on `set` with the source `name` configured by `backend` (its
/// variables, without the port and id ones) and checks the consumer's events and the source's
/// registration. Returns the number of events.
async fn run_pipeline(set: &Dataset, name: Name, backend: &[(&'static str, String)]) -> usize {
    let (control_plane, control_plane_addr) = RecordingControlPlane::start(0).await;
    // Every process binds port 0 and logs where it listens: no port can be taken in between.
    let any_port = loopback(0);
    let (binary, source_id, mut env) = match name {
        Name::Ours => (
            env!("CARGO_BIN_EXE_stellar-live-source-v1"),
            "source-v1",
            component_env("source-v1", any_port, control_plane_addr),
        ),
        // As upstream's pipeline files configure it (plus ENABLE_FLOWCTL, which flowctl adds).
        Name::Upstream => (
            env!("CARGO_BIN_EXE_raw-ledger-source"),
            "raw-ledger-source",
            vec![
                ("FLOWCTL_COMPONENT_ID", "raw-ledger-source".to_string()),
                ("GRPC_PORT", any_port.to_string()),
                ("HEALTH_PORT", "0".to_string()),
                ("FLOWCTL_ENDPOINT", control_plane_addr.to_string()),
                ("ENABLE_FLOWCTL", "true".to_string()),
                ("FLOWCTL_HEARTBEAT_INTERVAL", "100ms".to_string()),
            ],
        ),
    };
    env.extend(backend.iter().cloned());
    let mut source = Process::start("source", binary, &env);
    let mut env = component_env("ttp", any_port, control_plane_addr);
    env.push(("NETWORK_PASSPHRASE", set.passphrase()));
    let mut processor = Process::start(
        "ttp-processor-v1",
        env!("CARGO_BIN_EXE_ttp-processor-v1"),
        &env,
    );
    let mut consumer = Process::start(
        "consumer-app-v1",
        env!("CARGO_BIN_EXE_consumer-app-v1"),
        &component_env("sink", any_port, control_plane_addr),
    );

    let (start, end) = (set.start.to_string(), set.end.to_string());
    let answer = relay(
        connect(source.grpc_address()).await,
        connect(processor.grpc_address()).await,
        connect(consumer.grpc_address()).await,
        params(&[("start_ledger", &start), ("end_ledger", &end)]),
    )
    .await;
    let (stdout, stderr) = consumer.stop();
    drop(processor);
    let (_, source_stderr) = source.stop();
    let answer = answer.unwrap_or_else(|e| {
        panic!(
            "{}: relay failed: {e:?}\nsource stderr:\n{source_stderr}",
            set.name
        )
    });
    let expected = first_generation_events(set);
    assert_eq!(
        stdout, expected,
        "{}: consumer stderr:\n{stderr}\nsource stderr:\n{source_stderr}",
        set.name
    );
    assert_eq!(answer.events_consumed as usize, expected.lines().count());

    // The source registered under its id, with its port variable's value as its endpoint (as
    // upstream registers it) and its name.
    let registrations = control_plane.registered(3).await;
    let request = registrations
        .iter()
        .find(|request| request.component_id == source_id)
        .unwrap_or_else(|| panic!("{source_id} registered: {registrations:?}"));
    let component = request.component.as_ref().unwrap();
    assert_eq!(component.endpoint, any_port.to_string());
    let binary_name = match name {
        Name::Ours => "stellar-live-source-v1",
        Name::Upstream => "raw-ledger-source",
    };
    assert_eq!(component.name, binary_name);
    expected.lines().count()
}

/// Runs every dataset (the `index`th of `sets`) under both names with `backend(index, set,
/// name)`'s variables and prints the table (shown with `--nocapture`).
async fn every_dataset_under_both_names(
    label: &str,
    sets: &[Dataset],
    backend: impl Fn(usize, &Dataset, Name) -> Vec<(&'static str, String)>,
) {
    let mut table = Vec::new();
    for (index, set) in sets.iter().enumerate() {
        for name in [Name::Ours, Name::Upstream] {
            let events = run_pipeline(set, name, &backend(index, set, name)).await;
            table.push((set.name.clone(), name == Name::Upstream, events));
        }
    }
    for (set, upstream, events) in &table {
        let source = if *upstream {
            "raw-ledger-source"
        } else {
            "stellar-live-source-v1"
        };
        println!("{label:<6} {source:<22} {set:<30} {events} event(s) exact");
    }
    // Not every dataset may be empty: that would compare nothing.
    let nonempty = table.iter().filter(|(_, _, events)| *events > 0).count();
    assert!(nonempty >= 8, "{label}: too few events to compare");
}

/// A bucket folder holding every dataset's lake as a prefix (the root of the S3 server and
/// the GCS emulator).
fn bucket_root(scratch: &TempDir, sets: &[Dataset]) -> PathBuf {
    let root = scratch.0.join("buckets");
    for set in sets {
        let target = root.join(BUCKET).join(&set.lake);
        if !target.exists() {
            copy_tree(&set.dir(), &target);
        }
    }
    root
}

fn archive_env(storage: &str, set: &Dataset, name: Name) -> Vec<(&'static str, String)> {
    match name {
        // Galexie's `bucket/path` name in one variable.
        Name::Ours => vec![
            ("STORAGE_TYPE", storage.to_string()),
            ("BUCKET_NAME", format!("{BUCKET}/{}", set.lake)),
        ],
        Name::Upstream => vec![
            ("BACKEND_TYPE", "ARCHIVE".to_string()),
            ("ARCHIVE_STORAGE_TYPE", storage.to_string()),
            ("ARCHIVE_BUCKET_NAME", BUCKET.to_string()),
            ("ARCHIVE_PATH", set.lake.clone()),
            ("LEDGERS_PER_FILE", "1".to_string()),
            ("FILES_PER_PARTITION", "64000".to_string()),
            ("NETWORK_PASSPHRASE", set.passphrase()),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_every_real_dataset_gives_the_first_generations_events() {
    let scratch = TempDir::new("v1-folder");
    let sets = real_datasets(&scratch.0);
    every_dataset_under_both_names("folder", &sets, |_, set, name| match name {
        Name::Ours => vec![
            ("STORAGE_TYPE", "FS".to_string()),
            ("BUCKET_NAME", set.dir().display().to_string()),
        ],
        Name::Upstream => vec![
            ("BACKEND_TYPE", "ARCHIVE".to_string()),
            ("ARCHIVE_STORAGE_TYPE", "FS".to_string()),
            ("ARCHIVE_BUCKET_NAME", set.base.display().to_string()),
            ("ARCHIVE_PATH", set.lake.clone()),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_every_real_dataset_gives_the_first_generations_events() {
    if skip("s3") {
        return;
    }
    let scratch = TempDir::new("v1-s3");
    let sets = real_datasets(&scratch.0);
    let server = S3Server::start(&bucket_root(&scratch, &sets));
    let endpoint = server.endpoint();
    every_dataset_under_both_names("S3", &sets, |_, set, name| {
        let mut env = archive_env("S3", set, name);
        env.push(("S3_ENDPOINT_URL", endpoint.clone()));
        env.push(("S3_FORCE_PATH_STYLE", "true".to_string()));
        env.push(("AWS_REGION", "us-east-2".to_string()));
        env
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_every_real_dataset_gives_the_first_generations_events() {
    if skip("gcs") {
        return;
    }
    let scratch = TempDir::new("v1-gcs");
    let sets = real_datasets(&scratch.0);
    let emulator = GcsEmulator::start(&bucket_root(&scratch, &sets));
    let host = emulator.host();
    every_dataset_under_both_names("GCS", &sets, |_, set, name| {
        let mut env = archive_env("GCS", set, name);
        env.push(("STORAGE_EMULATOR_HOST", host.clone()));
        env
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_every_real_dataset_gives_the_first_generations_events() {
    let scratch = TempDir::new("v1-rpc");
    let sets = real_datasets(&scratch.0);
    let mut servers = Vec::new();
    for set in &sets {
        servers.push(RpcServer::start(&set.dir(), set.start, set.end).await);
    }
    // Both names read the same variables for RPC; each dataset has its own server.
    every_dataset_under_both_names("RPC", &sets, |index, set, _| {
        vec![
            ("BACKEND_TYPE", "RPC".to_string()),
            ("RPC_ENDPOINT", servers[index].endpoint()),
            ("NETWORK_PASSPHRASE", set.passphrase()),
            ("RPC_PAGE_LIMIT", "4".to_string()),
        ]
    })
    .await;
    for (server, set) in servers.iter().zip(&sets) {
        assert!(
            server.get_ledgers_calls() > 0,
            "{}: RPC never asked",
            set.name
        );
    }
}
