//! Dialling a relayed component: its network address first, then its published port, with
//! the relay's HTTP/2 windows; and the event types it takes.

use std::time::Duration;

use anyhow::Result;
use flowctl_proto::flowctl::v1::consumer_service_client::ConsumerServiceClient;
use flowctl_proto::flowctl::v1::processor_service_client::ProcessorServiceClient;
use flowctl_proto::relayed::MAX_FRAME_BYTES;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::{RelayNode, CONNECTION_WINDOW_BYTES, CONNECT_PATIENCE, STREAM_WINDOW_BYTES};
use crate::plan::GrpcService;

/// How long the relay waits for a connection to a component's network address before it
/// takes the published port instead (an unreachable network answers nothing at all).
pub(super) const NETWORK_PATIENCE: Duration = Duration::from_millis(300);

/// The relay's endpoint for `address` (`host:port`), with its HTTP/2 windows.
pub(super) fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .tcp_nodelay(true))
}

/// A channel to `node`: at its network address if flowctl reaches it, else its published port.
pub(super) async fn connect(node: &RelayNode) -> Result<Channel, String> {
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

pub(super) async fn connect_published(node: &RelayNode) -> Result<Channel, String> {
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
pub(super) async fn accepted_types(node: &RelayNode, channel: &Channel) -> Vec<String> {
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

pub(super) fn status_text(status: &Status) -> String {
    format!("gRPC status {:?}: {}", status.code(), status.message())
}
