//! What the three components share around their data path: start-up and exit, the
//! `healthcheck` subcommand, the `/health` server, control plane registration and the signal
//! that stops them.

use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use flowctl_proto::component::{
    probe_health, spawn_agent, AgentConfig, ComponentEnv, HealthServer, Metrics,
};
use flowctl_proto::flowctl::ServiceType;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

use crate::logging;
use crate::shutdown::{signalled, ShutdownTrigger};
use crate::{EXIT_CONFIG, EXIT_FAILURE};

/// The `/health` port when `HEALTH_PORT` is unset (docs/contract.md §4).
pub const DEFAULT_HEALTH_PORT: u16 = 8088;

/// How a component describes itself to the control plane and in `/health`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Binary name, used in logs.
    pub name: &'static str,
    pub service_type: ServiceType,
    pub input_event_types: &'static [&'static str],
    pub output_event_types: &'static [&'static str],
    /// The docs/contract.md §3 metric keys, all reported from the start.
    pub metric_keys: &'static [&'static str],
}

/// A component's shared plumbing once started.
#[derive(Debug)]
pub struct Running {
    pub env: ComponentEnv,
    pub metrics: Metrics,
    pub health: HealthServer,
}

/// A component's process from start to exit: installs the logger, reads the shared environment
/// and the component's own settings (`from_env`; its error names the variable), then runs
/// `serve` on a fresh [`runtime`]. An error from `serve` is logged and exits with
/// [`EXIT_FAILURE`]; a bad setting exits with [`EXIT_CONFIG`] before anything starts.
pub fn run<C, F>(
    name: &str,
    from_env: impl FnOnce() -> Result<C, String>,
    serve: impl FnOnce(ComponentEnv, C) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    logging::init();
    let env = match component_env() {
        Ok(env) => env,
        Err(e) => return config_error(name, e),
    };
    let config = match from_env() {
        Ok(config) => config,
        Err(e) => return config_error(name, e),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(async move {
        serve(env, config).await.unwrap_or_else(|e| {
            log::error!("{e:#}");
            ExitCode::from(EXIT_FAILURE)
        })
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Reads the shared environment (`HEALTH_PORT`, `ENABLE_FLOWCTL`, ...). Errors name the variable.
pub fn component_env() -> Result<ComponentEnv, String> {
    ComponentEnv::from_env(DEFAULT_HEALTH_PORT)
}

/// Starts `/health` and, when `ENABLE_FLOWCTL=true`, registration and heartbeats. Must run
/// inside the tokio runtime (the agent is a task on it).
pub fn start(
    identity: &Identity,
    env: ComponentEnv,
    metadata: HashMap<String, String>,
) -> anyhow::Result<Running> {
    let metrics = Metrics::with_keys(identity.metric_keys);
    let health = HealthServer::start(env.health_port, metrics.clone()).map_err(|e| {
        anyhow::anyhow!(
            "HEALTH_PORT: cannot listen on port {}: {e}",
            env.health_port
        )
    })?;
    log::info!(
        "{} health endpoint on :{}/health",
        identity.name,
        health.local_addr().port()
    );
    // The control plane reaches us by container host name on the pipeline network.
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
    let config = AgentConfig {
        service_type: identity.service_type,
        input_event_types: identity
            .input_event_types
            .iter()
            .map(|s| s.to_string())
            .collect(),
        output_event_types: identity
            .output_event_types
            .iter()
            .map(|s| s.to_string())
            .collect(),
        health_endpoint: format!("http://{host}:{}/health", health.local_addr().port()),
        max_inflight: 0,
        metadata,
    };
    if spawn_agent(&env, config, metrics.clone()).is_some() {
        log::info!(
            "registering with the control plane at {} as {}",
            env.flowctl_endpoint,
            env.component_id
                .as_deref()
                .unwrap_or("(no FLOWCTL_COMPONENT_ID)")
        );
    }
    Ok(Running {
        env,
        metrics,
        health,
    })
}

/// The `healthcheck` subcommand: probes this component's own `/health` (for an image
/// `HEALTHCHECK` or Compose, since a `FROM scratch` image has no curl). Exit 0 when ready.
pub fn healthcheck() -> ExitCode {
    let env = match component_env() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match probe_health(env.health_port, Duration::from_secs(3)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("healthcheck: not healthy: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A multi-threaded runtime sized for a small container: the data path uses its own threads
/// for CPU work, the runtime only moves bytes.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// The arguments of a server component besides its own subcommands: `healthcheck` probes
/// `/health`, anything else prints the usage line (`synopsis` lists the arguments, `note` says
/// how the server is configured) and is a usage error. `None` when there is no argument: serve.
pub fn server_arguments(
    name: &str,
    args: &[String],
    synopsis: &str,
    note: &str,
) -> Option<ExitCode> {
    match args.first().map(String::as_str) {
        None => None,
        Some("healthcheck") => Some(healthcheck()),
        Some(other) => {
            eprintln!("usage: {name} {synopsis}  ({note}; unknown argument {other:?})");
            Some(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// Prints a configuration error (it names the variable) and returns the config exit code.
pub fn config_error(name: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{name}: configuration error: {message}");
    ExitCode::from(EXIT_CONFIG)
}

/// Serves until SIGTERM/SIGINT (or until the server fails), then ends every open stream through
/// `trigger` and gives the server a few seconds to close its connections.
pub async fn serve_until_signalled<F>(name: &str, serving: F, trigger: ShutdownTrigger) -> ExitCode
where
    F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
{
    let mut server = tokio::spawn(serving);
    tokio::select! {
        signal = signalled() => {
            log::info!("{name}: {signal} received, stopping");
            trigger.trigger();
        }
        result = &mut server => {
            return match result {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    log::error!("{name}: gRPC server failed: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
                Err(e) => {
                    log::error!("{name}: gRPC server task failed: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            };
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => log::info!("{name}: stopped"),
        Ok(Ok(Err(e))) => log::warn!("{name}: gRPC server ended with an error: {e}"),
        Ok(Err(e)) => log::warn!("{name}: gRPC server task failed: {e}"),
        Err(_) => log::warn!("{name}: connections still open after 5s; exiting anyway"),
    }
    ExitCode::SUCCESS
}

/// Accepted connections of `listener`, with Nagle off so the tail of a burst of small
/// messages is not held back.
pub fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
