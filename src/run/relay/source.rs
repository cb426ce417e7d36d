//! A source's `StreamEvents`, forwarded to its outlets, and resumed from the last event
//! forwarded when its container is restarted.

use std::time::Duration;

use anyhow::Result;
use flowctl_proto::flowctl::v1::StreamRequest;
use flowctl_proto::relayed::{encoded, RawEvent, RawEventCodec};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::bursts::{send_to_outlets, Bursts};
use super::connect::connect;
use super::outlet::{ready_client, Break, Outlet};
use super::RunView;
use super::{RelayNode, EXIT_PATIENCE};

/// The last event a source's edges were given: its `stellar_cursor`
/// `(ledger_sequence, index_in_ledger)`.
pub(super) type Cursor = (u64, u32);

/// A source's `StreamEvents`, forwarded to its outlets. When the source's container dies and
/// is restarted (`restart:`), the new container is dialled once it is ready and asked to
/// stream again from the ledger of the last event forwarded; the events up to and including
/// that one are dropped, so every event goes on exactly once.
pub(super) async fn run_source(
    node: &RelayNode,
    mut channel: Channel,
    out: &[Outlet],
    broke: &impl Fn(&Status) -> Break,
    run: &RunView,
) -> Result<(), Break> {
    let path = PathAndQuery::from_static(node.service.path());
    let mut attempt = run.events.snapshot().attempt_of(&node.id);
    let mut last: Option<Cursor> = None;
    loop {
        let mut params = node.params.clone();
        if let Some((ledger, _)) = last {
            params.insert("start_ledger".into(), ledger.to_string());
        }
        let request = StreamRequest {
            params,
            ..Default::default()
        };
        let streamed = async {
            let stream = ready_client(channel.clone(), broke)
                .await?
                .server_streaming(
                    tonic::Request::new(encoded(&request)),
                    path.clone(),
                    RawEventCodec::events(),
                )
                .await
                .map_err(|s| broke(&s))?
                .into_inner();
            forward_after(&node.id, stream, out, broke, &mut last).await
        };
        let error = match streamed.await {
            Err(Break::Status(error)) => error,
            other => return other,
        };
        let Some(next) = replacement(node, attempt, run).await else {
            return Err(Break::Status(error));
        };
        attempt = next;
        let address = run
            .reachable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&node.id)
            .and_then(|ports| ports.iter().find(|p| p.container_port == node.grpc_port))
            .copied();
        let Some(port) = address else {
            return Err(Break::Status(format!(
                "{error} (restarted, but flowctl cannot reach its new container's gRPC port {})",
                node.grpc_port
            )));
        };
        let redial = RelayNode {
            address: port.address,
            network: port.network,
            ..node.clone()
        };
        channel = connect(&redial).await.map_err(Break::Status)?;
        run.console.info(match last {
            Some((ledger, index)) => format!(
                "relay: {} restarted (attempt {attempt}); resuming its stream at ledger {ledger} \
                 (dropping what it repeats, up to cursor {ledger}:{index})",
                node.id
            ),
            None => format!(
                "relay: {} restarted (attempt {attempt}); it had sent no event, streaming again",
                node.id
            ),
        });
    }
}

/// Waits, after `node`'s stream broke, to learn whether its container died and is being
/// replaced: the new attempt's number once it is ready, or `None` when the stream broke for
/// another reason (the container still runs, or exited 0) or no restart is left.
pub(super) async fn replacement(node: &RelayNode, attempt: u32, run: &RunView) -> Option<u32> {
    if node.restarts == 0 {
        return None;
    }
    // The engine reports a container's death a little after its connections break.
    let deadline = tokio::time::Instant::now() + EXIT_PATIENCE;
    loop {
        let state = run.events.snapshot();
        let current = state.attempt_of(&node.id);
        if current > attempt {
            if state.is_ready(&node.id, current) {
                return Some(current);
            }
        } else if let Some(exit) = state.exit_of(&node.id) {
            if exit.code == Some(0) || attempt >= node.restarts {
                return None;
            }
        } else if tokio::time::Instant::now() >= deadline {
            return None;
        }
        // The run itself fails (and drops the relay) if the replacement never becomes ready.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`forward`] for a source: skips the events at or before `last` (a resumed stream repeats
/// the ledger it resumes at) and records the cursor of each event forwarded. An event without
/// `stellar_cursor` cannot be placed, so a resumed stream must carry them.
pub(super) async fn forward_after(
    from: &str,
    stream: Streaming<RawEvent>,
    out: &[Outlet],
    broke: &impl Fn(&Status) -> Break,
    last: &mut Option<Cursor>,
) -> Result<(), Break> {
    let resumed_after = *last;
    let mut bursts = Bursts::new(stream);
    loop {
        let mut burst = bursts.next().await.map_err(|s| broke(&s))?;
        if burst.is_empty() {
            return Ok(());
        }
        let mut newest = None;
        let mut failed = None;
        burst.retain(|event| {
            let cursor = event
                .head
                .stellar_cursor
                .as_ref()
                .map(|c| (c.ledger_sequence, c.index_in_ledger));
            match (cursor, resumed_after) {
                _ if failed.is_some() => false,
                (Some(cursor), Some(after)) if cursor <= after => false,
                (None, Some(_)) => {
                    failed = Some(broke(&Status::failed_precondition(
                        "it was restarted, and its events carry no stellar_cursor to resume its \
                         stream exactly",
                    )));
                    false
                }
                _ => {
                    newest = cursor.or(newest);
                    true
                }
            }
        });
        send_to_outlets(from, &burst, out).await?;
        if newest.is_some() {
            *last = newest;
        }
        if let Some(failed) = failed {
            return Err(failed);
        }
    }
}

/// Copies `stream` into every outlet that takes each event's type, waiting while an outlet's
/// queue is full. Ends when the stream ends (dropping the outlets ends their queues).
pub(super) async fn forward(
    from: &str,
    stream: Streaming<RawEvent>,
    out: &[Outlet],
    broke: &impl Fn(&Status) -> Break,
) -> Result<(), Break> {
    let mut bursts = Bursts::new(stream);
    loop {
        let burst = bursts.next().await.map_err(|s| broke(&s))?;
        if burst.is_empty() {
            return Ok(());
        }
        send_to_outlets(from, &burst, out).await?;
    }
}
