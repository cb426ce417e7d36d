//! The reader behind one `StreamRawLedgers` call: a thread that pulls objects (or RPC pages)
//! from the stream's [`Feed`], decompresses and cuts them, and hands the ledgers to the gRPC
//! response through a bounded queue, so fetching, CPU work and sending overlap.
//!
//! Invariants, the same for every backend: ledgers go out in order from the one asked for, none
//! skipped, none twice; when the next ledger does not exist yet the reader polls for it (live
//! mode) until it appears, the client goes away or the component shuts down; a ledger that is
//! missing while a later one exists (a gap, seen twice a poll interval apart) or a corrupt
//! object (read twice) ends the stream with a gRPC error naming the object, and only that
//! stream.

use std::thread;
use std::time::{Duration, Instant};

use flowctl_proto::component::Metrics;
use flowctl_proto::raw_ledger_service::RawLedger;
use tokio::sync::mpsc;
use tonic::Status;

use super::backend::{Backend, Chunk};
use super::config::Prefetch;
use super::split::ObjectReader;

/// How often a stream logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a stream's reader thread hands to the gRPC response, in order.
pub type LedgerReceiver = mpsc::Receiver<Result<RawLedger, Status>>;
type LedgerSender = mpsc::Sender<Result<RawLedger, Status>>;

/// The reader behind one stream.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    pub backend: Backend,
    pub poll_interval: Duration,
    /// Capacity of the queue between the reader and the client.
    pub capacity: usize,
    /// Objects (RPC pages) a remote feed fetches ahead.
    pub prefetch: Prefetch,
    pub metrics: Metrics,
}

impl ReadAhead {
    /// Starts a reader thread streaming ledgers from `start` on; it stops when the receiver is
    /// dropped (client cancelled) or after sending an error.
    pub fn spawn(
        &self,
        start: u32,
        client: String,
    ) -> std::io::Result<(LedgerReceiver, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let reader = self.clone();
        let thread = thread::Builder::new()
            .name(format!("read-ahead-{start}"))
            .spawn(move || reader.run(start, &client, &tx))?;
        Ok((rx, thread))
    }

    /// Ends the stream with `status` (counted and logged).
    fn fail(&self, client: &str, tx: &LedgerSender, status: Status) {
        self.metrics.add("error_count", 1.0);
        log::error!("{client}: {}", status.message());
        let _ = tx.blocking_send(Err(status));
    }

    fn run(&self, start: u32, client: &str, tx: &LedgerSender) {
        let mut objects = match ObjectReader::new() {
            Ok(objects) => objects,
            Err(e) => {
                return self.fail(client, tx, Status::resource_exhausted(format!("{e:#}")));
            }
        };
        let mut feed = self.backend.feed(self.prefetch);
        let mut next = start;
        let mut progress = Progress::new(start);
        let mut waiting = false;
        let mut gap_seen = false;
        let mut retried_object = false;
        loop {
            let (ledgers, name) = match feed.next(next) {
                Err(error) => {
                    return self.fail(client, tx, Status::new(error.code, error.message));
                }
                Ok(Chunk::NotYet { name, later }) => {
                    if !waiting {
                        waiting = true;
                        progress.log(client, next);
                        log::info!(
                            "{client}: ledger {next} is not there yet ({name}); polling every \
                             {:?} (live mode)",
                            self.poll_interval
                        );
                    }
                    if let Some(later) = later {
                        // A missing object followed by an existing one is a gap, which waiting
                        // cannot fill; looked at twice, so an exporter publishing out of order
                        // is not cut off.
                        if gap_seen {
                            let message = format!(
                                "ledger {next} is missing: {name} does not exist although \
                                 ledger {later} does (a gap in the data lake)"
                            );
                            return self.fail(client, tx, Status::not_found(message));
                        }
                        gap_seen = true;
                    } else {
                        gap_seen = false;
                    }
                    if tx.is_closed() {
                        log::info!("{client}: stream closed by the client at ledger {next}");
                        return;
                    }
                    thread::sleep(self.poll_interval);
                    continue;
                }
                Ok(Chunk::Ledgers(ledgers)) => (Ok(ledgers), None),
                Ok(Chunk::Object { name, compressed }) => {
                    (objects.ledgers(name, compressed), Some(name.to_string()))
                }
            };
            if waiting {
                waiting = false;
                gap_seen = false;
                log::info!("{client}: ledger {next} appeared");
            }
            let ledgers = match ledgers {
                Ok(ledgers) => ledgers,
                // A live exporter may still be writing the newest object: look again once.
                Err(e) if !retried_object => {
                    log::warn!("{client}: {e:#}; retrying after {:?}", self.poll_interval);
                    retried_object = true;
                    feed.forget();
                    thread::sleep(self.poll_interval);
                    continue;
                }
                Err(e) => return self.fail(client, tx, Status::data_loss(format!("{e:#}"))),
            };
            retried_object = false;
            let before = next;
            for ledger in ledgers
                .into_iter()
                .filter(|ledger| ledger.sequence >= before)
            {
                let sequence = ledger.sequence;
                if sequence != next {
                    let message = format!(
                        "{} holds ledger {sequence} where {next} belongs",
                        name.as_deref().unwrap_or("the RPC server")
                    );
                    return self.fail(client, tx, Status::data_loss(message));
                }
                // Counted once read, before the hand-over, so a client that has a ledger
                // always finds it in the metrics.
                self.metrics.add("success_count", 1.0);
                self.metrics.add("total_processed", 1.0);
                self.metrics.add(
                    "total_bytes_processed",
                    ledger.ledger_close_meta_xdr.len() as f64,
                );
                self.metrics
                    .set("last_successful_sequence", f64::from(sequence));
                if tx.blocking_send(Ok(ledger)).is_err() {
                    progress.log(client, sequence);
                    log::info!("{client}: stream closed by the client at ledger {sequence}");
                    return;
                }
                progress.sent(client, sequence);
                match sequence.checked_add(1) {
                    Some(following) => next = following,
                    None => return,
                }
            }
            if next == before {
                let message = format!(
                    "{} does not hold ledger {next}",
                    name.as_deref().unwrap_or("the RPC server's answer")
                );
                return self.fail(client, tx, Status::data_loss(message));
            }
        }
    }
}

/// Logs a stream's progress every few seconds so `docker logs` shows it moving.
struct Progress {
    first_unlogged: u32,
    count: u64,
    since: Instant,
}

impl Progress {
    fn new(start: u32) -> Progress {
        Progress {
            first_unlogged: start,
            count: 0,
            since: Instant::now(),
        }
    }

    fn sent(&mut self, client: &str, sequence: u32) {
        self.count += 1;
        if self.since.elapsed() >= PROGRESS_EVERY {
            self.log(client, sequence.saturating_add(1));
        }
    }

    /// Logs what was sent since the last line; `next` is the first ledger not yet sent.
    fn log(&mut self, client: &str, next: u32) {
        if self.count > 0 {
            let elapsed = self.since.elapsed().as_secs_f64().max(1e-6);
            log::info!(
                "{client}: sent ledgers {}-{} ({} ledgers, {:.0} ledgers/s)",
                self.first_unlogged,
                next.saturating_sub(1),
                self.count,
                self.count as f64 / elapsed
            );
        }
        self.first_unlogged = next;
        self.count = 0;
        self.since = Instant::now();
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::tests::TempDir;
    use crate::source::split::tests::{real_lake, testnet};
    use crate::source::IDENTITY;
    use std::fs;
    use stellar_ttp::datalake::{DataLake, Layout};

    fn copy_ledger(from: &DataLake, to: &DataLake, seq: u32) {
        let source = from.find_file(seq).unwrap();
        let key = to
            .layout()
            .object_key(seq, stellar_ttp::datalake::WRITE_EXTENSION);
        let target = to.root().join(key);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        // Write then rename, as an exporter publishing an object would.
        let partial = target.with_extension("partial");
        fs::copy(source, &partial).unwrap();
        fs::rename(partial, target).unwrap();
    }

    fn recv(rx: &mut mpsc::Receiver<Result<RawLedger, Status>>) -> RawLedger {
        rx.blocking_recv()
            .expect("stream ended")
            .expect("stream failed")
    }

    /// Polls `condition` (for at most a minute, so a broken reader fails instead of hanging).
    fn wait_for(condition: impl Fn() -> bool) {
        for _ in 0..60_000 {
            if condition() {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("condition not met");
    }

    #[test]
    fn reads_ahead_then_polls_for_ledgers_that_appear_later() {
        let real = testnet();
        let dir = TempDir::new("live");
        let lake = DataLake::new(&dir.0, real.layout()).unwrap();
        copy_ledger(&real, &lake, 997);
        copy_ledger(&real, &lake, 998);
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let reader = ReadAhead {
            backend: Backend::Folder(lake.clone()),
            prefetch: Prefetch::fixed(1),
            poll_interval: Duration::from_millis(20),
            capacity: 1,
            metrics: metrics.clone(),
        };
        let (mut rx, thread) = reader.spawn(997, "test".into()).unwrap();
        assert_eq!(recv(&mut rx).sequence, 997);
        assert_eq!(recv(&mut rx).sequence, 998);
        // 999 is not there yet: the reader waits (live mode) until it appears.
        assert!(rx.try_recv().is_err());
        copy_ledger(&real, &lake, 999);
        let ledger = recv(&mut rx);
        assert_eq!(ledger.sequence, 999);
        assert_eq!(metrics.get("success_count"), 3.0);
        assert_eq!(metrics.get("last_successful_sequence"), 999.0);
        assert!(metrics.get("total_bytes_processed") > 0.0);
        // The client going away ends the reader while it polls for 1000.
        drop(rx);
        thread.join().unwrap();
    }

    #[test]
    fn the_read_ahead_queue_is_bounded() {
        let real = real_lake("standalone-p25-10048-10077");
        let lake = DataLake::new(
            real,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 64000,
            },
        )
        .unwrap();
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let reader = ReadAhead {
            backend: Backend::Folder(lake),
            prefetch: Prefetch::fixed(1),
            poll_interval: Duration::from_millis(20),
            capacity: 2,
            metrics: metrics.clone(),
        };
        let (mut rx, thread) = reader.spawn(10048, "test".into()).unwrap();
        assert_eq!(recv(&mut rx).sequence, 10048);
        // With nobody receiving, the reader stops once the queue is full: the queue's two
        // ledgers and the one it is blocked handing over are all it reads past what was
        // received.
        wait_for(|| metrics.get("success_count") >= 4.0);
        // Give a reader that ignored the bound ample time to run ahead, then check it did not.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(metrics.get("success_count"), 4.0);
        assert_eq!(rx.len(), 2);
        assert_eq!(recv(&mut rx).sequence, 10049);
        drop(rx);
        thread.join().unwrap();
    }

    #[test]
    fn a_corrupt_object_is_an_error_not_a_skip() {
        let dir = TempDir::new("corrupt");
        let lake = DataLake::new(
            &dir.0,
            Layout {
                ledgers_per_file: 1,
                files_per_partition: 1,
            },
        )
        .unwrap();
        fs::write(
            dir.0.join(lake.layout().object_key(5, "xdr.zst")),
            b"not zstd",
        )
        .unwrap();
        let reader = ReadAhead {
            backend: Backend::Folder(lake),
            prefetch: Prefetch::fixed(1),
            poll_interval: Duration::from_millis(5),
            capacity: 1,
            metrics: Metrics::with_keys(IDENTITY.metric_keys),
        };
        let (mut rx, thread) = reader.spawn(5, "test".into()).unwrap();
        let status = rx.blocking_recv().unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(rx.blocking_recv().is_none());
        thread.join().unwrap();
        assert_eq!(reader.metrics.get("error_count"), 1.0);
    }

    #[test]
    fn a_gap_ends_the_stream_naming_the_missing_object() {
        let real = testnet();
        let dir = TempDir::new("gap");
        let lake = DataLake::new(&dir.0, real.layout()).unwrap();
        copy_ledger(&real, &lake, 997);
        copy_ledger(&real, &lake, 999);
        let reader = ReadAhead {
            backend: Backend::Folder(lake),
            prefetch: Prefetch::fixed(1),
            poll_interval: Duration::from_millis(5),
            capacity: 4,
            metrics: Metrics::with_keys(IDENTITY.metric_keys),
        };
        let (mut rx, thread) = reader.spawn(997, "test".into()).unwrap();
        assert_eq!(recv(&mut rx).sequence, 997);
        let status = rx.blocking_recv().unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(
            status.message().contains("ledger 998 is missing")
                && status.message().contains("FFFFFC19--998.xdr")
                && status.message().contains("ledger 999 does"),
            "{}",
            status.message()
        );
        assert!(rx.blocking_recv().is_none());
        thread.join().unwrap();
    }
}
