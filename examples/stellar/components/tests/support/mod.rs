//! Helpers shared by the components' integration tests: the three services wired together
//! in-process over real gRPC on loopback ([`start_pipeline`], [`consume`]), the offline
//! extraction they must match, and the real servers the backend tests start on 127.0.0.1
//! ([`servers`], [`rpc_server`]). Everything a helper starts is stopped when its value drops.

#![allow(dead_code)]

pub mod rpc_server;
pub mod servers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use flowctl_proto::component::Metrics;
use stellar_components::consumer::{self, ConsumerConfig, Outcome};
use stellar_components::processor::{self, EventProcessor, LedgerRange, ProcessorConfig};
use stellar_components::shutdown::{self, ShutdownTrigger};
use stellar_components::source::{self, LedgerSource, SourceConfig};
use tokio::net::TcpListener;

pub fn real_lake(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../ledgers")
        .join(name)
}

/// The real lakes with a range each that has no gap (`standalone-p23-sac` lacks 86-87).
pub const REAL_FOLDERS: [(&str, u32, u32); 4] = [
    ("testnet-997-999", 997, 999),
    ("pubnet-53312000", 53312000, 53312000),
    ("standalone-p23-sac", 84, 85),
    ("standalone-p25-10048-10077", 10048, 10077),
];

/// A running source and processor; both stop (and their streams end) when this is dropped.
pub struct Pipeline {
    pub source: SocketAddr,
    pub processor: SocketAddr,
    pub source_metrics: Metrics,
    pub processor_metrics: Metrics,
    _stop: ShutdownTrigger,
}

/// The source configured by `env` (plus a 20 ms live poll), and a processor reading it.
pub async fn start_pipeline_with(env: &[(&str, &str)]) -> Pipeline {
    let source_config = SourceConfig::from_lookup(|key| {
        env.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .or_else(|| (key == "LEDGER_POLL_INTERVAL").then(|| "20ms".to_string()))
    })
    .unwrap();
    let opened = source::open(&source_config).await.unwrap();
    let (stop, shutdown) = shutdown::channel();
    let source_metrics = Metrics::with_keys(source::IDENTITY.metric_keys);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = listener.local_addr().unwrap();
    let service = LedgerSource::new(
        &source_config,
        opened.backend,
        source_metrics.clone(),
        shutdown.clone(),
    );
    tokio::spawn(source::serve(listener, service, shutdown.clone()));

    let processor_config = ProcessorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        network_passphrase: opened.network_passphrase.clone(),
        source_address: source.to_string(),
        // More than one, so the in-order merge of the workers' results is exercised.
        workers: 3,
    };
    let processor_metrics = Metrics::with_keys(processor::IDENTITY.metric_keys);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let processor = listener.local_addr().unwrap();
    let service = EventProcessor::new(
        &processor_config,
        processor_metrics.clone(),
        shutdown.clone(),
    )
    .unwrap();
    tokio::spawn(processor::serve(listener, service, shutdown));
    Pipeline {
        source,
        processor,
        source_metrics,
        processor_metrics,
        _stop: stop,
    }
}

/// The pipeline on a data lake folder.
pub async fn start_pipeline(lake: &Path) -> Pipeline {
    start_pipeline_with(&[
        ("STORAGE_TYPE", "FS"),
        ("BUCKET_NAME", lake.to_str().unwrap()),
    ])
    .await
}

/// The consumer's JSON lines and tally for `start..=end` (`end` 0: live).
pub async fn consume(pipeline: &Pipeline, start: u32, end: u32) -> (Vec<u8>, consumer::Tally) {
    let config = ConsumerConfig {
        processor_address: pipeline.processor.to_string(),
        range: LedgerRange {
            start,
            end: (end != 0).then_some(end),
        },
        print_events: true,
    };
    let metrics = Metrics::with_keys(consumer::IDENTITY.metric_keys);
    let (_never, shutdown) = shutdown::channel();
    let mut out = Vec::new();
    let (tally, outcome) = consumer::consume(&config, &metrics, shutdown, &mut out)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(metrics.get("total_events_received"), tally.events as f64);
    (out, tally)
}

pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The events of `start..=end` of the lake folder, extracted offline in one process.
pub fn offline_events(lake: &Path, start: u32, end: u32) -> String {
    let mut offline = String::new();
    stellar_ttp::offline::extract_datalake_range(lake, start, end, None, |events| {
        for event in events {
            stellar_ttp::json::write_event_json(event, &mut offline);
            offline.push('\n');
        }
        Ok(())
    })
    .unwrap();
    offline
}
