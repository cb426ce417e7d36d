//! The component side of `flowctl.v1.ControlPlaneService` (flow-proto v0.1.3): register once
//! with the component's `ComponentInfo`, then heartbeat its status and metrics every
//! `FLOWCTL_HEARTBEAT_INTERVAL`.
//!
//! Unlike upstream's Go SDK, where a failed registration ends the process, a registration that
//! fails here is logged and retried (with a short backoff, since flowctl waits for it before it
//! starts what depends on the component): the component keeps serving, and a control plane that
//! restarts and forgets it (`NOT_FOUND` on a heartbeat) gets a fresh registration.

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Status};

use super::agent::{endpoint_uri, lazy_channel, run_agent, Registrar, REGISTER_DEADLINE};
use super::env::ComponentEnv;
use super::health::{HealthStatus, Metrics};
use crate::flowctl::v1::control_plane_service_client::ControlPlaneServiceClient;
use crate::flowctl::v1::{self, ComponentInfo, HeartbeatRequest, RegisterRequest};

/// Starts the agent on the current tokio runtime when `ENABLE_FLOWCTL` is set; `None` otherwise.
/// `component.id` is sent as `RegisterRequest.component_id` too, so the control plane uses it as
/// the service id.
pub fn spawn_v1_agent(
    env: &ComponentEnv,
    component: ComponentInfo,
    metrics: Metrics,
) -> Option<tokio::task::JoinHandle<()>> {
    if !env.enable_flowctl {
        return None;
    }
    let endpoint = endpoint_uri(&env.flowctl_endpoint);
    let interval = env.heartbeat_interval;
    Some(tokio::spawn(run(endpoint, component, interval, metrics)))
}

/// The v1 status for what `/health` reports.
pub fn v1_health_status(status: HealthStatus) -> v1::HealthStatus {
    match status {
        HealthStatus::Healthy => v1::HealthStatus::Healthy,
        HealthStatus::Degraded => v1::HealthStatus::Degraded,
        HealthStatus::Unhealthy => v1::HealthStatus::Unhealthy,
    }
}

/// Metrics as the v1 protocol carries them: text values (`12`, `0.5`).
pub fn v1_metrics(metrics: &Metrics) -> std::collections::HashMap<String, String> {
    metrics
        .snapshot()
        .into_iter()
        .map(|(key, value)| (key, value.to_string()))
        .collect()
}

/// The v1 protocol's two calls.
struct V1Registrar {
    client: ControlPlaneServiceClient<Channel>,
    request: RegisterRequest,
    metrics: Metrics,
}

impl Registrar for V1Registrar {
    async fn register(&mut self) -> Result<String, Status> {
        let mut call = Request::new(self.request.clone());
        call.set_timeout(REGISTER_DEADLINE);
        Ok(self
            .client
            .register_component(call)
            .await?
            .into_inner()
            .service_id)
    }

    async fn heartbeat(&mut self, service_id: &str) -> Result<(), Status> {
        let heartbeat = HeartbeatRequest {
            service_id: service_id.to_string(),
            status: v1_health_status(self.metrics.status()) as i32,
            metrics: v1_metrics(&self.metrics),
        };
        self.client.heartbeat(heartbeat).await.map(|_| ())
    }
}

async fn run(endpoint: String, component: ComponentInfo, interval: Duration, metrics: Metrics) {
    let Some(channel) = lazy_channel(&endpoint) else {
        return;
    };
    let registrar = V1Registrar {
        client: ControlPlaneServiceClient::new(channel),
        request: RegisterRequest {
            component_id: component.id.clone(),
            component: Some(component),
        },
        metrics,
    };
    run_agent(
        "flowctl.v1.ControlPlaneService",
        &endpoint,
        registrar,
        interval,
    )
    .await;
}
