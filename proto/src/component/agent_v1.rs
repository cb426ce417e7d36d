//! The component side of `flowctl.v1.ControlPlaneService` (flow-proto v0.1.3): register once
//! with the component's `ComponentInfo`, then heartbeat its status and metrics every
//! `FLOWCTL_HEARTBEAT_INTERVAL`.
//!
//! Unlike upstream's Go SDK, where a failed registration ends the process, a registration that
//! fails here is logged and retried (with a short backoff, since flowctl waits for it before it
//! starts what depends on the component): the component keeps serving, and a control plane that
//! restarts and forgets it (`NOT_FOUND` on a heartbeat) gets a fresh registration.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use super::agent::endpoint_uri;
use super::env::ComponentEnv;
use super::health::{HealthStatus, Metrics};
use crate::flowctl::v1::control_plane_service_client::ControlPlaneServiceClient;
use crate::flowctl::v1::{self, ComponentInfo, HeartbeatRequest, RegisterRequest};

/// Upstream components give registration this long.
const REGISTER_DEADLINE: Duration = Duration::from_secs(5);
/// The longest pause between two registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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

async fn run(endpoint: String, component: ComponentInfo, interval: Duration, metrics: Metrics) {
    let channel = match Endpoint::from_shared(endpoint.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(REGISTER_DEADLINE)
            .timeout(REGISTER_DEADLINE),
        Err(e) => {
            log::error!("FLOWCTL_ENDPOINT {endpoint:?} is not a valid address: {e}");
            return;
        }
    }
    .connect_lazy();
    let mut client = ControlPlaneServiceClient::new(channel);
    let request = RegisterRequest {
        component_id: component.id.clone(),
        component: Some(component),
    };
    loop {
        let service_id = register(&mut client, &endpoint, &request).await;
        heartbeat_until_forgotten(&mut client, &service_id, interval, &metrics).await;
        log::warn!("control plane no longer knows {service_id}; registering again");
    }
}

async fn register(
    client: &mut ControlPlaneServiceClient<Channel>,
    endpoint: &str,
    request: &RegisterRequest,
) -> String {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut call = Request::new(request.clone());
        call.set_timeout(REGISTER_DEADLINE);
        match client.register_component(call).await {
            Ok(response) => {
                let service_id = response.into_inner().service_id;
                log::info!(
                    "registered with flowctl.v1.ControlPlaneService at {endpoint} as {service_id}"
                );
                return service_id;
            }
            Err(status) => {
                log::warn!(
                    "registering with flowctl.v1.ControlPlaneService at {endpoint} failed \
                     ({:?}: {}); retrying in {backoff:?}",
                    status.code(),
                    status.message()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Heartbeats until the control plane answers `NOT_FOUND` (it forgot us, e.g. it restarted).
async fn heartbeat_until_forgotten(
    client: &mut ControlPlaneServiceClient<Channel>,
    service_id: &str,
    interval: Duration,
    metrics: &Metrics,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let heartbeat = HeartbeatRequest {
            service_id: service_id.to_string(),
            status: v1_health_status(metrics.status()) as i32,
            metrics: v1_metrics(metrics),
        };
        match client.heartbeat(heartbeat).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => return,
            Err(status) => log::warn!("heartbeat failed: {}", status.message()),
        }
    }
}
