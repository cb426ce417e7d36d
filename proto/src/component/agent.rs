//! The component side of the control plane: register once, then heartbeat with the current
//! metrics every `FLOWCTL_HEARTBEAT_INTERVAL` (docs/contract.md §3).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::env::ComponentEnv;
use super::health::Metrics;
use crate::flowctl::control_plane_client::ControlPlaneClient;
use crate::flowctl::{ServiceHeartbeat, ServiceInfo, ServiceType};

/// Upstream components give registration this long.
pub(super) const REGISTER_DEADLINE: Duration = Duration::from_secs(5);

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

/// The legacy protocol's two calls.
struct LegacyRegistrar {
    client: ControlPlaneClient<Channel>,
    info: ServiceInfo,
    metrics: Metrics,
}

impl Registrar for LegacyRegistrar {
    async fn register(&mut self) -> Result<String, Status> {
        let mut request = Request::new(self.info.clone());
        request.set_timeout(REGISTER_DEADLINE);
        Ok(self.client.register(request).await?.into_inner().service_id)
    }

    async fn heartbeat(&mut self, service_id: &str) -> Result<(), Status> {
        let heartbeat = ServiceHeartbeat {
            service_id: service_id.to_string(),
            timestamp: Some(SystemTime::now().into()),
            metrics: self.metrics.snapshot().into_iter().collect(),
        };
        self.client.heartbeat(heartbeat).await.map(|_| ())
    }
}

async fn run(endpoint: String, info: ServiceInfo, interval: Duration, metrics: Metrics) {
    let Some(channel) = lazy_channel(&endpoint) else {
        return;
    };
    let registrar = LegacyRegistrar {
        client: ControlPlaneClient::new(channel),
        info,
        metrics,
    };
    run_agent("flowctl.ControlPlane", &endpoint, registrar, interval).await;
}

/// Registration and heartbeats in one protocol or the other.
pub(super) trait Registrar {
    /// Registers once; the service id the control plane assigned.
    async fn register(&mut self) -> Result<String, Status>;
    /// Sends one heartbeat for `service_id`.
    async fn heartbeat(&mut self, service_id: &str) -> Result<(), Status>;
}

/// A channel to `endpoint` that connects on first use, with the registration deadline; `None`
/// (logged) when `endpoint` is not an address.
pub(super) fn lazy_channel(endpoint: &str) -> Option<Channel> {
    match Endpoint::from_shared(endpoint.to_string()) {
        Ok(endpoint) => Some(
            endpoint
                .connect_timeout(REGISTER_DEADLINE)
                .timeout(REGISTER_DEADLINE)
                .connect_lazy(),
        ),
        Err(e) => {
            log::error!("FLOWCTL_ENDPOINT {endpoint:?} is not a valid address: {e}");
            None
        }
    }
}

/// Registers, then heartbeats every `interval`; registers again when the control plane has
/// forgotten the component (`NOT_FOUND`, e.g. it restarted). Never returns.
pub(super) async fn run_agent(
    service: &str,
    endpoint: &str,
    mut registrar: impl Registrar,
    interval: Duration,
) {
    loop {
        let service_id = register(service, endpoint, &mut registrar).await;
        heartbeat_until_forgotten(&service_id, &mut registrar, interval).await;
        log::warn!("{service} no longer knows {service_id}; registering again");
    }
}

/// Registers, retrying with a short backoff: flowctl waits for the registration before it
/// starts what depends on this component, so a slow retry would slow the whole start-up.
async fn register(service: &str, endpoint: &str, registrar: &mut impl Registrar) -> String {
    let mut backoff = Duration::from_millis(100);
    loop {
        match registrar.register().await {
            Ok(service_id) => {
                log::info!("registered with {service} at {endpoint} as {service_id}");
                return service_id;
            }
            Err(status) => {
                log::warn!(
                    "registering with {service} at {endpoint} failed ({:?}: {}); retrying in \
                     {backoff:?}",
                    status.code(),
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
    service_id: &str,
    registrar: &mut impl Registrar,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match registrar.heartbeat(service_id).await {
            Ok(()) => {}
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
