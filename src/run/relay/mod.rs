//! The flowctl.v1 relay: components of the current generation never dial their inputs, so
//! flowctl does. For every component whose `grpc.service` is a `flowctl.v1.*Service` it dials
//! the component and wires the pipeline's `inputs` graph:
//! `SourceService/StreamEvents` -> `ProcessorService/Process` (bidirectional) ->
//! `ConsumerService/Consume`.
//!
//! Invariants: every component's input is a bounded queue ([`EDGE_BATCHES`] batches and
//! [`EDGE_BYTES`] bytes) and a sender waits when it is full, so a slow consumer slows its inputs down to the source (HTTP/2 flow control
//! carries the wait over the wire) and flowctl's memory stays bounded; an event reaches a
//! component only if its type is one the component takes; nothing is dropped. The relay ends
//! when every source's stream has ended and every consumer has answered `ConsumeResponse` (and,
//! for a consumer whose writes outlast its answer, as upstream's SDK one, finished them:
//! [`settle`]), or at the first broken edge, named by both components and the gRPC status. A source whose
//! container is restarted (`restart:`) is re-dialled and resumed from the `stellar_cursor` of
//! the last event forwarded, so each event goes on exactly once.
//!
//! The rest of flowctl is synchronous: the relay runs on a thread of its own that blocks on the
//! process's tokio runtime (`crate::runtime`), and reports its end to the run through [`RunEvents::relay_ended`].
//!
//! The files: [`nodes`] (which components are relayed, resolved from the plan), [`connect`]
//! (dialling a component), [`graph`] (the queues and one task per component), [`source`] (a
//! source's stream, resumed across restarts), [`settle`] (a consumer's writes after its answer)
//! and [`bursts`] (events taken and given on in
//! bursts). This file holds the handle the run keeps and the edges' counts.

mod bursts;
mod connect;
mod graph;
mod nodes;
mod outlet;
mod settle;
mod source;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::oneshot;

use super::reach::Reachable;
use crate::events::RunEvents;
use crate::logs::Console;
use crate::plan::{GrpcService, RunPlan};
/// Batches (events received at once) queued into a component.
pub const EDGE_BATCHES: usize = 64;
/// Bytes queued into a component: a few ledgers, so a stalled consumer holds a bounded amount
/// in flowctl whatever the size of its events.
pub const EDGE_BYTES: usize = 4 << 20;
/// HTTP/2 windows of the relay's calls: at the 64 KiB default a component streaming ledgers of
/// a megabyte waits for flowctl's window update every 64 KiB. They also bound what flowctl
/// buffers per call beside the queues.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 8 << 20;
/// How long the relay keeps trying to connect to a component that is ready but whose gRPC
/// port is not open yet (upstream's processor opens it only after registering).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// How long the relay waits, after a source's stream broke, for the engine to report that its
/// container died (then it waits for the replacement, if `restart:` allows one).
const EXIT_PATIENCE: Duration = Duration::from_secs(10);
/// Events relayed over one edge of the `inputs` graph.
#[derive(Debug)]
pub struct EdgeCount {
    pub from: String,
    pub to: String,
    pub events: AtomicU64,
}

/// The relay's edges with their counts, for the status table; empty without v1 components.
pub type EdgeCounts = Mutex<Vec<Arc<EdgeCount>>>;
/// What a consumer answered when its stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAnswer {
    pub component: String,
    pub events_consumed: i64,
    pub events_failed: i64,
    pub errors: Vec<String>,
    /// Its finished writes after the answer, when it reports them ([`settle`]).
    pub settled: Option<settle::Settled>,
}

/// A running relay. Dropping it stops the relay (its calls are cancelled).
#[derive(Debug)]
pub struct Relay {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying `nodes` on a thread of its own; its end (answers printed on `console`)
    /// is recorded in `events`. `counts` is filled with the edges before this returns.
    pub fn start(
        nodes: Vec<RelayNode>,
        counts: Arc<EdgeCounts>,
        events: Arc<RunEvents>,
        reachable: Arc<Reachable>,
        console: Console,
    ) -> Result<Relay> {
        let runtime = crate::runtime::shared().context("relay")?;
        let edges = edges_of(&nodes);
        *counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = edges.clone();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let final_counts = counts.clone();
        let run = Arc::new(RunView {
            events: events.clone(),
            reachable,
            console,
        });
        let thread = thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                let end = runtime.block_on(async {
                    tokio::select! {
                        end = relay(nodes, edges, run) => Some(end),
                        _ = shutdown_rx => None,
                    }
                });
                if end.is_some() {
                    for line in edge_lines(&final_counts) {
                        console.info(line);
                    }
                }
                match end {
                    Some(Ok(answers)) => {
                        for answer in &answers {
                            console.info(answer_line(answer));
                            if let Some(warning) = unsettled(answer) {
                                console.warn(warning);
                            }
                        }
                        events.relay_ended(Ok(()));
                    }
                    Some(Err(error)) => events.relay_ended(Err(error)),
                    None => {}
                }
            })
            .context("relay: cannot start its thread")?;
        Ok(Relay {
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(super) fn answer_line(answer: &ConsumerAnswer) -> String {
    let mut line = format!(
        "relay: {} answered: {} event(s) consumed, {} failed",
        answer.component, answer.events_consumed, answer.events_failed
    );
    if let Some(first) = answer.errors.first() {
        line.push_str(&format!(
            " ({} error(s), first: {first})",
            answer.errors.len()
        ));
    }
    if let Some(settled) = answer.settled.filter(|s| s.complete) {
        line.push_str(&format!(
            "; its writes finished: {} written, {} failed",
            settled.written, settled.failed
        ));
    }
    line
}

/// What to warn about a consumer's writes after its answer: some were still unfinished when
/// the relay stopped waiting, or failed after it answered.
pub(super) fn unsettled(answer: &ConsumerAnswer) -> Option<String> {
    let settled = answer.settled?;
    let late_failures = settled.failed - answer.events_failed;
    if !settled.complete {
        Some(format!(
            "relay: {} answered for {} event(s) but had finished writing only {} after {} s: \
             stopping it now may lose the rest (its writes outlast its answer)",
            answer.component,
            answer.events_consumed,
            settled.written + settled.failed,
            settle::SETTLE_PATIENCE.as_secs()
        ))
    } else if late_failures > 0 {
        Some(format!(
            "relay: {} answered {} event(s) consumed, but {late_failures} of its writes failed \
             afterwards (its log says why)",
            answer.component, answer.events_consumed
        ))
    } else {
        None
    }
}

/// A warning for each relayed processor that consumed events and emitted none although it
/// feeds others: a run that "completes" with nothing downstream usually means every event
/// failed in the processor (its log says why).
pub fn silent_processors(plan: &RunPlan, counts: &EdgeCounts) -> Vec<String> {
    let edges = counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let total = |pick: &dyn Fn(&EdgeCount) -> bool| -> (u64, usize) {
        edges
            .iter()
            .filter(|e| pick(e))
            .fold((0, 0), |(sum, n), e| {
                (sum + e.events.load(Ordering::Relaxed), n + 1)
            })
    };
    plan.components
        .iter()
        .filter(|c| {
            c.grpc
                .as_ref()
                .is_some_and(|g| g.service == GrpcService::V1Processor)
        })
        .filter_map(|c| {
            let (consumed, _) = total(&|e| e.to == c.id);
            let (emitted, outputs) = total(&|e| e.from == c.id);
            (consumed > 0 && emitted == 0 && outputs > 0).then(|| {
                format!(
                    "processor `{}` consumed {consumed} event(s) and emitted none: its log \
                     lines above say why (nothing reached what it feeds)",
                    c.id
                )
            })
        })
        .collect()
}

/// The status table's lines for the relay's edges.
pub fn edge_lines(counts: &EdgeCounts) -> Vec<String> {
    counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|edge| {
            format!(
                "relay {} -> {}: {} event(s)",
                edge.from,
                edge.to,
                edge.events.load(Ordering::Relaxed)
            )
        })
        .collect()
}

/// Every edge of the `inputs` graph between relayed components, in component order.
pub(super) fn edges_of(nodes: &[RelayNode]) -> Vec<Arc<EdgeCount>> {
    nodes
        .iter()
        .flat_map(|to| {
            to.inputs.iter().map(|from| {
                Arc::new(EdgeCount {
                    from: from.clone(),
                    to: to.id.clone(),
                    events: AtomicU64::new(0),
                })
            })
        })
        .collect()
}

use graph::relay;
pub use nodes::{nodes_of, RelayNode};

/// What the relay sees of the run: a source's restarts, and where its new container is.
struct RunView {
    pub(super) events: Arc<RunEvents>,
    pub(super) reachable: Arc<Reachable>,
    pub(super) console: Console,
}
