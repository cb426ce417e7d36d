//! The source's remote backends against real servers on 127.0.0.1, started by these tests:
//! S3 (`s3s-fs`), GCS (`fake-gcs-server`) and a Stellar RPC `getLedgers` server
//! (support/rpc_server.rs). For every real lake folder the events through each backend equal
//! the offline extraction; the faults a remote store has (unreachable, restart mid-stream, missing and
//! corrupt objects, access denied, retention) end or resume streams as documented, and no
//! secret appears in an error. A missing server fails the test with an install hint unless
//! `FLOWCTL_TEST_SKIP` names it (`s3`, `gcs`).

mod support;

use std::fs;
use std::time::Duration;

use flowctl_proto::raw_ledger_service::raw_ledger_service_client::RawLedgerServiceClient;
use flowctl_proto::raw_ledger_service::{RawLedger, StreamLedgersRequest};
use stellar_components::source::{self, SourceConfig};
use stellar_ttp::datalake::{DataLake, Layout};
use stellar_xdr::{Limits, WriteXdr};
use support::rpc_server::RpcServer;
use support::servers::{copy_tree, skip, GcsEmulator, S3Server, TempDir};
use support::{consume, offline_events, real_lake, start_pipeline_with, REAL_FOLDERS};
use tonic::Streaming;

/// The processor's and consumer's events through the backend `env` configures, for each real
/// folder (`env_for` gives the variables for one folder), equal the offline extraction.
async fn every_real_folder_matches(env_for: impl Fn(&str) -> Vec<(String, String)>) {
    for (folder, start, end) in REAL_FOLDERS {
        let env = env_for(folder);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let pipeline = start_pipeline_with(&pairs).await;
        let (out, tally) = consume(&pipeline, start, end).await;
        assert!(tally.events > 0, "{folder}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            offline_events(&real_lake(folder), start, end),
            "{folder}"
        );
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_every_real_folder_matches_the_offline_extraction() {
    if skip("s3") {
        return;
    }
    // Each lake folder is a bucket of the server's root.
    let server = S3Server::start(&real_lake(""));
    let endpoint = server.endpoint();
    every_real_folder_matches(|folder| {
        owned(&[
            ("STORAGE_TYPE", "S3"),
            ("BUCKET_NAME", folder),
            ("S3_ENDPOINT_URL", &endpoint),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("PREFETCH_OBJECTS", "4"),
        ])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_every_real_folder_matches_the_offline_extraction() {
    if skip("gcs") {
        return;
    }
    // One bucket, one lake per ARCHIVE_PATH.
    let data = TempDir::new("gcs");
    for (folder, _, _) in REAL_FOLDERS {
        copy_tree(
            &real_lake(folder),
            &data.0.join("stellar-lakes").join(folder),
        );
    }
    let emulator = GcsEmulator::start(&data.0);
    let host = emulator.host();
    every_real_folder_matches(|folder| {
        owned(&[
            ("BACKEND_TYPE", "ARCHIVE"),
            ("ARCHIVE_STORAGE_TYPE", "GCS"),
            ("ARCHIVE_BUCKET_NAME", "stellar-lakes"),
            ("ARCHIVE_PATH", folder),
            ("STORAGE_EMULATOR_HOST", &host),
        ])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_every_real_folder_matches_the_offline_extraction() {
    for (folder, start, end) in REAL_FOLDERS {
        let server = RpcServer::start(&real_lake(folder), start, end).await;
        let passphrase = stellar_ttp::datalake::Manifest::read(&real_lake(folder))
            .unwrap()
            .unwrap()
            .network_passphrase
            .unwrap();
        let env = [
            ("BACKEND_TYPE", "RPC"),
            ("RPC_ENDPOINT", &server.endpoint()),
            ("NETWORK_PASSPHRASE", &passphrase),
            ("RPC_PAGE_LIMIT", "4"),
            ("PREFETCH_OBJECTS", "3"),
        ];
        let pipeline = start_pipeline_with(&env).await;
        let (out, tally) = consume(&pipeline, start, end).await;
        assert!(tally.events > 0, "{folder}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            offline_events(&real_lake(folder), start, end),
            "{folder}"
        );
        assert!(server.get_ledgers_calls() > 0);
    }
}

async fn raw_stream(source: std::net::SocketAddr, start: u32) -> Streaming<RawLedger> {
    let mut client = RawLedgerServiceClient::connect(format!("http://{source}"))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX);
    client
        .stream_raw_ledgers(StreamLedgersRequest {
            start_ledger: start,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next_ledger(stream: &mut Streaming<RawLedger>) -> RawLedger {
    tokio::time::timeout(Duration::from_secs(120), stream.message())
        .await
        .expect("no ledger within two minutes")
        .expect("stream failed")
        .expect("stream ended")
}

async fn stream_error(stream: &mut Streaming<RawLedger>) -> tonic::Status {
    match tokio::time::timeout(Duration::from_secs(120), stream.message()).await {
        Ok(Err(status)) => status,
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_live_mode_retention_and_auth() {
    let lake = real_lake("testnet-997-999");
    let server = RpcServer::start(&lake, 997, 999).await;
    server.set_window(997, 997);
    server.require_header("X-Api-Key", "s3cr3t-rpc-key");
    let endpoint = server.endpoint();
    let base = [
        ("BACKEND_TYPE", "RPC"),
        ("RPC_ENDPOINT", endpoint.as_str()),
        ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
        ("LEDGER_POLL_INTERVAL", "20ms"),
    ];
    // Without the header: refused at start, and the error says so without any secret.
    let config = SourceConfig::from_lookup(lookup(&base)).unwrap();
    let err = format!("{:#}", source::open(&config).await.unwrap_err());
    assert!(
        err.contains("access denied") && err.contains(&endpoint),
        "{err}"
    );

    let mut with_auth = base.to_vec();
    with_auth.push(("RPC_AUTH_HEADER", "X-Api-Key: s3cr3t-rpc-key"));
    let pipeline = start_pipeline_with(&with_auth).await;
    let mut stream = raw_stream(pipeline.source, 997).await;
    assert_eq!(next_ledger(&mut stream).await.sequence, 997);
    // Past latestLedger the source waits (live mode) ...
    let waited = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(
        waited.is_err(),
        "the source sent past the server's latest ledger: {waited:?}"
    );
    // ... and streams the ledgers once the server has them.
    server.set_window(997, 999);
    assert_eq!(next_ledger(&mut stream).await.sequence, 998);
    assert_eq!(next_ledger(&mut stream).await.sequence, 999);

    // A start before the server's retention is an error naming both numbers.
    server.set_window(998, 999);
    let mut early = raw_stream(pipeline.source, 997).await;
    let status = stream_error(&mut early).await;
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(
        status.message().contains("ledger 997") && status.message().contains("oldest ledger 998"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("s3cr3t"));
}

fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |key| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_at_start_names_endpoint_and_bucket() {
    let port = support::servers::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = SourceConfig::from_lookup(lookup(&[
        ("STORAGE_TYPE", "S3"),
        ("BUCKET_NAME", "absent-lake"),
        ("S3_ENDPOINT_URL", &endpoint),
        ("REMOTE_RETRY_TIMEOUT", "1s"),
    ]))
    .unwrap();
    let err = format!("{:#}", source::open(&config).await.unwrap_err());
    assert!(
        err.contains(&endpoint)
            && err.contains("bucket absent-lake")
            && err.contains(".config.json"),
        "{err}"
    );
}

/// The stream ends with `code`, naming the bucket and key of ledger 998's object.
async fn expect_error_naming_998(stream: &mut Streaming<RawLedger>, code: tonic::Code) {
    let status = stream_error(stream).await;
    assert_eq!(status.code(), code);
    let key = "s3://lake/FFFFFFFF--0-63999/FFFFFC19--998.xdr";
    assert!(status.message().contains(key), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_and_corrupt_objects_end_only_their_stream() {
    if skip("s3") {
        return;
    }
    let root = TempDir::new("s3-faults");
    copy_tree(&real_lake("testnet-997-999"), &root.0.join("lake"));
    let object_998 = root.0.join("lake/FFFFFFFF--0-63999/FFFFFC19--998.xdr.zst");
    let object_998 = if object_998.exists() {
        object_998
    } else {
        object_998.with_extension("zstd")
    };
    let original = fs::read(&object_998).unwrap();
    fs::remove_file(&object_998).unwrap();
    let server = S3Server::start(&root.0);
    let endpoint = server.endpoint();
    let pipeline = start_pipeline_with(&[
        ("STORAGE_TYPE", "S3"),
        ("BUCKET_NAME", "lake"),
        ("S3_ENDPOINT_URL", &endpoint),
    ])
    .await;

    // 998 missing while 999 exists: a gap, named by bucket and key.
    let mut stream = raw_stream(pipeline.source, 997).await;
    assert_eq!(next_ledger(&mut stream).await.sequence, 997);
    expect_error_naming_998(&mut stream, tonic::Code::NotFound).await;

    // 998 corrupt: the stream ends with DATA_LOSS naming the key ...
    fs::write(&object_998, &original[..original.len() / 2]).unwrap();
    let mut stream = raw_stream(pipeline.source, 998).await;
    expect_error_naming_998(&mut stream, tonic::Code::DataLoss).await;
    // ... and the source serves other streams as before.
    let mut other = raw_stream(pipeline.source, 999).await;
    assert_eq!(next_ledger(&mut other).await.sequence, 999);
    assert_eq!(pipeline.source_metrics.get("error_count"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_access_denied_names_bucket_and_credential_source_not_secrets() {
    if skip("s3") {
        return;
    }
    let root = TempDir::new("s3-denied");
    copy_tree(&real_lake("testnet-997-999"), &root.0.join("private-lake"));
    let server = S3Server::start_with_keys(&root.0, "AKIAFLOWCTLTEST", "the-right-secret-key");
    let endpoint = server.endpoint();
    for (credentials, source_named) in [
        (
            vec![
                ("AWS_ACCESS_KEY_ID", "AKIAFLOWCTLTEST"),
                ("AWS_SECRET_ACCESS_KEY", "a-wrong-secret-key-value"),
            ],
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment",
        ),
        (vec![], "anonymous"),
    ] {
        let mut env = vec![
            ("STORAGE_TYPE", "S3"),
            ("BUCKET_NAME", "private-lake"),
            ("S3_ENDPOINT_URL", endpoint.as_str()),
            ("REMOTE_RETRY_TIMEOUT", "2s"),
        ];
        env.extend(credentials);
        let config = SourceConfig::from_lookup(lookup(&env)).unwrap();
        let err = format!("{:#}", source::open(&config).await.unwrap_err());
        assert!(
            err.contains("access denied") && err.contains("bucket private-lake"),
            "{err}"
        );
        assert!(err.contains(source_named), "{err}");
        for secret in [
            "a-wrong-secret-key-value",
            "the-right-secret-key",
            "AKIAFLOWCTLTEST",
        ] {
            assert!(!err.contains(secret), "a secret leaked: {err}");
        }
    }
    // The right keys read the lake.
    let pipeline = start_pipeline_with(&[
        ("STORAGE_TYPE", "S3"),
        ("BUCKET_NAME", "private-lake"),
        ("S3_ENDPOINT_URL", &endpoint),
        ("AWS_ACCESS_KEY_ID", "AKIAFLOWCTLTEST"),
        ("AWS_SECRET_ACCESS_KEY", "the-right-secret-key"),
    ])
    .await;
    let mut stream = raw_stream(pipeline.source, 997).await;
    assert_eq!(next_ledger(&mut stream).await.sequence, 997);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_restarted_mid_stream_loses_and_repeats_no_ledger() {
    if skip("s3") {
        return;
    }
    let root = TempDir::new("s3-restart");
    let lake_dir = root.0.join("generated");
    let layout = Layout {
        ledgers_per_file: 1,
        files_per_partition: 64000,
    };
    stellar_datagen::generate(&stellar_datagen::Config {
        out: lake_dir.clone(),
        start: 1000,
        ledgers: 120,
        profile: stellar_datagen::Profile::parse("small").unwrap(),
        seed: 15,
        layout,
        passphrase: stellar_datagen::STANDALONE_PASSPHRASE.to_string(),
        expected: None,
    })
    .unwrap();
    let lake = DataLake::new(&lake_dir, layout).unwrap();
    let mut server = S3Server::start(&root.0);
    let endpoint = server.endpoint();
    let pipeline = start_pipeline_with(&[
        ("STORAGE_TYPE", "S3"),
        ("BUCKET_NAME", "generated"),
        ("S3_ENDPOINT_URL", &endpoint),
        ("NETWORK_PASSPHRASE", stellar_datagen::STANDALONE_PASSPHRASE),
        ("LEDGERS_PER_FILE", "1"),
        ("FILES_PER_PARTITION", "64000"),
        ("READ_AHEAD_LEDGERS", "2"),
        ("PREFETCH_OBJECTS", "2"),
    ])
    .await;
    let mut stream = raw_stream(pipeline.source, 1000).await;
    let check = |ledger: RawLedger, expected: u32| {
        let batch = lake.read_batch(expected).unwrap().unwrap();
        assert_eq!(
            ledger.sequence, expected,
            "a ledger was skipped or repeated"
        );
        assert_eq!(
            ledger.ledger_close_meta_xdr,
            batch.ledger_close_metas[0].to_xdr(Limits::none()).unwrap()
        );
    };
    for expected in 1000..1020 {
        check(next_ledger(&mut stream).await, expected);
    }
    // The server goes away with the stream's reads ahead in flight, and comes back.
    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    for expected in 1020..1120 {
        check(next_ledger(&mut stream).await, expected);
    }
    let waited = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(waited.is_err(), "the source sent past the lake");
}
