//! The three components wired together over real gRPC on loopback, in one process: the source
//! on a real data lake folder, the processor pulling from it, the consumer's `consume` loop
//! writing JSON lines into a buffer.

mod support;

use std::fs;
use std::time::Duration;

use flowctl_proto::component::Metrics;
use flowctl_proto::raw_ledger_service::raw_ledger_service_client::RawLedgerServiceClient;
use flowctl_proto::raw_ledger_service::StreamLedgersRequest;
use flowctl_proto::token_transfer_service::event_service_client::EventServiceClient;
use flowctl_proto::token_transfer_service::GetEventsRequest;
use stellar_components::consumer::{self, ConsumerConfig, Outcome};
use stellar_components::processor::LedgerRange;
use stellar_components::shutdown;
use stellar_ttp::datalake::{DataLake, Layout, WRITE_EXTENSION};
use support::{consume, json_lines, real_lake, start_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnet_997_998_matches_the_upstream_events_exactly() {
    let lake = real_lake("testnet-997-999");
    let pipeline = start_pipeline(&lake).await;
    let (out, tally) = consume(&pipeline, 997, 998).await;
    let expected = fs::read(lake.join("expected-events-997-998.jsonl")).unwrap();
    // Byte for byte: same events, same order, same formatting as the upstream file.
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        String::from_utf8(expected.clone()).unwrap()
    );
    assert_eq!(tally.events as usize, json_lines(&expected).len());
    assert_eq!(
        pipeline.processor_metrics.get("last_processed_ledger"),
        998.0
    );
    assert_eq!(pipeline.processor_metrics.get("total_processed"), 2.0);
    assert_eq!(
        pipeline.processor_metrics.get("total_events_emitted"),
        tally.events as f64
    );
    // The source may have read ahead past 998 (999 exists), but not beyond the lake.
    assert!(pipeline.source_metrics.get("last_successful_sequence") >= 998.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_range_ends_even_when_no_later_ledger_exists() {
    // 10077 is the last ledger of this lake: upstream would wait for 10078 forever.
    let lake = real_lake("standalone-p25-10048-10077");
    let pipeline = start_pipeline(&lake).await;
    let (out, tally) = consume(&pipeline, 10070, 10077).await;
    assert!(tally.events > 0);
    assert_eq!(json_lines(&out).len() as u64, tally.events);
    assert_eq!(tally.count("fee") + tally.count("transfer"), tally.events);
    let ledgers: Vec<u64> = json_lines(&out)
        .iter()
        .map(|event| event["meta"]["ledger_sequence"].as_u64().unwrap())
        .collect();
    assert!(ledgers.windows(2).all(|pair| pair[0] <= pair[1]));
    assert_eq!((ledgers[0], *ledgers.last().unwrap()), (10070, 10077));
    assert_eq!(
        pipeline.processor_metrics.get("last_processed_ledger"),
        10077.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backwards_range_is_invalid_argument() {
    let pipeline = start_pipeline(&real_lake("testnet-997-999")).await;
    let mut client = EventServiceClient::connect(format!("http://{}", pipeline.processor))
        .await
        .unwrap();
    let status = client
        .get_ttp_events(GetEventsRequest {
            start_ledger: 998,
            end_ledger: 997,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_ledgers_are_one_ledger_close_meta_each_and_cancel_cleanly() {
    use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};
    let pipeline = start_pipeline(&real_lake("testnet-997-999")).await;
    let mut client = RawLedgerServiceClient::connect(format!("http://{}", pipeline.source))
        .await
        .unwrap();
    let mut stream = client
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 997 })
        .await
        .unwrap()
        .into_inner();
    for sequence in 997..=999 {
        let ledger = stream.message().await.unwrap().unwrap();
        assert_eq!(ledger.sequence, sequence);
        let meta =
            LedgerCloseMeta::from_xdr(&ledger.ledger_close_meta_xdr, Limits::none()).unwrap();
        assert_eq!(stellar_ttp::datalake::ledger_sequence(&meta), sequence);
    }
    // Nothing after 999: the stream stays open (live mode) until the client cancels.
    let waited = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(waited.is_err(), "the source ended or sent past the lake");
    drop(stream);
    assert_eq!(pipeline.source_metrics.get("success_count"), 3.0);
}

/// A temporary copy of part of a real lake that a test can grow, removed on drop.
struct GrowingLake {
    from: DataLake,
    to: DataLake,
}

impl GrowingLake {
    fn new(name: &str, test: &str) -> GrowingLake {
        let real = real_lake(name);
        let layout = Layout {
            ledgers_per_file: 1,
            files_per_partition: 64000,
        };
        let dir = std::env::temp_dir().join(format!(
            "stellar-components-it-{}-{test}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::copy(real.join(".config.json"), dir.join(".config.json")).unwrap();
        GrowingLake {
            from: DataLake::new(real, layout).unwrap(),
            to: DataLake::new(dir, layout).unwrap(),
        }
    }

    fn add(&self, sequence: u32) {
        let target = self
            .to
            .root()
            .join(self.to.layout().object_key(sequence, WRITE_EXTENSION));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let partial = target.with_extension("partial");
        fs::copy(self.from.find_file(sequence).unwrap(), &partial).unwrap();
        fs::rename(partial, target).unwrap();
    }
}

impl Drop for GrowingLake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.to.root());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_follows_a_growing_lake_until_shutdown() {
    let lake = GrowingLake::new("testnet-997-999", "live");
    lake.add(997);
    let pipeline = start_pipeline(lake.to.root()).await;
    let config = ConsumerConfig {
        processor_address: pipeline.processor.to_string(),
        range: LedgerRange {
            start: 997,
            end: None,
        },
        print_events: true,
    };
    let metrics = Metrics::with_keys(consumer::IDENTITY.metric_keys);
    let consumer_metrics = metrics.clone();
    let (stop_consumer, shutdown) = shutdown::channel();
    let consuming = tokio::spawn(async move {
        let mut out = Vec::new();
        let result = consumer::consume(&config, &metrics, shutdown, &mut out).await;
        (result, out)
    });
    // Ledgers that appear later are picked up by polling; wait until the consumer has the
    // events of each (every ledger of this lake has some).
    let followed = async {
        for sequence in [998, 999] {
            lake.add(sequence);
            while consumer_metrics.get("last_processed_ledger") < f64::from(sequence) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), followed)
        .await
        .expect("the live stream did not deliver ledgers added to the lake");
    stop_consumer.trigger();
    let (result, out) = consuming.await.unwrap();
    let (tally, outcome) = result.unwrap();
    assert_eq!(outcome, Outcome::Stopped);
    let ledgers: std::collections::BTreeSet<u64> = json_lines(&out)
        .iter()
        .map(|event| event["meta"]["ledger_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(ledgers.into_iter().collect::<Vec<_>>(), [997, 998, 999]);
    assert_eq!(tally.last_ledger, Some(999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_live_call_cancels_the_source_stream() {
    let lake = GrowingLake::new("testnet-997-999", "leave");
    lake.add(997);
    let pipeline = start_pipeline(lake.to.root()).await;
    let mut client = EventServiceClient::connect(format!("http://{}", pipeline.processor))
        .await
        .unwrap();
    let mut stream = client
        .get_ttp_events(GetEventsRequest {
            start_ledger: 997,
            end_ledger: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.meta.unwrap().ledger_sequence, 997);
    // The processor is now waiting for ledger 998, which does not exist yet. Leave.
    drop(stream);
    drop(client);
    // A processor that kept its source stream open would receive 998 once it appears; the source
    // counts every ledger it sends.
    while pipeline.processor_metrics.get("total_processed") < 1.0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    lake.add(998);
    // Ample time for a source still streaming (it polls every 20 ms) to send 998.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pipeline.source_metrics.get("success_count"), 1.0);
}

/// Every real data lake folder, through the three services, gives exactly what the offline
/// extraction (`ttp-processor events`) gives for the same range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_folder_matches_the_offline_extraction() {
    for (folder, start, end) in support::REAL_FOLDERS {
        let lake = real_lake(folder);
        let offline = support::offline_events(&lake, start, end);
        let pipeline = start_pipeline(&lake).await;
        let (out, tally) = consume(&pipeline, start, end).await;
        assert!(tally.events > 0, "{folder}");
        assert_eq!(String::from_utf8(out).unwrap(), offline, "{folder}");
    }
}

/// A generated lake (stellar-datagen: P23, 64 ledgers per file, payments, path payments, merges,
/// clawbacks, failed transactions, SAC transfers/mints/burns): the three services deliver exactly
/// the events the generator computed on its own, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_lake_matches_the_generators_expected_events() {
    let dir = std::env::temp_dir().join(format!(
        "stellar-components-it-{}-generated",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    let lake = dir.join("lake");
    let expected = dir.join("expected.jsonl");
    stellar_datagen::generate(&stellar_datagen::Config {
        out: lake.clone(),
        start: 6400,
        ledgers: 320,
        profile: stellar_datagen::Profile::parse("small").unwrap(),
        seed: 7,
        layout: Layout {
            ledgers_per_file: 64,
            files_per_partition: 10,
        },
        passphrase: stellar_datagen::STANDALONE_PASSPHRASE.to_string(),
        expected: Some(expected.clone()),
    })
    .unwrap();
    let pipeline = start_pipeline(&lake).await;
    let (out, tally) = consume(&pipeline, 6400, 6719).await;
    let expected = fs::read_to_string(&expected).unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert!(tally.events > 1000);
    assert!(tally.count("mint") > 0 && tally.count("burn") > 0 && tally.count("clawback") > 0);
    assert!(
        String::from_utf8(out).unwrap() == expected,
        "output differs from the generator's"
    );
}
