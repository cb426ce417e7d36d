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
//! when every source's stream has ended and every consumer has answered `ConsumeResponse`, or
//! at the first broken edge, named by both components and the gRPC status. A source whose
//! container is restarted (`restart:`) is re-dialled and resumed from the `stellar_cursor` of
//! the last event forwarded, so each event goes on exactly once.
//!
//! The rest of flowctl is synchronous: the relay runs on a tokio runtime on its own thread and
//! reports its end to the run through [`RunEvents::relay_ended`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_stream::Stream;
use tonic::codegen::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use flowctl_proto::flowctl::v1::consumer_service_client::ConsumerServiceClient;
use flowctl_proto::flowctl::v1::processor_service_client::ProcessorServiceClient;
use flowctl_proto::flowctl::v1::{ConsumeResponse, StreamRequest};
use flowctl_proto::relayed::{encoded, RawEvent, RawEventCodec, MAX_FRAME_BYTES};
use tonic::codegen::http::uri::PathAndQuery;

use super::edge_queue::{self, QueueReceiver, QueueSender};
use super::reach::Reachable;
use crate::events::RunEvents;
use crate::logs::Console;
use crate::plan::{ComponentPlan, GrpcService, RunPlan};

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

/// One relayed component, resolved from the plan before the relay starts.
#[derive(Debug, Clone)]
pub struct RelayNode {
    pub id: String,
    pub service: GrpcService,
    /// Where flowctl reaches its gRPC port.
    pub address: SocketAddr,
    /// Its gRPC port's address on the pipeline network, tried first (see
    /// [`PortAccess::network`](super::reach::PortAccess::network)).
    pub network: Option<SocketAddr>,
    /// Its inputs (all relayed components).
    pub inputs: Vec<String>,
    /// Event types it takes (the file's `input_event_types`); empty: ask `GetInfo`.
    pub accepts: Vec<String>,
    /// `StreamRequest.params` of a source.
    pub params: HashMap<String, String>,
    /// The container port of its gRPC service (to find a restarted container's address).
    pub grpc_port: u16,
    /// How often a source may be restarted (`restart:`); 0 for every other component, whose
    /// `restart:` validation refuses.
    pub restarts: u32,
}

/// The relayed components of `plan`, or an error naming what cannot be relayed: a v1
/// component whose gRPC port flowctl cannot reach, or one fed by a first-generation component
/// (those dial their inputs themselves; a v1 component cannot be dialled into).
pub fn nodes_of(plan: &RunPlan, reachable: &Reachable) -> Result<Vec<RelayNode>> {
    let reachable = reachable
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut nodes = Vec::new();
    for component in plan.components.iter().filter(|c| c.is_relayed()) {
        let Some(grpc) = &component.grpc else {
            continue;
        };
        for input in &component.inputs {
            if plan.component(input).is_some_and(|c| !c.is_relayed()) {
                return Err(anyhow!(
                    "component `{}` ({}) has input `{input}`, which is not a flowctl.v1 \
                     component: flowctl relays only between flowctl.v1 components",
                    component.id,
                    grpc.service
                ));
            }
        }
        let port = reachable
            .get(&component.id)
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|port| port.container_port == grpc.container_port)
            })
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
            address: port.address,
            network: port.network,
            inputs: component.inputs.clone(),
            accepts: component.input_event_types.clone(),
            params: stream_params(component),
            grpc_port: grpc.container_port,
            restarts: match grpc.service {
                GrpcService::V1Source => component.restart.max_restarts(),
                _ => 0,
            },
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
        reachable: Arc<Reachable>,
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
    /// Encoded `flowctl.v1.Event`s, passed on as they came.
    sender: QueueSender,
    count: Arc<EdgeCount>,
}

impl Outlet {
    /// Whether events of `event_type` go this way (an empty list takes every type).
    fn takes(&self, event_type: &[u8]) -> bool {
        self.accepts.is_empty() || self.accepts.iter().any(|t| t.as_bytes() == event_type)
    }
}

/// Why a task of the relay stopped early. A component's own gRPC status explains more than
/// "the next component stopped taking events", so it is preferred.
enum Break {
    Status(String),
    Downstream(String),
}

/// How long the relay waits for a connection to a component's network address before it
/// takes the published port instead (an unreachable network answers nothing at all).
const NETWORK_PATIENCE: Duration = Duration::from_millis(300);

/// The relay's endpoint for `address` (`host:port`), with its HTTP/2 windows.
fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true))
}

/// A channel to `node`: at its network address if flowctl reaches it, else its published port.
async fn connect(node: &RelayNode) -> Result<Channel, String> {
    if let Some(network) = node.network {
        let direct = endpoint(&network.to_string()).map(|e| e.connect_timeout(NETWORK_PATIENCE));
        if let Ok(endpoint) = direct {
            match endpoint.connect().await {
                Ok(channel) => {
                    log::debug!("relay: {} reached at {network}", node.id);
                    return Ok(channel);
                }
                Err(e) => log::debug!(
                    "relay: {} not reachable at {network} ({e}); using {}",
                    node.id,
                    node.address
                ),
            }
        }
    }
    connect_published(node).await
}

async fn connect_published(node: &RelayNode) -> Result<Channel, String> {
    let endpoint = endpoint(&node.address.to_string())
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

/// What the relay sees of the run: a source's restarts, and where its new container is.
struct RunView {
    events: Arc<RunEvents>,
    reachable: Arc<Reachable>,
    console: Console,
}

/// Runs the whole graph until it ends; the consumers' answers in component order.
async fn relay(
    nodes: Vec<RelayNode>,
    edges: Vec<Arc<EdgeCount>>,
    run: Arc<RunView>,
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
        let (sender, receiver) = edge_queue::queue(EDGE_BATCHES, EDGE_BYTES);
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
        tasks.spawn(run_node(node, channel, input, out, run.clone()));
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
    input: Option<QueueReceiver>,
    out: Vec<Outlet>,
    run: Arc<RunView>,
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
    let events = input.map(QueueReceiver::into_stream);
    // Events are relayed as the bytes they came as (flowctl_proto::relayed): the relay reads
    // only their type and cursor.
    if node.service == GrpcService::V1Source {
        run_source(&node, channel, &out, &broke, &run).await?;
        return Ok(None);
    }
    let path = PathAndQuery::from_static(node.service.path());
    let mut client = ready_client(channel, &broke).await?;
    match node.service {
        GrpcService::V1Processor => {
            let Some(events) = events else {
                return Ok(None);
            };
            let stream = client
                .streaming(tonic::Request::new(events), path, RawEventCodec::events())
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
            let answer: ConsumeResponse = client
                .client_streaming(tonic::Request::new(events), path, RawEventCodec::answer())
                .await
                .map_err(|s| broke(&s))?
                .into_inner()
                .decode_as()
                .map_err(|s| broke(&s))?;
            Ok(Some(ConsumerAnswer {
                component: node.id.clone(),
                events_consumed: answer.events_consumed,
                events_failed: answer.events_failed,
                errors: answer.errors,
            }))
        }
        GrpcService::V1Source | GrpcService::RawLedgers | GrpcService::TokenTransferEvents => {
            Ok(None)
        }
    }
}

async fn ready_client(
    channel: Channel,
    broke: &impl Fn(&Status) -> Break,
) -> Result<tonic::client::Grpc<Channel>, Break> {
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|e| {
        broke(&Status::unavailable(format!(
            "the connection is not ready: {e}"
        )))
    })?;
    Ok(client)
}

/// The last event a source's edges were given: its `stellar_cursor`
/// `(ledger_sequence, index_in_ledger)`.
type Cursor = (u64, u32);

/// A source's `StreamEvents`, forwarded to its outlets. When the source's container dies and
/// is restarted (`restart:`), the new container is dialled once it is ready and asked to
/// stream again from the ledger of the last event forwarded; the events up to and including
/// that one are dropped, so every event goes on exactly once.
async fn run_source(
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
async fn replacement(node: &RelayNode, attempt: u32, run: &RunView) -> Option<u32> {
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
async fn forward_after(
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
async fn forward(
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

/// Events and bytes received at most per burst (a burst is queued whole, so it is held whole).
const BURST_EVENTS: usize = 1024;
const BURST_BYTES: usize = 1 << 20;

/// A stream's events in bursts: the next event (waited for) and those already received after
/// it, so a queue takes them with one wake-up instead of one per event.
struct Bursts {
    stream: Streaming<RawEvent>,
    /// A failure that followed the events of the last burst, for the next call.
    failed: Option<Status>,
}

impl Bursts {
    fn new(stream: Streaming<RawEvent>) -> Bursts {
        Bursts {
            stream,
            failed: None,
        }
    }

    /// The next burst, in order; empty once the stream has ended.
    async fn next(&mut self) -> Result<Vec<RawEvent>, Status> {
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
async fn send_to_outlets(from: &str, events: &[RawEvent], out: &[Outlet]) -> Result<(), Break> {
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

#[cfg(test)]
mod tests {
    //! Real gRPC servers of the three v1 services on 127.0.0.1 (random ports), relayed by the
    //! real [`Relay`] on its own thread.

    use super::*;
    use std::pin::Pin;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use flowctl_proto::flowctl::v1::consumer_service_server::{
        ConsumerService, ConsumerServiceServer,
    };
    use flowctl_proto::flowctl::v1::processor_service_server::{
        ProcessorService, ProcessorServiceServer,
    };
    use flowctl_proto::flowctl::v1::source_service_server::{SourceService, SourceServiceServer};
    use flowctl_proto::flowctl::v1::{
        ComponentInfo, ConsumeResponse, Event, HealthCheckRequest, HealthCheckResponse,
        SaveStateRequest, StateRequest, StateResponse,
    };
    use tokio_stream::{Stream, StreamExt};
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::Server;
    use tonic::{Request, Response};

    type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

    /// Streams `count` events of `payload` bytes, types alternating between `types`, counting
    /// what it has handed to gRPC in `produced`.
    struct TestSource {
        count: u64,
        payload: usize,
        types: Vec<&'static str>,
        produced: Arc<AtomicU64>,
        params: Arc<Mutex<HashMap<String, String>>>,
    }

    #[tonic::async_trait]
    impl SourceService for TestSource {
        type StreamEventsStream = EventStream;
        async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
            Err(Status::unimplemented("test source"))
        }
        async fn health_check(
            &self,
            _: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            Err(Status::unimplemented("test source"))
        }
        async fn stream_events(
            &self,
            request: Request<StreamRequest>,
        ) -> Result<Response<EventStream>, Status> {
            *self.params.lock().unwrap() = request.into_inner().params;
            // A queue of one: the source produces only as fast as gRPC takes its events.
            let (sender, receiver) = mpsc::channel(1);
            let (count, payload, types, produced) = (
                self.count,
                self.payload,
                self.types.clone(),
                self.produced.clone(),
            );
            tokio::spawn(async move {
                for i in 0..count {
                    let event = Event {
                        id: i.to_string(),
                        r#type: types[i as usize % types.len()].to_string(),
                        payload: vec![7; payload],
                        ..Default::default()
                    };
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                    produced.fetch_add(1, Ordering::SeqCst);
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
        }
        async fn get_state(
            &self,
            _: Request<StateRequest>,
        ) -> Result<Response<StateResponse>, Status> {
            Err(Status::unimplemented("test source"))
        }
        async fn save_state(&self, _: Request<SaveStateRequest>) -> Result<Response<()>, Status> {
            Err(Status::unimplemented("test source"))
        }
    }

    /// Passes events on (type `processed.v1`); fails with INTERNAL after `fail_after` of them.
    struct TestProcessor {
        fail_after: Option<usize>,
    }

    #[tonic::async_trait]
    impl ProcessorService for TestProcessor {
        type ProcessStream = EventStream;
        async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
            Err(Status::unimplemented("test processor"))
        }
        async fn health_check(
            &self,
            _: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            Err(Status::unimplemented("test processor"))
        }
        async fn process(
            &self,
            request: Request<Streaming<Event>>,
        ) -> Result<Response<EventStream>, Status> {
            let fail_after = self.fail_after;
            let mut seen = 0;
            let out = request.into_inner().map(move |event| {
                let i = seen;
                seen += 1;
                if fail_after.is_some_and(|n| i >= n) {
                    return Err(Status::internal(format!("boom at event {i}")));
                }
                event.map(|event| Event {
                    r#type: "processed.v1".into(),
                    ..event
                })
            });
            Ok(Response::new(Box::pin(out)))
        }
    }

    /// Takes events slowly (`delay` each), records their ids and how far the source was ahead
    /// of it at each event.
    struct TestConsumer {
        delay: Duration,
        info_types: Vec<String>,
        received: Arc<Mutex<Vec<String>>>,
        produced: Arc<AtomicU64>,
        max_lag: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl ConsumerService for TestConsumer {
        async fn get_info(&self, _: Request<()>) -> Result<Response<ComponentInfo>, Status> {
            Ok(Response::new(ComponentInfo {
                input_event_types: self.info_types.clone(),
                ..Default::default()
            }))
        }
        async fn health_check(
            &self,
            _: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            Err(Status::unimplemented("test consumer"))
        }
        async fn consume(
            &self,
            request: Request<Streaming<Event>>,
        ) -> Result<Response<ConsumeResponse>, Status> {
            let mut events = request.into_inner();
            let mut consumed = 0;
            while let Some(event) = events.message().await? {
                tokio::time::sleep(self.delay).await;
                consumed += 1;
                let lag = self
                    .produced
                    .load(Ordering::SeqCst)
                    .saturating_sub(consumed);
                self.max_lag.fetch_max(lag, Ordering::SeqCst);
                self.received
                    .lock()
                    .unwrap()
                    .push(format!("{}:{}", event.r#type, event.id));
            }
            Ok(Response::new(ConsumeResponse {
                events_consumed: consumed as i64,
                events_failed: 0,
                errors: Vec::new(),
            }))
        }
    }

    /// Serves `router` on a free loopback port for as long as `runtime` lives.
    fn serve(
        runtime: &tokio::runtime::Runtime,
        router: tonic::transport::server::Router,
    ) -> SocketAddr {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let address = listener.local_addr().unwrap();
        runtime.spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        address
    }

    fn node(id: &str, service: GrpcService, address: SocketAddr, inputs: &[&str]) -> RelayNode {
        RelayNode {
            id: id.into(),
            service,
            address,
            network: None,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            accepts: Vec::new(),
            params: HashMap::new(),
            grpc_port: address.port(),
            restarts: 0,
        }
    }

    fn consumer(produced: &Arc<AtomicU64>, delay: Duration, info_types: &[&str]) -> TestConsumer {
        TestConsumer {
            delay,
            info_types: info_types.iter().map(|s| s.to_string()).collect(),
            received: Arc::default(),
            produced: produced.clone(),
            max_lag: Arc::default(),
        }
    }

    fn source(
        count: u64,
        payload: usize,
        types: &[&'static str],
        produced: &Arc<AtomicU64>,
    ) -> TestSource {
        TestSource {
            count,
            payload,
            types: types.to_vec(),
            produced: produced.clone(),
            params: Arc::default(),
        }
    }

    /// Relays `nodes` to their end; how it ended and the edge counts.
    fn relay_to_end(nodes: Vec<RelayNode>) -> (Result<(), String>, Vec<String>) {
        let events = Arc::new(RunEvents::default());
        let counts = Arc::new(EdgeCounts::default());
        let relay = Relay::start(
            nodes,
            counts.clone(),
            events.clone(),
            Arc::default(),
            Console { color: false },
        )
        .unwrap();
        let mut state = events.snapshot();
        // Generous bound, only so that a hanging relay fails the test.
        let limit = std::time::Instant::now() + Duration::from_secs(120);
        while state.relay_end.is_none() && std::time::Instant::now() < limit {
            state = events.wait_change(state.version, Duration::from_secs(1));
        }
        drop(relay);
        let end = state.relay_end.expect("the relay did not end within 120 s");
        (end, edge_lines(&counts))
    }

    #[test]
    fn a_slow_consumer_slows_the_source_and_loses_nothing() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        // 4000 events of 32 KiB (128 MiB in all) into a consumer that takes 1 ms per event.
        // What may run ahead: each queue's bytes, each call's HTTP/2 window, the tonic and h2
        // buffers and the kernel's socket buffers (about 35 MiB here).
        const COUNT: u64 = 4000;
        let test_source = source(COUNT, 32 * 1024, &["a.v1"], &produced);
        let params = test_source.params.clone();
        let source = serve(
            &runtime,
            Server::builder().add_service(SourceServiceServer::new(test_source)),
        );
        let processor = serve(
            &runtime,
            Server::builder().add_service(ProcessorServiceServer::new(TestProcessor {
                fail_after: None,
            })),
        );
        let slow = consumer(&produced, Duration::from_millis(1), &[]);
        let (received, max_lag) = (slow.received.clone(), slow.max_lag.clone());
        let sink = serve(
            &runtime,
            Server::builder().add_service(ConsumerServiceServer::new(slow)),
        );

        let mut src = node("src", GrpcService::V1Source, source, &[]);
        src.params = HashMap::from([("start_ledger".into(), "997".into())]);
        let (end, edges) = relay_to_end(vec![
            src,
            node("proc", GrpcService::V1Processor, processor, &["src"]),
            node("sink", GrpcService::V1Consumer, sink, &["proc"]),
        ]);
        assert_eq!(end, Ok(()));
        assert_eq!(params.lock().unwrap()["start_ledger"], "997");
        let received = received.lock().unwrap();
        let expected: Vec<String> = (0..COUNT).map(|i| format!("processed.v1:{i}")).collect();
        assert_eq!(*received, expected, "every event, in order");
        assert_eq!(
            edges,
            [
                format!("relay src -> proc: {COUNT} event(s)"),
                format!("relay proc -> sink: {COUNT} event(s)"),
            ]
        );
        // The source was held back: never more than a fraction of the stream ahead of the
        // consumer (the rest is the edges' queues, HTTP/2 windows and socket buffers).
        let max_lag = max_lag.load(Ordering::SeqCst);
        eprintln!("the source ran at most {max_lag} of {COUNT} events ahead of the consumer");
        assert!(max_lag < COUNT / 2, "the source ran {max_lag} events ahead");
    }

    #[test]
    fn a_processor_failing_mid_stream_breaks_the_run_naming_the_edge_and_status() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let source = serve(
            &runtime,
            Server::builder().add_service(SourceServiceServer::new(source(
                50,
                16,
                &["a.v1"],
                &produced,
            ))),
        );
        let processor = serve(
            &runtime,
            Server::builder().add_service(ProcessorServiceServer::new(TestProcessor {
                fail_after: Some(10),
            })),
        );
        let sink = serve(
            &runtime,
            Server::builder().add_service(ConsumerServiceServer::new(consumer(
                &produced,
                Duration::ZERO,
                &[],
            ))),
        );
        let (end, _) = relay_to_end(vec![
            node("src", GrpcService::V1Source, source, &[]),
            node("proc", GrpcService::V1Processor, processor, &["src"]),
            node("sink", GrpcService::V1Consumer, sink, &["proc"]),
        ]);
        let error = end.unwrap_err();
        assert!(error.contains("edge src -> proc -> sink broke"), "{error}");
        assert!(
            error.contains("proc flowctl.v1.ProcessorService.Process failed with gRPC status Internal: boom at event 10"),
            "{error}"
        );
    }

    #[test]
    fn events_reach_only_consumers_that_take_their_type() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let source = serve(
            &runtime,
            Server::builder().add_service(SourceServiceServer::new(source(
                10,
                4,
                &["a.v1", "b.v1"],
                &produced,
            ))),
        );
        // One takes what the file says (a.v1), the other what its GetInfo says (b.v1).
        let by_file = consumer(&produced, Duration::ZERO, &["b.v1"]);
        let by_info = consumer(&produced, Duration::ZERO, &["b.v1"]);
        let (file_got, info_got) = (by_file.received.clone(), by_info.received.clone());
        let file_sink = serve(
            &runtime,
            Server::builder().add_service(ConsumerServiceServer::new(by_file)),
        );
        let info_sink = serve(
            &runtime,
            Server::builder().add_service(ConsumerServiceServer::new(by_info)),
        );
        let mut file_node = node("file-sink", GrpcService::V1Consumer, file_sink, &["src"]);
        file_node.accepts = vec!["a.v1".into()];
        let (end, edges) = relay_to_end(vec![
            node("src", GrpcService::V1Source, source, &[]),
            file_node,
            node("info-sink", GrpcService::V1Consumer, info_sink, &["src"]),
        ]);
        assert_eq!(end, Ok(()));
        assert_eq!(
            *file_got.lock().unwrap(),
            ["a.v1:0", "a.v1:2", "a.v1:4", "a.v1:6", "a.v1:8"]
        );
        assert_eq!(
            *info_got.lock().unwrap(),
            ["b.v1:1", "b.v1:3", "b.v1:5", "b.v1:7", "b.v1:9"]
        );
        assert_eq!(
            edges,
            [
                "relay src -> file-sink: 5 event(s)",
                "relay src -> info-sink: 5 event(s)"
            ]
        );
    }
}
