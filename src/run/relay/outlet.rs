//! Where a relayed component's events go ([`Outlet`]: one downstream edge and its queue), why a
//! task of the relay stops early ([`Break`]), and a component's client once its connection is
//! ready.

use std::sync::Arc;

use tonic::transport::Channel;
use tonic::Status;

use super::EdgeCount;
use crate::run::edge_queue::QueueSender;

/// Where one component's output goes: one downstream, the types it takes, its edge's count.
pub(super) struct Outlet {
    pub(super) to: String,
    pub(super) accepts: Vec<String>,
    /// Encoded `flowctl.v1.Event`s, passed on as they came.
    pub(super) sender: QueueSender,
    pub(super) count: Arc<EdgeCount>,
}

impl Outlet {
    /// Whether events of `event_type` go this way (an empty list takes every type).
    pub(super) fn takes(&self, event_type: &[u8]) -> bool {
        self.accepts.is_empty() || self.accepts.iter().any(|t| t.as_bytes() == event_type)
    }
}

/// Why a task of the relay stopped early. A component's own gRPC status explains more than
/// "the next component stopped taking events", so it is preferred.
pub(super) enum Break {
    Status(String),
    Downstream(String),
}

pub(super) async fn ready_client(
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
