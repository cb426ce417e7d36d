//! `consumer-app`: calls `GetTTPEvents` on the processor for `[start, end]` (`end` 0 = live),
//! prints each event as one JSON line on stdout (`stellar_ttp::json`, byte for byte the format
//! of the upstream expected-events files), counts the events per kind and, when a bounded range
//! is done, prints a summary on stderr and exits 0.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flowctl_proto::component::Metrics;
use flowctl_proto::flowctl::ServiceType;
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer::TokenTransferEvent;
use flowctl_proto::token_transfer_service::GetEventsRequest;
use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::component::{self, Identity};
use crate::event_types;
use crate::grpc;
use crate::processor::LedgerRange;
use crate::shutdown::{self, Shutdown};

/// How the consumer registers and what `/health` reports (docs/contract.md §3).
pub const IDENTITY: Identity = Identity {
    name: "consumer-app",
    service_type: ServiceType::Sink,
    input_event_types: &[event_types::TOKEN_TRANSFER],
    output_event_types: &[],
    metric_keys: &[
        "success_count",
        "error_count",
        "total_processed",
        "total_events_received",
        "last_processed_ledger",
        "processing_latency_ms",
    ],
};

/// Upstream's default `TTP_SERVICE_ADDRESS`.
pub const DEFAULT_PROCESSOR: &str = "localhost:50051";
/// How long the consumer keeps trying to reach a processor that is still starting.
const CONNECT_RETRY_FOR: Duration = Duration::from_secs(30);
/// Events between two metric updates (the metrics sit behind a lock shared with /health).
const METRICS_EVERY: u64 = 512;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Event kinds, in the order the summary lists them.
pub const KINDS: [&str; 5] = ["transfer", "mint", "burn", "clawback", "fee"];

/// The consumer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// `TTP_SERVICE_ADDRESS`, `host:port`.
    pub processor_address: String,
    /// The positional arguments `start end`.
    pub range: LedgerRange,
    /// `PRINT_EVENTS` (ours, default `true`): `false` only counts, e.g. for throughput runs
    /// where a JSON line per event through the container's log would be measured instead.
    pub print_events: bool,
}

impl ConsumerConfig {
    /// Reads `start end` from `args` and the rest from the process environment.
    pub fn from_env(args: &[String]) -> Result<ConsumerConfig, String> {
        Self::from_lookup(args, |key| std::env::var(key).ok())
    }

    /// Like [`ConsumerConfig::from_env`] with an explicit lookup (for tests).
    pub fn from_lookup(
        args: &[String],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ConsumerConfig, String> {
        let processor_address = lookup("TTP_SERVICE_ADDRESS")
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| DEFAULT_PROCESSOR.to_string());
        grpc::endpoint("TTP_SERVICE_ADDRESS", &processor_address)?;
        let ledger = |index: usize, name: &str| -> Result<u32, String> {
            let value = args.get(index).ok_or(format!(
                "missing argument <{name}>: usage: consumer-app <start_ledger> <end_ledger> \
                 (end 0 = live)"
            ))?;
            value
                .trim()
                .parse()
                .map_err(|_| format!("<{name}>: {value:?} is not a ledger sequence number"))
        };
        let start_ledger = ledger(0, "start_ledger")?;
        let end_ledger = ledger(1, "end_ledger")?;
        if args.len() > 2 {
            return Err(format!(
                "unexpected argument {:?}: usage: consumer-app <start_ledger> <end_ledger>",
                args[2]
            ));
        }
        let range = LedgerRange::of_request(&GetEventsRequest {
            start_ledger,
            end_ledger,
        })
        .map_err(|status| format!("<start_ledger> <end_ledger>: {}", status.message()))?;
        let print_events = print_events_setting(&lookup)?;
        Ok(ConsumerConfig {
            processor_address,
            range,
            print_events,
        })
    }
}

/// `PRINT_EVENTS` (ours, default `true`): `false` only counts. The error names the variable.
pub fn print_events_setting(lookup: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    match lookup("PRINT_EVENTS").map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(true),
        Some(value) => match value.as_str() {
            "" | "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(format!("PRINT_EVENTS: {value:?} is not true or false")),
        },
    }
}

/// What the consumer received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub events: u64,
    /// Counts per kind, indexed like [`KINDS`].
    pub by_kind: [u64; 5],
    /// Events with no kind set (a newer processor than this consumer).
    pub unknown: u64,
    pub first_ledger: Option<u32>,
    pub last_ledger: Option<u32>,
    /// Distinct ledgers that had at least one event.
    pub ledgers_with_events: u64,
    /// From the `GetTTPEvents` call to the end of the stream.
    pub elapsed: Duration,
}

impl Tally {
    /// Counts one event.
    pub fn add(&mut self, event: &TokenTransferEvent) {
        self.events += 1;
        match kind_index(event) {
            Some(kind) => self.by_kind[kind] += 1,
            None => self.unknown += 1,
        }
        let ledger = event.meta.as_ref().map(|meta| meta.ledger_sequence);
        if let Some(ledger) = ledger {
            self.first_ledger.get_or_insert(ledger);
            if self.last_ledger != Some(ledger) {
                self.ledgers_with_events += 1;
                self.last_ledger = Some(ledger);
            }
        }
    }

    /// The count of kind `name` (one of [`KINDS`]).
    pub fn count(&self, name: &str) -> u64 {
        KINDS
            .iter()
            .position(|kind| *kind == name)
            .map_or(0, |index| self.by_kind[index])
    }

    /// The summary as one JSON object.
    pub fn summary_json(&self, range: LedgerRange, outcome: &str) -> serde_json::Value {
        let mut by_kind = serde_json::Map::new();
        for (kind, count) in KINDS.iter().zip(self.by_kind) {
            by_kind.insert(kind.to_string(), count.into());
        }
        if self.unknown > 0 {
            by_kind.insert("unknown".to_string(), self.unknown.into());
        }
        let seconds = self.elapsed.as_secs_f64();
        let mut summary = serde_json::json!({
            "start_ledger": range.start,
            "end_ledger": range.end.unwrap_or(0),
            "outcome": outcome,
            "events": self.events,
            "ledgers_with_events": self.ledgers_with_events,
            "last_ledger_with_events": self.last_ledger,
            "by_kind": by_kind,
            "elapsed_seconds": (seconds * 1e3).round() / 1e3,
        });
        if seconds > 0.0 {
            summary["events_per_second"] = (self.events as f64 / seconds).round().into();
            if let (Some(end), "completed") = (range.end, outcome) {
                let ledgers = f64::from(end - range.start) + 1.0;
                summary["ledgers_per_second"] = ((ledgers / seconds * 10.0).round() / 10.0).into();
            }
        }
        summary
    }
}

/// Index of `event`'s kind in [`KINDS`].
pub fn kind_index(event: &TokenTransferEvent) -> Option<usize> {
    Some(match event.event.as_ref()? {
        Event::Transfer(_) => 0,
        Event::Mint(_) => 1,
        Event::Burn(_) => 2,
        Event::Clawback(_) => 3,
        Event::Fee(_) => 4,
    })
}

/// How a consumption ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The processor ended the stream of a bounded range.
    Completed,
    /// Shutdown started first.
    Stopped,
}

/// Connects to the processor, retrying while it is unreachable (it may still be starting).
pub async fn connect(address: &str) -> Result<Channel> {
    let endpoint = grpc::endpoint("TTP_SERVICE_ADDRESS", address).map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + CONNECT_RETRY_FOR;
    let mut backoff = Duration::from_millis(50);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() < deadline => {
                log::debug!("processor {address} not reachable yet: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                bail!("cannot reach the processor at {address} (TTP_SERVICE_ADDRESS): {e}")
            }
        }
    }
}

/// Calls `GetTTPEvents`, retrying briefly while the processor answers `UNAVAILABLE`.
async fn open_events(
    channel: &Channel,
    range: LedgerRange,
) -> Result<Streaming<TokenTransferEvent>> {
    let deadline = Instant::now() + CONNECT_RETRY_FOR;
    loop {
        let request = GetEventsRequest {
            start_ledger: range.start,
            end_ledger: range.end.unwrap_or(0),
        };
        match get_ttp_events(channel.clone(), request).await {
            Ok(stream) => return Ok(stream),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                log::warn!("processor unavailable ({}); retrying", status.message());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => bail!(
                "GetTTPEvents({}): {:?}: {}",
                range,
                status.code(),
                status.message()
            ),
        }
    }
}

/// `token_transfer_service.EventService/GetTTPEvents`, as the generated client calls it but with
/// [`EventCodec`].
pub async fn get_ttp_events(
    channel: Channel,
    request: GetEventsRequest,
) -> Result<Streaming<TokenTransferEvent>, Status> {
    let mut client =
        tonic::client::Grpc::new(channel).max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let path = PathAndQuery::from_static("/token_transfer_service.EventService/GetTTPEvents");
    let response = client
        .server_streaming(tonic::Request::new(request), path, EventCodec)
        .await?;
    Ok(response.into_inner())
}

/// The protobuf codec of `GetTTPEvents` (the same bytes as tonic's), decoding each event from
/// one contiguous slice: prost reading through tonic's buffer type (every varint and every
/// field advancing a `BytesMut`) was a quarter of the consumer's CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventCodec;

impl Codec for EventCodec {
    type Encode = GetEventsRequest;
    type Decode = TokenTransferEvent;
    type Encoder = EventCodec;
    type Decoder = EventCodec;

    fn encoder(&mut self) -> EventCodec {
        EventCodec
    }

    fn decoder(&mut self) -> EventCodec {
        EventCodec
    }
}

impl Encoder for EventCodec {
    type Item = GetEventsRequest;
    type Error = Status;

    fn encode(&mut self, item: GetEventsRequest, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding GetEventsRequest: {e}")))
    }
}

impl Decoder for EventCodec {
    type Item = TokenTransferEvent;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<TokenTransferEvent>, Status> {
        let len = buf.remaining();
        let chunk = buf.chunk();
        let event = if chunk.len() == len {
            let event = TokenTransferEvent::decode(chunk);
            buf.advance(len);
            event
        } else {
            TokenTransferEvent::decode(buf.copy_to_bytes(len))
        };
        event.map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// Receives the events of `config.range`, writing one JSON line per event to `out`, until the
/// processor ends the stream of a bounded range or `shutdown` starts. `out` is flushed whenever
/// no further event is ready, so a live stream shows up promptly without a write per event.
pub async fn consume<W: Write>(
    config: &ConsumerConfig,
    metrics: &Metrics,
    shutdown: Shutdown,
    out: &mut W,
) -> Result<(Tally, Outcome)> {
    // A shutdown while the processor is still unreachable ends the retries at once.
    let mut stop = Box::pin(shutdown.wait());
    let channel = tokio::select! {
        channel = connect(&config.processor_address) => channel?,
        _ = &mut stop => return Ok((Tally::default(), Outcome::Stopped)),
    };
    let began = Instant::now();
    let mut stream = tokio::select! {
        stream = open_events(&channel, config.range) => stream?,
        _ = &mut stop => return Ok((Tally::default(), Outcome::Stopped)),
    };
    log::info!(
        "receiving token transfer events for ledgers {} from {}",
        config.range,
        config.processor_address
    );
    let mut tally = Tally::default();
    let mut reported = Tally::default();
    let mut progress_at = Instant::now();
    let mut progress_tally = Tally::default();
    let mut line = String::with_capacity(1024);
    let outcome = loop {
        let next = {
            let message = stream.message();
            tokio::pin!(message);
            match poll_once(&mut message.as_mut()).await {
                Some(ready) => ready,
                None => {
                    out.flush().context("writing events to stdout")?;
                    report(metrics, &tally, &mut reported);
                    tokio::select! {
                        ready = message => ready,
                        _ = &mut stop => break Outcome::Stopped,
                    }
                }
            }
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => {
                if config.range.end.is_none() {
                    metrics.add("error_count", 1.0);
                    bail!("the processor ended the live stream");
                }
                break Outcome::Completed;
            }
            Err(status) => {
                metrics.add("error_count", 1.0);
                bail!(
                    "event stream failed after {} events: {:?}: {}",
                    tally.events,
                    status.code(),
                    status.message()
                );
            }
        };
        // The clock is read for one event in METRICS_EVERY (its latency stands for the batch's),
        // not for every event: at a million events that is measurable.
        let sampled = (tally.events + 1) % METRICS_EVERY == 0;
        let sample_began = sampled.then(Instant::now);
        if config.print_events {
            line.clear();
            stellar_ttp::json::write_event_json(&event, &mut line);
            line.push('\n');
            out.write_all(line.as_bytes())
                .context("writing events to stdout")?;
        }
        tally.add(&event);
        let Some(sample_began) = sample_began else {
            continue;
        };
        metrics.set(
            "processing_latency_ms",
            sample_began.elapsed().as_secs_f64() * 1e3,
        );
        report(metrics, &tally, &mut reported);
        if progress_at.elapsed() >= PROGRESS_EVERY {
            log::info!(
                "received {} events up to ledger {} ({:.0} events/s)",
                tally.events - progress_tally.events,
                tally.last_ledger.unwrap_or(0),
                (tally.events - progress_tally.events) as f64
                    / progress_at.elapsed().as_secs_f64().max(1e-6)
            );
            progress_tally = tally.clone();
            progress_at = Instant::now();
        }
    };
    out.flush().context("writing events to stdout")?;
    report(metrics, &tally, &mut reported);
    tally.elapsed = began.elapsed();
    Ok((tally, outcome))
}

/// Moves what changed since the last report into the shared metrics.
fn report(metrics: &Metrics, tally: &Tally, reported: &mut Tally) {
    let new_events = tally.events - reported.events;
    if new_events == 0 {
        return;
    }
    metrics.add("success_count", new_events as f64);
    metrics.add("total_processed", new_events as f64);
    metrics.add("total_events_received", new_events as f64);
    if let Some(ledger) = tally.last_ledger {
        metrics.set("last_processed_ledger", f64::from(ledger));
    }
    *reported = tally.clone();
}

/// Polls `future` once: its output if it is ready now, `None` if it would wait.
pub async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) == Some("healthcheck") {
        return component::healthcheck();
    }
    component::run(
        IDENTITY.name,
        || ConsumerConfig::from_env(args),
        |env, config| async move {
            let metadata = HashMap::from([
                (
                    "processor_address".to_string(),
                    config.processor_address.clone(),
                ),
                ("ledger_range".to_string(), config.range.to_string()),
            ]);
            let running = component::start(&IDENTITY, env, metadata)?;
            let (trigger, shutdown) = shutdown::channel();
            tokio::spawn(async move {
                let signal = shutdown::signalled().await;
                log::info!("{signal} received, stopping");
                trigger.trigger();
            });
            let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let result = consume(&config, &running.metrics, shutdown, &mut out).await;
            drop(out);
            let (tally, outcome) = result?;
            let outcome = match outcome {
                Outcome::Completed => "completed",
                Outcome::Stopped => "stopped",
            };
            let summary = tally.summary_json(config.range, outcome);
            // stderr, so stdout stays one event per line.
            eprintln!("consumer-app summary: {summary}");
            Ok(ExitCode::SUCCESS)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_proto::token_transfer::{EventMeta, Fee, Transfer};

    fn parse(args: &[&str], address: Option<&str>) -> Result<ConsumerConfig, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        ConsumerConfig::from_lookup(&args, |key| {
            (key == "TTP_SERVICE_ADDRESS")
                .then(|| address.map(str::to_string))
                .flatten()
        })
    }

    #[test]
    fn print_events_can_be_turned_off() {
        let args = ["1".to_string(), "2".to_string()];
        let with = |value: &str| {
            ConsumerConfig::from_lookup(&args, |key| {
                (key == "PRINT_EVENTS").then(|| value.to_string())
            })
        };
        assert!(parse(&["1", "2"], None).unwrap().print_events);
        assert!(with("TRUE").unwrap().print_events);
        assert!(!with("false").unwrap().print_events);
        let err = with("sometimes").unwrap_err();
        assert!(err.starts_with("PRINT_EVENTS:"), "{err}");
    }

    #[test]
    fn start_and_end_are_positional_and_checked() {
        let config = parse(&["997", "998"], None).unwrap();
        assert_eq!(config.processor_address, "localhost:50051");
        assert_eq!(
            config.range,
            LedgerRange {
                start: 997,
                end: Some(998)
            }
        );
        assert!(config.print_events);
        let live = parse(&["10048", "0"], Some("ttp-processor:50051")).unwrap();
        assert_eq!(live.range.end, None);
        assert_eq!(live.processor_address, "ttp-processor:50051");

        let err = parse(&[], None).unwrap_err();
        assert!(err.contains("<start_ledger>"), "{err}");
        let err = parse(&["997"], None).unwrap_err();
        assert!(err.contains("<end_ledger>"), "{err}");
        let err = parse(&["997", "x"], None).unwrap_err();
        assert!(err.starts_with("<end_ledger>"), "{err}");
        let err = parse(&["998", "997"], None).unwrap_err();
        assert!(err.contains("before start_ledger"), "{err}");
        let err = parse(&["1", "2", "3"], None).unwrap_err();
        assert!(err.contains("unexpected argument"), "{err}");
        let err = parse(&["1", "2"], Some("no such address")).unwrap_err();
        assert!(err.starts_with("TTP_SERVICE_ADDRESS:"), "{err}");
    }

    #[test]
    fn the_tally_counts_kinds_and_ledgers() {
        let meta = |ledger_sequence| {
            Some(EventMeta {
                ledger_sequence,
                ..Default::default()
            })
        };
        let fee = |ledger| TokenTransferEvent {
            meta: meta(ledger),
            event: Some(Event::Fee(Fee::default())),
        };
        let transfer = |ledger| TokenTransferEvent {
            meta: meta(ledger),
            event: Some(Event::Transfer(Transfer::default())),
        };
        let mut tally = Tally::default();
        for event in [fee(997), fee(997), transfer(997), fee(998)] {
            tally.add(&event);
        }
        tally.add(&TokenTransferEvent {
            meta: meta(998),
            event: None,
        });
        assert_eq!(tally.events, 5);
        assert_eq!(tally.count("fee"), 3);
        assert_eq!(tally.count("transfer"), 1);
        assert_eq!(tally.count("mint"), 0);
        assert_eq!(tally.unknown, 1);
        assert_eq!(tally.ledgers_with_events, 2);
        let summary = tally.summary_json(
            LedgerRange {
                start: 997,
                end: Some(998),
            },
            "completed",
        );
        assert_eq!(summary["events"], 5);
        assert_eq!(summary["by_kind"]["fee"], 3);
        assert_eq!(summary["by_kind"]["unknown"], 1);
        assert_eq!(summary["end_ledger"], 998);
        assert_eq!(summary["outcome"], "completed");
        assert!(
            summary.get("events_per_second").is_none(),
            "no time, no rate"
        );
        tally.elapsed = Duration::from_secs(2);
        let summary = tally.summary_json(
            LedgerRange {
                start: 997,
                end: Some(998),
            },
            "completed",
        );
        assert_eq!(summary["events_per_second"], 3.0);
        assert_eq!(summary["ledgers_per_second"], 1.0);
        assert_eq!(summary["elapsed_seconds"], 2.0);
    }

    #[test]
    fn metrics_are_reported_in_batches() {
        let metrics = Metrics::with_keys(IDENTITY.metric_keys);
        let mut tally = Tally::default();
        let mut reported = Tally::default();
        for _ in 0..3 {
            tally.add(&TokenTransferEvent {
                meta: Some(EventMeta {
                    ledger_sequence: 7,
                    ..Default::default()
                }),
                event: Some(Event::Fee(Fee::default())),
            });
        }
        report(&metrics, &tally, &mut reported);
        report(&metrics, &tally, &mut reported);
        assert_eq!(metrics.get("total_events_received"), 3.0);
        assert_eq!(metrics.get("success_count"), 3.0);
        assert_eq!(metrics.get("last_processed_ledger"), 7.0);
    }
}
