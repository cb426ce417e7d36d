//! Upstream's `local-jsonl.yaml` and `local-postgres.yaml` (tests/pipelines/upstream/process/)
//! run by the real flowctl with our `raw-ledger-source`, `stellar-ledger-processor`,
//! `jsonl-sink` and `postgres-sink` binaries in `./bin`, against a real PostgreSQL
//! (tests/support/postgres.rs). The files' env is changed only where it points at the internet
//! (the public S3 bucket becomes the testnet folder lake, the range 997-998, the DSN the test's
//! server).
//!
//! The expected rows come from outside the extraction: per ledger, the transactions are the
//! ones the upstream ttp-processor charged a fee for and the token transfers its events
//! (`expected-events-997-998.jsonl`); the operation counts are the envelopes' (checked against the
//! XDR in examples/stellar/v1/tests/batches.rs).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use support::postgres::Postgres;
use support::process_lab::{assert_gone, started_processes, Lab};
use support::{kill9, repo};

const BINARIES: [&str; 4] = [
    "raw-ledger-source",
    "stellar-ledger-processor",
    "jsonl-sink",
    "postgres-sink",
];

/// Upstream's files pin their ports: the tests running one of them take turns.
static PINNED_PORTS: Mutex<()> = Mutex::new(());

fn pinned_ports() -> MutexGuard<'static, ()> {
    PINNED_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// (transactions, operations, token transfers) per ledger of testnet 997-998.
const COUNTS: [(u32, (usize, usize, usize)); 2] = [(997, (7, 10, 9)), (998, (7, 14, 9))];

/// Upstream's file `name` with the source pointed at the testnet lake for `start..=end` (`end`
/// "0": stream on), `env` set on the sink, written into the lab.
fn upstream_file(lab: &Lab, name: &str, end: &str, sink_env: &[(&str, &str)]) -> PathBuf {
    let path = repo().join("tests/pipelines/upstream/process").join(name);
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lake = repo().join("examples/ledgers/testnet-997-999");
    let source = &mut doc["spec"]["sources"][0]["env"];
    let source = source.as_mapping_mut().expect("the source's env");
    for (key, value) in [
        ("ARCHIVE_STORAGE_TYPE", "FS"),
        ("ARCHIVE_BUCKET_NAME", &lake.display().to_string()),
        ("START_LEDGER", "997"),
        ("END_LEDGER", end),
    ] {
        source.insert(key.into(), value.into());
    }
    source.remove("ARCHIVE_PATH");
    let sink = doc["spec"]["sinks"][0]["env"]
        .as_mapping_mut()
        .expect("the sink's env");
    for (key, value) in sink_env {
        sink.insert((*key).into(), (*value).into());
    }
    lab.file(name, &serde_yaml::to_string(&doc).unwrap())
}

/// Per ledger: the transaction hashes upstream's ttp-processor charged fees for and its number of
/// token transfer events.
fn upstream_facts() -> BTreeMap<u32, (BTreeSet<String>, usize)> {
    let mut facts: BTreeMap<u32, (BTreeSet<String>, usize)> = BTreeMap::new();
    for line in support::testnet_997_998_events() {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ledger = event["meta"]["ledger_sequence"].as_u64().unwrap() as u32;
        let entry = facts.entry(ledger).or_default();
        entry.1 += 1;
        if event.get("fee").is_some() {
            entry
                .0
                .insert(event["meta"]["tx_hash"].as_str().unwrap().to_string());
        }
    }
    facts
}

#[test]
fn upstreams_local_jsonl_file_writes_one_exact_batch_per_ledger() {
    let _turn = pinned_ports();
    let lab = Lab::new(&BINARIES, "ledger-jsonl-");
    let file = upstream_file(&lab, "local-jsonl.yaml", "998", &[]);
    let (status, stdout, stderr) = lab.run(&["run", &file.display().to_string()]);
    let output = format!("{stderr}\n{stdout}");
    assert!(status.success(), "{output}");
    assert!(
        stderr.contains("pipeline local-stellar-ledger-jsonl is complete"),
        "{stderr}"
    );
    let started = started_processes(&stderr);
    assert_eq!(started.len(), 3, "{stderr}");
    assert_gone(&started, Duration::ZERO, &output);
    assert!(lab.records().is_empty(), "{:?}", lab.records());

    // JSONL_PATH "./ledger_batches.jsonl": relative to where flowctl ran, as upstream's.
    let text = fs::read_to_string(lab.path().join("ledger_batches.jsonl")).unwrap();
    let batches: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(batches.len(), 2, "{text}");
    let facts = upstream_facts();
    for (batch, (ledger, (transactions, operations, transfers))) in batches.iter().zip(COUNTS) {
        assert_eq!(batch["ledgerSequence"], ledger);
        assert_eq!(
            batch["networkPassphrase"],
            "Test SDF Network ; September 2015"
        );
        assert_eq!(batch["schemaVersion"], "v1");
        // protobuf JSON: int64 as a string, every field present.
        assert!(batch["closedAtUnix"].is_string(), "{batch}");
        assert_eq!(batch["bronzeRows"], serde_json::json!([]));
        let rows = |key: &str| batch[key].as_array().unwrap().len();
        assert_eq!(
            (
                rows("transactions"),
                rows("operations"),
                rows("tokenTransfers")
            ),
            (transactions, operations, transfers),
            "ledger {ledger}"
        );
        let hashes: BTreeSet<String> = batch["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tx| tx["transactionHash"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(hashes, facts[&ledger].0, "ledger {ledger}");
        assert_eq!(rows("tokenTransfers"), facts[&ledger].1, "ledger {ledger}");
        assert_eq!(batch["ledgers"][0]["transactionCount"], transactions);
    }
}

/// Every row of the three tables, in id order, as text.
fn table_rows(postgres: &Postgres) -> String {
    [
        "stellar_ledgers",
        "stellar_transactions",
        "stellar_operations",
    ]
    .iter()
    .map(|table| postgres.query(&format!("select t::text from {table} t order by id")))
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn upstreams_local_postgres_file_writes_the_rows_and_a_rerun_leaves_them_identical() {
    let Some(postgres) = Postgres::start("ledger-pg-") else {
        return;
    };
    let _turn = pinned_ports();
    let lab = Lab::new(&BINARIES, "ledger-pg-");
    let dsn = postgres.dsn();
    let file = upstream_file(
        &lab,
        "local-postgres.yaml",
        "998",
        &[("POSTGRES_DSN", &dsn)],
    );
    let mut first = String::new();
    for run in 1..=2 {
        let (status, stdout, stderr) = lab.run(&["run", &file.display().to_string()]);
        let output = format!("{stderr}\n{stdout}");
        assert!(status.success(), "run {run}: {output}");
        // The DSN holds the password: never shown, by flowctl or the sink.
        assert!(!output.contains(&postgres.password), "run {run}: {output}");
        let started = started_processes(&stderr);
        assert_eq!(started.len(), 3, "{stderr}");
        assert_gone(&started, Duration::ZERO, &output);
        assert!(lab.records().is_empty(), "{:?}", lab.records());

        let counts = postgres.query(
            "select (select count(*) from stellar_ledgers), \
             (select count(*) from stellar_transactions), \
             (select count(*) from stellar_operations)",
        );
        assert_eq!(counts, "2|14|24", "run {run}");
        let per_ledger = postgres.query(
            "select l.ledger_sequence, l.transaction_count, count(o.id) from stellar_ledgers l \
             left join stellar_operations o on o.ledger_sequence = l.ledger_sequence \
             group by l.ledger_sequence, l.transaction_count order by 1",
        );
        assert_eq!(per_ledger, "997|7|10\n998|7|14", "run {run}");
        let facts = upstream_facts();
        for ledger in [997u32, 998] {
            let hashes: BTreeSet<String> = postgres
                .query(&format!(
                    "select transaction_hash from stellar_transactions where ledger_sequence = \
                     {ledger}"
                ))
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(hashes, facts[&ledger].0, "ledger {ledger}");
        }
        let rows = table_rows(&postgres);
        if run == 1 {
            first = rows;
        } else {
            assert_eq!(rows, first, "the second run changed rows");
        }
    }
}

#[test]
fn a_sink_that_cannot_reach_its_database_fails_the_run_naming_it_without_the_password() {
    let Some(postgres) = Postgres::start("ledger-pg-bad-") else {
        return;
    };
    let _turn = pinned_ports();
    let lab = Lab::new(&BINARIES, "ledger-pg-bad-");
    let wrong = format!(
        "postgres://postgres:not-{}@127.0.0.1:{}/postgres?sslmode=disable",
        postgres.password, postgres.port
    );
    let file = upstream_file(
        &lab,
        "local-postgres.yaml",
        "998",
        &[("POSTGRES_DSN", &wrong)],
    );
    let (status, stdout, stderr) = lab.run(&["run", &file.display().to_string()]);
    let output = format!("{stderr}\n{stdout}");
    assert!(!status.success(), "{output}");
    assert!(stderr.contains("postgres-sink"), "{stderr}");
    assert!(
        output.contains("POSTGRES_DSN: cannot connect to postgres@127.0.0.1"),
        "{output}"
    );
    assert!(!output.contains(&postgres.password), "{output}");
    let started = started_processes(&stderr);
    assert_gone(&started, Duration::from_secs(5), &output);
    assert!(lab.records().is_empty(), "{:?}", lab.records());
    assert_eq!(postgres.query("select count(*) from pg_stat_activity where datname = 'postgres' and pid <> pg_backend_pid()"), "0");
}

#[test]
fn ctrl_c_and_kill_9_of_a_streaming_postgres_pipeline_leave_no_process() {
    let Some(postgres) = Postgres::start("ledger-pg-stop-") else {
        return;
    };
    let _turn = pinned_ports();
    let dsn = postgres.dsn();
    for how in ["SIGINT", "SIGTERM", "kill-9"] {
        let lab = Lab::new(&BINARIES, "ledger-pg-stop-");
        // END_LEDGER 0: the source waits for ledger 1000 after the lake's last, until stopped.
        let file = upstream_file(&lab, "local-postgres.yaml", "0", &[("POSTGRES_DSN", &dsn)]);
        let mut flowctl = lab.spawn(&["run", &file.display().to_string()]);
        flowctl.wait_for("relaying between 3 flowctl.v1 component(s)");
        // Rows arrive while the pipeline runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while postgres.query("select count(*) from stellar_ledgers") != "3" {
            assert!(
                std::time::Instant::now() < deadline,
                "{how}: the lake's 3 ledgers never arrived: {}",
                flowctl.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        match how {
            "kill-9" => {
                let reaper = flowctl.reaper_pid();
                kill9(flowctl.pid);
                let _ = flowctl.wait();
                assert!(reaper.is_some(), "{}", flowctl.output());
            }
            signal => {
                flowctl.signal(signal.trim_start_matches("SIG"));
                let status = flowctl.wait();
                assert_eq!(status.code(), Some(130), "{how}: {}", flowctl.output());
            }
        }
        let output = flowctl.output();
        let started = started_processes(&flowctl.stderr());
        assert_eq!(started.len(), 3, "{how}: {output}");
        assert_gone(&started, Duration::from_secs(15), &output);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !lab.records().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{how}: {:?}",
                lab.records()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!output.contains(&postgres.password), "{how}: {output}");
    }
    // Whole ledgers only: every ledger row has all its transactions.
    assert_eq!(
        postgres.query(
            "select count(*) from stellar_ledgers l where l.transaction_count <> \
             (select count(*) from stellar_transactions t where t.ledger_sequence = l.ledger_sequence)"
        ),
        "0"
    );
}
