//! What the three v1 components share: who they are ([`V1Identity`] -> `ComponentInfo`), their
//! start-up (`/health` on `HEALTH_PORT`, registration with `flowctl.v1.ControlPlaneService` when
//! `ENABLE_FLOWCTL=true`), `HealthCheck` answers, and reading the environment.
//!
//! Process start, exit codes, signals, the `healthcheck` subcommand and the gRPC server settings
//! are the first generation's (`stellar_components::component`, `::grpc`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context as _;
use flowctl_proto::component::{
    spawn_v1_agent, v1_health_status, v1_metrics, ComponentEnv, Metrics,
};
use flowctl_proto::flowctl::v1::{
    ComponentHealth, ComponentInfo, ComponentType, HealthCheckResponse,
};
use flowctl_proto::flowctl::ServiceType;
use stellar_components::component as first_generation;
use stellar_components::grpc;
use stellar_components::shutdown::{self, Shutdown};
use tokio::net::TcpListener;
use tonic::transport::server::Router;

/// How a v1 component describes itself.
#[derive(Debug, Clone, Copy)]
pub struct V1Identity {
    /// Binary name; also the component id when neither `COMPONENT_ID` nor
    /// `FLOWCTL_COMPONENT_ID` is set.
    pub name: &'static str,
    pub description: &'static str,
    pub component_type: ComponentType,
    pub input_event_types: &'static [&'static str],
    pub output_event_types: &'static [&'static str],
    /// Metric keys reported from the start (the first generation's, docs/contract.md §3).
    pub metric_keys: &'static [&'static str],
    /// The variables naming the gRPC listen address, the first one set wins (upstream's
    /// `raw-ledger-source` reads `GRPC_PORT`, its SDK components `PORT`).
    pub port_variables: &'static [&'static str],
    /// The listen address when none of `port_variables` is set.
    pub default_port: &'static str,
}

/// A started component: its metrics (shared by its work, `/health`, `HealthCheck` and the
/// heartbeats), its `/health` address and what it answers to `GetInfo`.
#[derive(Debug, Clone)]
pub struct Running {
    pub metrics: Metrics,
    /// Where `/health` listens (useful with `HEALTH_PORT=0`).
    pub health_addr: SocketAddr,
    pub info: Arc<ComponentInfo>,
}

/// `COMPONENT_ID` (what upstream's SDK reads and flowctl injects), else `FLOWCTL_COMPONENT_ID`,
/// else the binary name.
pub fn component_id(identity: &V1Identity, lookup: impl Fn(&str) -> Option<String>) -> String {
    ["COMPONENT_ID", "FLOWCTL_COMPONENT_ID"]
        .into_iter()
        .filter_map(|key| lookup(key).map(|value| value.trim().to_string()))
        .find(|value| !value.is_empty())
        .unwrap_or_else(|| identity.name.to_string())
}

/// The first of the identity's port variables that is set, with its value as given (`:50051`,
/// `50051` or `host:port`), else the first variable with the default: the value is both the
/// listen address and, as upstream registers it, the `endpoint` of the `ComponentInfo`.
pub fn port(
    identity: &V1Identity,
    lookup: impl Fn(&str) -> Option<String>,
) -> (&'static str, String) {
    identity
        .port_variables
        .iter()
        .find_map(|&variable| {
            lookup(variable)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
                .map(|value| (variable, value))
        })
        .unwrap_or_else(|| {
            (
                identity.port_variables.first().copied().unwrap_or("PORT"),
                identity.default_port.to_string(),
            )
        })
}

/// The `ComponentInfo` of `identity` running as `id`, listening on `endpoint`.
pub fn component_info(
    identity: &V1Identity,
    id: String,
    endpoint: String,
    metadata: HashMap<String, String>,
) -> ComponentInfo {
    ComponentInfo {
        id,
        name: identity.name.to_string(),
        description: identity.description.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        r#type: identity.component_type as i32,
        input_event_types: to_strings(identity.input_event_types),
        output_event_types: to_strings(identity.output_event_types),
        endpoint,
        metadata,
    }
}

fn to_strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// Starts `/health` on `HEALTH_PORT` (the first generation's, with its legacy registration off)
/// and, when `ENABLE_FLOWCTL=true`, registration and heartbeats with
/// `flowctl.v1.ControlPlaneService` (retried, never fatal). Must run inside the tokio runtime.
pub fn start(
    identity: &V1Identity,
    env: &ComponentEnv,
    info: ComponentInfo,
) -> anyhow::Result<Running> {
    let legacy = first_generation::Identity {
        name: identity.name,
        service_type: match identity.component_type {
            ComponentType::Source => ServiceType::Source,
            ComponentType::Processor => ServiceType::Processor,
            ComponentType::Consumer => ServiceType::Sink,
            ComponentType::Unspecified => ServiceType::Unspecified,
        },
        input_event_types: identity.input_event_types,
        output_event_types: identity.output_event_types,
        metric_keys: identity.metric_keys,
    };
    let without_legacy_agent = ComponentEnv {
        enable_flowctl: false,
        ..env.clone()
    };
    let running = first_generation::start(&legacy, without_legacy_agent, HashMap::new())?;
    if spawn_v1_agent(env, info.clone(), running.metrics.clone()).is_some() {
        log::info!(
            "registering with flowctl.v1.ControlPlaneService at {} as {} (endpoint {:?})",
            env.flowctl_endpoint,
            info.id,
            info.endpoint
        );
    }
    Ok(Running {
        metrics: running.metrics,
        health_addr: running.health.local_addr(),
        info: Arc::new(info),
    })
}

/// A v1 component's process from start to exit: the `healthcheck` subcommand, or reads its
/// settings (`from_env`; a bad one exits 2 naming the variable), starts as [`start`] with
/// `metadata(&config)` in its `ComponentInfo`, listens on its port variable and runs `serve` until
/// SIGTERM/SIGINT (the first generation's [`first_generation::run`]).
pub fn main<C, F>(
    identity: &'static V1Identity,
    args: &[String],
    from_env: impl FnOnce() -> Result<C, String>,
    metadata: impl FnOnce(&C) -> HashMap<String, String>,
    serve: impl FnOnce(TcpListener, C, Running, Shutdown) -> F,
) -> ExitCode
where
    F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    main_prepared(
        identity,
        args,
        from_env,
        metadata,
        |config| async move { Ok(config) },
        serve,
    )
}

/// [`main`] with an asynchronous `prepare` step (e.g. connecting to a database) between the
/// settings and the start: its error ends the process (exit 1) before `/health` is up or the
/// component registers, so flowctl never sees a component that cannot work as healthy.
pub fn main_prepared<C, P, S, F>(
    identity: &'static V1Identity,
    args: &[String],
    from_env: impl FnOnce() -> Result<C, String>,
    metadata: impl FnOnce(&C) -> HashMap<String, String>,
    prepare: impl FnOnce(C) -> P,
    serve: impl FnOnce(TcpListener, S, Running, Shutdown) -> F,
) -> ExitCode
where
    P: Future<Output = anyhow::Result<S>>,
    F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    if let Some(code) = first_generation::server_arguments(
        identity.name,
        args,
        "[healthcheck]",
        "configured by environment variables",
    ) {
        return code;
    }
    first_generation::run(identity.name, from_env, |env, config| async move {
        let lookup = |key: &str| std::env::var(key).ok();
        let (variable, endpoint) = port(identity, lookup);
        let listen = grpc::listen_addr(variable, &endpoint).map_err(anyhow::Error::msg)?;
        let info = component_info(
            identity,
            component_id(identity, lookup),
            endpoint,
            metadata(&config),
        );
        let prepared = prepare(config).await?;
        let running = start(identity, &env, info)?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("{variable}: cannot listen on {listen}"))?;
        let (trigger, shutdown) = shutdown::channel();
        Ok(first_generation::serve_until_signalled(
            identity.name,
            serve(listener, prepared, running, shutdown),
            trigger,
        )
        .await)
    })
}

/// The address `listener` is bound to (the real port when the variable asked for port 0), else
/// the endpoint as given: what the component logs as `serving ... on ADDRESS`.
pub fn bound_address(listener: &TcpListener, running: &Running) -> String {
    listener
        .local_addr()
        .map_or_else(|_| running.info.endpoint.clone(), |addr| addr.to_string())
}

/// The first generation's server settings (large windows) with the relayed streams' frame
/// size ([`flowctl_proto::relayed::MAX_FRAME_BYTES`]), serving `grpc.health.v1.Health` too
/// (SERVING while it serves), as upstream's SDK components do: what flowctl probes a
/// consumer by when it runs it as a process.
pub fn server() -> Router {
    let (_reporter, health) = tonic_health::server::health_reporter();
    stellar_components::grpc::server()
        .max_frame_size(flowctl_proto::relayed::MAX_FRAME_BYTES)
        .add_service(health)
}

/// Serves `router` on `listener` until `shutdown` starts.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(first_generation::incoming(listener), shutdown.wait())
        .await
}

/// The `HealthCheck` answer: the status and metrics `/health` reports, and `details` when the
/// caller asked for them.
pub fn health_check(
    metrics: &Metrics,
    include_details: bool,
    details: impl FnOnce() -> Vec<ComponentHealth>,
) -> HealthCheckResponse {
    let status = v1_health_status(metrics.status());
    HealthCheckResponse {
        status: status as i32,
        metrics: v1_metrics(metrics),
        components: if include_details {
            details()
        } else {
            Vec::new()
        },
        message: status.as_str_name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: V1Identity = V1Identity {
        name: "x-v1",
        description: "test",
        component_type: ComponentType::Processor,
        input_event_types: &["a"],
        output_event_types: &["b"],
        metric_keys: &["success_count"],
        port_variables: &["GRPC_PORT", "PORT"],
        default_port: ":50051",
    };

    #[test]
    fn component_id_prefers_component_id_then_flowctl_component_id() {
        let both = |key: &str| match key {
            "COMPONENT_ID" => Some("from-sdk-var".to_string()),
            "FLOWCTL_COMPONENT_ID" => Some("from-flowctl".to_string()),
            _ => None,
        };
        assert_eq!(component_id(&IDENTITY, both), "from-sdk-var");
        let legacy = |key: &str| (key == "FLOWCTL_COMPONENT_ID").then(|| "legacy".to_string());
        assert_eq!(component_id(&IDENTITY, legacy), "legacy");
        assert_eq!(component_id(&IDENTITY, |_| Some(" ".into())), "x-v1");
    }

    #[test]
    fn info_carries_the_port_as_given_and_the_event_types() {
        let (variable, endpoint) = port(&IDENTITY, |_| None);
        assert_eq!(variable, "GRPC_PORT");
        let info = component_info(&IDENTITY, "p".into(), endpoint, HashMap::new());
        assert_eq!(info.endpoint, ":50051");
        assert_eq!(info.r#type(), ComponentType::Processor);
        assert_eq!(info.input_event_types, ["a"]);
        assert_eq!(info.output_event_types, ["b"]);
        assert_eq!(
            port(&IDENTITY, |_| Some("127.0.0.1:9".into())),
            ("GRPC_PORT", "127.0.0.1:9".to_string())
        );
        // The first variable set wins; an empty one counts as unset.
        let only_port = |key: &str| match key {
            "GRPC_PORT" => Some(" ".to_string()),
            "PORT" => Some(":7".to_string()),
            _ => None,
        };
        assert_eq!(port(&IDENTITY, only_port), ("PORT", ":7".to_string()));
    }
}
