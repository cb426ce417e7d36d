//! The flowctl.v1 relay: components of the current generation never dial their inputs, so
//! flowctl does. For every component whose `grpc.service` is a `flowctl.v1.*Service` it dials
//! the component and wires the pipeline's `inputs` graph:
//! `SourceService/StreamEvents` -> `ProcessorService/Process` (bidirectional) ->
//! `ConsumerService/Consume`.
//!
//! Invariants: every edge is a bounded queue ([`EDGE_CAPACITY`] events) and a sender waits when
//! it is full, so a slow consumer slows its inputs down to the source (HTTP/2 flow control
//! carries the wait over the wire) and flowctl's memory stays bounded; an event reaches a
//! component only if its type is one the component takes; nothing is dropped. The relay ends
//! when every source's stream has ended and every consumer has answered `ConsumeResponse`, or
//! at the first broken edge, named by both components and the gRPC status.
//!
//! The rest of flowctl is synchronous: the relay runs on a tokio runtime on its own thread and
//! reports its end to the run through [`RunEvents::relay_ended`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use flowctl_proto::flowctl::v1::consumer_service_client::ConsumerServiceClient;
use flowctl_proto::flowctl::v1::processor_service_client::ProcessorServiceClient;
use flowctl_proto::flowctl::v1::source_service_client::SourceServiceClient;
use flowctl_proto::flowctl::v1::{Event, StreamRequest};

use super::notices::Reachable;
use crate::events::RunEvents;
use crate::logs::Console;
use crate::plan::{ComponentPlan, GrpcService, RunPlan};

/// Events queued per edge: enough to keep both sides busy, small enough that a stalled
/// consumer holds a bounded number of events in flowctl.
pub const EDGE_CAPACITY: usize = 16;
/// How long the relay keeps trying to connect to a component that is ready but whose gRPC
/// port is not open yet (upstream's processor opens it only after registering).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Events relayed over one edge of the `inputs` graph.
#[derive(Debug)]
pub struct EdgeCount {
    pub from: String,
    pub to: String,
    pub events: AtomicU64,
}

/// The relay's edges with their counts, for the status table; empty without v1 components.
pub type EdgeCounts = Mutex<Vec<Arc<EdgeCount>>>;

/// One relayed component, resolved from the plan before the relay starts.
#[derive(Debug, Clone)]
pub struct RelayNode {
    pub id: String,
    pub service: GrpcService,
    /// Where flowctl reaches its gRPC port.
    pub address: SocketAddr,
    /// Its inputs (all relayed components).
    pub inputs: Vec<String>,
    /// Event types it takes (the file's `input_event_types`); empty: ask `GetInfo`.
    pub accepts: Vec<String>,
    /// `StreamRequest.params` of a source.
    pub params: HashMap<String, String>,
}

/// The relayed components of `plan`, or an error naming what cannot be relayed: a v1
/// component whose gRPC port flowctl cannot reach, or one fed by a first-generation component
/// (those dial their inputs themselves; a v1 component cannot be dialled into).
pub fn nodes_of(plan: &RunPlan, reachable: &Reachable) -> Result<Vec<RelayNode>> {
    let reachable = reachable
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let is_relayed = |c: &ComponentPlan| c.grpc.as_ref().is_some_and(|g| g.service.is_v1());
    let mut nodes = Vec::new();
    for component in plan.components.iter().filter(|c| is_relayed(c)) {
        let Some(grpc) = &component.grpc else {
            continue;
        };
        for input in &component.inputs {
            if plan.component(input).is_some_and(|c| !is_relayed(c)) {
                return Err(anyhow!(
                    "component `{}` ({}) has input `{input}`, which is not a flowctl.v1 \
                     component: flowctl relays only between flowctl.v1 components",
                    component.id,
                    grpc.service
                ));
            }
        }
        let address = reachable
            .get(&component.id)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|port| port.container_port == grpc.container_port)
            })
            .map(|port| port.address)
            .ok_or_else(|| {
                anyhow!(
                    "component `{}`: flowctl cannot reach its gRPC port {} to relay {}",
                    component.id,
                    grpc.container_port,
                    grpc.service
                )
            })?;
        nodes.push(RelayNode {
            id: component.id.clone(),
            service: grpc.service,
            address,
            inputs: component.inputs.clone(),
            accepts: component.input_event_types.clone(),
            params: stream_params(component),
        });
    }
    Ok(nodes)
}

/// `start_ledger`/`end_ledger` for a source: `grpc.verify` if the file has it, else the
/// component's `START_LEDGER`/`END_LEDGER`.
fn stream_params(component: &ComponentPlan) -> HashMap<String, String> {
    let mut params = HashMap::new();
    if component.grpc.as_ref().map(|g| g.service) != Some(GrpcService::V1Source) {
        return params;
    }
    let verify = component.grpc.as_ref();
    let start = verify
        .and_then(|g| g.start_ledger)
        .map(|n| n.to_string())
        .or_else(|| component.env.get("START_LEDGER").cloned());
    let end = verify
        .and_then(|g| g.end_ledger)
        .map(|n| n.to_string())
        .or_else(|| component.env.get("END_LEDGER").cloned());
    for (key, value) in [("start_ledger", start), ("end_ledger", end)] {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            params.insert(key.to_string(), value.trim().to_string());
        }
    }
    params
}

/// What a consumer answered when its stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAnswer {
    pub component: String,
    pub events_consumed: i64,
    pub events_failed: i64,
    pub errors: Vec<String>,
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
        console: Console,
    ) -> Result<Relay> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("relay: cannot start its tokio runtime")?;
        let edges = edges_of(&nodes);
        *counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = edges.clone();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let final_counts = counts.clone();
        let thread = thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                let end = runtime.block_on(async {
                    tokio::select! {
                        end = relay(nodes, edges) => Some(end),
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

fn answer_line(answer: &ConsumerAnswer) -> String {
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
    line
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
fn edges_of(nodes: &[RelayNode]) -> Vec<Arc<EdgeCount>> {
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

/// Where one component's output goes: one downstream, the types it takes, its edge's count.
struct Outlet {
    to: String,
    accepts: Vec<String>,
    sender: mpsc::Sender<Event>,
    count: Arc<EdgeCount>,
}

/// Why a task of the relay stopped early. A component's own gRPC status explains more than
/// "the next component stopped taking events", so it is preferred.
enum Break {
    Status(String),
    Downstream(String),
}

async fn connect(node: &RelayNode) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", node.address))
        .map_err(|e| format!("relay: {}: bad address {}: {e}", node.id, node.address))?
        .connect_timeout(Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut wait = Duration::from_millis(20);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if tokio::time::Instant::now() + wait >= deadline => {
                return Err(format!(
                    "relay: cannot connect to {} ({}) at {}: {e}",
                    node.id, node.service, node.address
                ))
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// The event types `node` takes: the file's list, else its `GetInfo`, else every type.
async fn accepted_types(node: &RelayNode, channel: &Channel) -> Vec<String> {
    if !node.accepts.is_empty() {
        return node.accepts.clone();
    }
    let info = match node.service {
        GrpcService::V1Processor => ProcessorServiceClient::new(channel.clone())
            .get_info(())
            .await
            .map(|r| r.into_inner()),
        GrpcService::V1Consumer => ConsumerServiceClient::new(channel.clone())
            .get_info(())
            .await
            .map(|r| r.into_inner()),
        _ => return Vec::new(),
    };
    match info {
        Ok(info) => info.input_event_types,
        Err(status) => {
            log::debug!(
                "relay: {}: GetInfo failed ({}), relaying every event type",
                node.id,
                status_text(&status)
            );
            Vec::new()
        }
    }
}

fn status_text(status: &Status) -> String {
    format!("gRPC status {:?}: {}", status.code(), status.message())
}

/// Runs the whole graph until it ends; the consumers' answers in component order.
async fn relay(
    nodes: Vec<RelayNode>,
    edges: Vec<Arc<EdgeCount>>,
) -> Result<Vec<ConsumerAnswer>, String> {
    let mut channels = BTreeMap::new();
    for node in &nodes {
        channels.insert(node.id.clone(), connect(node).await?);
    }
    // One queue into each component with inputs; each input edge holds a sender of it, so the
    // queue ends when the last input has ended.
    let mut senders = HashMap::new();
    let mut receivers = HashMap::new();
    for node in nodes.iter().filter(|n| !n.inputs.is_empty()) {
        let (sender, receiver) = mpsc::channel(EDGE_CAPACITY);
        senders.insert(node.id.clone(), sender);
        receivers.insert(node.id.clone(), receiver);
    }
    let mut accepts = HashMap::new();
    for node in nodes.iter().filter(|n| !n.inputs.is_empty()) {
        accepts.insert(
            node.id.clone(),
            accepted_types(node, &channels[&node.id]).await,
        );
    }
    let mut outlets: HashMap<String, Vec<Outlet>> = HashMap::new();
    for edge in &edges {
        if let Some(sender) = senders.get(&edge.to) {
            outlets.entry(edge.from.clone()).or_default().push(Outlet {
                to: edge.to.clone(),
                accepts: accepts.get(&edge.to).cloned().unwrap_or_default(),
                sender: sender.clone(),
                count: edge.clone(),
            });
        }
    }
    // Only the outlets may hold senders, or no queue would ever end.
    drop(senders);

    let mut tasks: JoinSet<Result<Option<ConsumerAnswer>, Break>> = JoinSet::new();
    for node in nodes {
        let channel = channels[&node.id].clone();
        let out = outlets.remove(&node.id).unwrap_or_default();
        let input = receivers.remove(&node.id);
        tasks.spawn(run_node(node, channel, input, out));
    }
    let mut answers = Vec::new();
    let mut downstream_break = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(Some(answer))) => answers.push(answer),
            Ok(Ok(None)) => {}
            Ok(Err(Break::Status(error))) => {
                tasks.abort_all();
                return Err(error);
            }
            Ok(Err(Break::Downstream(error))) => {
                downstream_break.get_or_insert(error);
            }
            Err(e) if e.is_panic() => {
                tasks.abort_all();
                return Err(format!("relay: a relay task panicked: {e}"));
            }
            Err(_) => {}
        }
    }
    if let Some(error) = downstream_break {
        return Err(error);
    }
    answers.sort_by(|a, b| a.component.cmp(&b.component));
    Ok(answers)
}

/// One component's call, fed from `input` and feeding `out`.
async fn run_node(
    node: RelayNode,
    channel: Channel,
    input: Option<mpsc::Receiver<Event>>,
    out: Vec<Outlet>,
) -> Result<Option<ConsumerAnswer>, Break> {
    let inputs = node.inputs.join(", ");
    let outputs: Vec<&str> = out.iter().map(|o| o.to.as_str()).collect();
    let outputs = outputs.join(", ");
    let broke = |status: &Status| {
        let edge = match (inputs.is_empty(), outputs.is_empty()) {
            (true, _) => format!("{} -> {outputs}", node.id),
            (false, true) => format!("{inputs} -> {}", node.id),
            (false, false) => format!("{inputs} -> {} -> {outputs}", node.id),
        };
        Break::Status(format!(
            "relay: edge {edge} broke: {} {}.{} failed with {}",
            node.id,
            node.service,
            node.service.method(),
            status_text(status)
        ))
    };
    let events = input.map(ReceiverStream::new);
    match node.service {
        GrpcService::V1Source => {
            let request = StreamRequest {
                params: node.params.clone(),
                ..Default::default()
            };
            let stream = SourceServiceClient::new(channel)
                .stream_events(request)
                .await
                .map_err(|s| broke(&s))?
                .into_inner();
            forward(&node.id, stream, &out, &broke).await?;
            Ok(None)
        }
        GrpcService::V1Processor => {
            let Some(events) = events else {
                return Ok(None);
            };
            let stream = ProcessorServiceClient::new(channel)
                .process(events)
                .await
                .map_err(|s| broke(&s))?
                .into_inner();
            forward(&node.id, stream, &out, &broke).await?;
            Ok(None)
        }
        GrpcService::V1Consumer => {
            let Some(events) = events else {
                return Ok(None);
            };
            let answer = ConsumerServiceClient::new(channel)
                .consume(events)
                .await
                .map_err(|s| broke(&s))?
                .into_inner();
            Ok(Some(ConsumerAnswer {
                component: node.id.clone(),
                events_consumed: answer.events_consumed,
                events_failed: answer.events_failed,
                errors: answer.errors,
            }))
        }
        GrpcService::RawLedgers | GrpcService::TokenTransferEvents => Ok(None),
    }
}

/// Copies `stream` into every outlet that takes each event's type, waiting while an outlet's
/// queue is full. Ends when the stream ends (dropping the outlets ends their queues).
async fn forward(
    from: &str,
    mut stream: Streaming<Event>,
    out: &[Outlet],
    broke: &impl Fn(&Status) -> Break,
) -> Result<(), Break> {
    while let Some(event) = stream.message().await.map_err(|s| broke(&s))? {
        for outlet in out {
            if !outlet.accepts.is_empty() && !outlet.accepts.contains(&event.r#type) {
                continue;
            }
            if outlet.sender.send(event.clone()).await.is_err() {
                return Err(Break::Downstream(format!(
                    "relay: edge {from} -> {} broke: {} stopped taking events",
                    outlet.to, outlet.to
                )));
            }
            outlet.count.events.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
