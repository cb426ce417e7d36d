//! The component side of the control plane: register once, then heartbeat with the current
//! metrics every `FLOWCTL_HEARTBEAT_INTERVAL` (CONTRACT.md §3).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use super::env::ComponentEnv;
use super::health::Metrics;
use crate::flowctl::control_plane_client::ControlPlaneClient;
use crate::flowctl::{ServiceHeartbeat, ServiceInfo, ServiceType};

/// Upstream components give registration this long.
const REGISTER_DEADLINE: Duration = Duration::from_secs(5);

/// What a component says about itself when it registers.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub service_type: ServiceType,
    pub input_event_types: Vec<String>,
    pub output_event_types: Vec<String>,
    /// Where the control plane could probe the component, e.g. `http://ttp-processor:8088/health`.
    pub health_endpoint: String,
    pub max_inflight: i32,
    pub metadata: HashMap<String, String>,
}

/// Starts the agent on the current tokio runtime when `ENABLE_FLOWCTL` is set; `None` otherwise.
/// The agent never stops the component: a control plane that is down is logged and retried.
pub fn spawn_agent(
    env: &ComponentEnv,
    config: AgentConfig,
    metrics: Metrics,
) -> Option<tokio::task::JoinHandle<()>> {
    if !env.enable_flowctl {
        return None;
    }
    let info = ServiceInfo {
        service_id: String::new(),
        service_type: config.service_type as i32,
        input_event_types: config.input_event_types,
        output_event_types: config.output_event_types,
        health_endpoint: config.health_endpoint,
        max_inflight: config.max_inflight,
        metadata: config.metadata,
        component_id: env.component_id.clone().unwrap_or_default(),
    };
    let endpoint = endpoint_uri(&env.flowctl_endpoint);
    let interval = env.heartbeat_interval;
    Some(tokio::spawn(run(endpoint, info, interval, metrics)))
}

/// `endpoint` with `http://` when it has no scheme (`FLOWCTL_ENDPOINT` is usually `host:port`).
pub(super) fn endpoint_uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn run(endpoint: String, info: ServiceInfo, interval: Duration, metrics: Metrics) {
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
    let mut client = ControlPlaneClient::new(channel);
    loop {
        let service_id = register(&mut client, &endpoint, &info).await;
        heartbeat_until_forgotten(&mut client, &service_id, interval, &metrics).await;
        log::warn!("control plane no longer knows {service_id}; registering again");
    }
}

/// Registers, retrying with a short backoff: flowctl waits for the registration before it
/// starts what depends on this component, so a slow retry would slow the whole start-up.
async fn register(
    client: &mut ControlPlaneClient<Channel>,
    endpoint: &str,
    info: &ServiceInfo,
) -> String {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut request = Request::new(info.clone());
        request.set_timeout(REGISTER_DEADLINE);
        match client.register(request).await {
            Ok(ack) => {
                let service_id = ack.into_inner().service_id;
                log::info!("registered with control plane at {endpoint} as {service_id}");
                return service_id;
            }
            Err(status) => {
                log::warn!(
                    "registering with control plane at {endpoint} failed: {}",
                    status.message()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Heartbeats until the control plane answers `NOT_FOUND` (it forgot us, e.g. it restarted).
async fn heartbeat_until_forgotten(
    client: &mut ControlPlaneClient<Channel>,
    service_id: &str,
    interval: Duration,
    metrics: &Metrics,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let heartbeat = ServiceHeartbeat {
            service_id: service_id.to_string(),
            timestamp: Some(SystemTime::now().into()),
            metrics: metrics.snapshot().into_iter().collect(),
        };
        match client.heartbeat(heartbeat).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => return,
            Err(status) => log::warn!("heartbeat failed: {}", status.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_a_scheme_only_when_missing() {
        assert_eq!(endpoint_uri("172.18.0.1:8080"), "http://172.18.0.1:8080");
        assert_eq!(endpoint_uri("http://cp:8080"), "http://cp:8080");
    }
}
