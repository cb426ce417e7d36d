//! Events taken from a stream and given to the outlets in bursts: one queue wake-up per burst
//! instead of one per event.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use anyhow::Result;
use flowctl_proto::relayed::RawEvent;
use tokio_stream::Stream;
use tonic::codegen::Bytes;
use tonic::{Status, Streaming};

use super::outlet::{Break, Outlet};

/// Events and bytes received at most per burst (a burst is queued whole, so it is held whole).
pub(super) const BURST_EVENTS: usize = 1024;
pub(super) const BURST_BYTES: usize = 1 << 20;

/// A stream's events in bursts: the next event (waited for) and those already received after
/// it, so a queue takes them with one wake-up instead of one per event.
pub(super) struct Bursts {
    stream: Streaming<RawEvent>,
    /// A failure that followed the events of the last burst, for the next call.
    failed: Option<Status>,
}

impl Bursts {
    pub(super) fn new(stream: Streaming<RawEvent>) -> Bursts {
        Bursts {
            stream,
            failed: None,
        }
    }

    /// The next burst, in order; empty once the stream has ended.
    pub(super) async fn next(&mut self) -> Result<Vec<RawEvent>, Status> {
        if let Some(status) = self.failed.take() {
            return Err(status);
        }
        let mut burst = Vec::new();
        let mut bytes = match self.stream.message().await? {
            Some(event) => {
                let bytes = event.bytes.len();
                burst.push(event);
                bytes
            }
            None => return Ok(burst),
        };
        while burst.len() < BURST_EVENTS && bytes < BURST_BYTES {
            let ready =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut self.stream).poll_next(cx)))
                    .await;
            match ready {
                Poll::Ready(Some(Ok(event))) => {
                    bytes += event.bytes.len();
                    burst.push(event);
                }
                Poll::Ready(Some(Err(status))) => {
                    self.failed = Some(status);
                    break;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Ok(burst)
    }
}

/// Gives `events` to every outlet that takes their types (one batch per outlet, in order),
/// waiting while an outlet's queue is full.
pub(super) async fn send_to_outlets(
    from: &str,
    events: &[RawEvent],
    out: &[Outlet],
) -> Result<(), Break> {
    for outlet in out {
        // A clone of `Bytes` shares the buffer: no copy per outlet.
        let batch: Vec<Bytes> = events
            .iter()
            .filter(|event| outlet.takes(&event.head.r#type))
            .map(|event| event.bytes.clone())
            .collect();
        let count = batch.len() as u64;
        if count == 0 {
            continue;
        }
        if outlet.sender.send(batch).await.is_err() {
            return Err(Break::Downstream(format!(
                "relay: edge {from} -> {} broke: {} stopped taking events",
                outlet.to, outlet.to
            )));
        }
        outlet.count.events.fetch_add(count, Ordering::Relaxed);
    }
    Ok(())
}
