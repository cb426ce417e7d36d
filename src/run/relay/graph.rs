//! The whole graph at once: one bounded queue into each component with inputs, one task per
//! component, and the first broken edge that ends it all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Result;
use flowctl_proto::flowctl::v1::ConsumeResponse;
use flowctl_proto::relayed::RawEventCodec;
use tokio::task::JoinSet;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;

use super::connect::{accepted_types, connect, status_text};
use super::outlet::{ready_client, Break, Outlet};
use super::settle::settle;
use super::source::{forward, run_source};
use super::RunView;
use super::{ConsumerAnswer, EdgeCount, RelayNode, EDGE_BATCHES, EDGE_BYTES};
use crate::plan::GrpcService;
use crate::run::edge_queue::{self, QueueReceiver};

/// Runs the whole graph until it ends; the consumers' answers in component order.
pub(super) async fn relay(
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
pub(super) async fn run_node(
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
    let health_channel = channel.clone();
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
            // Its writes may outlast its answer: wait for them before the run may stop it.
            let settled = settle(health_channel, answer.events_consumed).await;
            Ok(Some(ConsumerAnswer {
                component: node.id.clone(),
                events_consumed: answer.events_consumed,
                events_failed: answer.events_failed,
                errors: answer.errors,
                settled,
            }))
        }
        GrpcService::V1Source | GrpcService::RawLedgers | GrpcService::TokenTransferEvents => {
            Ok(None)
        }
    }
}
