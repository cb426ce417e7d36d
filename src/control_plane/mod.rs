//! The embedded control plane that pipeline components register and heartbeat with: the legacy
//! `flowctl.ControlPlane` (docs/contract.md §3) and `flowctl.v1.ControlPlaneService` ([`v1`]) on the
//! same port, over one registry, so each protocol sees the other's registrations.
//!
//! flowctl is synchronous; tonic is not. The server therefore runs as tasks on the process's
//! tokio runtime (`crate::runtime`), and the rest of flowctl sees it through [`ControlPlane`]: a registry it can query
//! from any thread, and a queue of [`ControlPlaneEvent`]s (registered, unhealthy, recovered).

mod registry;
pub mod remote;
mod v1;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use flowctl_proto::flowctl::control_plane_server::ControlPlaneServer;
use flowctl_proto::flowctl::{
    RegistrationAck, ServiceHeartbeat, ServiceInfo, ServiceList, ServiceStatus, ServiceType,
};

use crate::plan::Role;
use registry::{lock, Registry, SharedRegistry};

/// A component of the pipeline the control plane should expect to hear from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedComponent {
    /// The component id of the pipeline file.
    pub id: String,
    /// Which section of the pipeline it is in.
    pub role: Role,
}

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// The interval components are told to heartbeat at (`FLOWCTL_HEARTBEAT_INTERVAL`).
    pub heartbeat_interval: Duration,
    /// How long a service may stay silent before it counts as unhealthy.
    pub ttl: Duration,
    /// The pipeline's components, in start order.
    pub expected: Vec<ExpectedComponent>,
    /// Turn SIGUSR1 into [`ControlPlaneEvent::StatusRequested`] (only `flowctl run` wants
    /// this: a signal handler is process-wide).
    pub status_signal: bool,
    /// Listen on 127.0.0.1 too, on the same port: for the processes of a run whose control
    /// plane listens on a container network's gateway, which Podman brings up only when the
    /// network's first container starts.
    pub also_loopback: bool,
}

impl ControlPlaneConfig {
    /// A configuration with the default TTL of three heartbeat intervals.
    pub fn new(heartbeat_interval: Duration, expected: Vec<ExpectedComponent>) -> Self {
        ControlPlaneConfig {
            heartbeat_interval,
            ttl: heartbeat_interval * 3,
            expected,
            status_signal: false,
            also_loopback: false,
        }
    }
}

/// How a registration was tied to a pipeline component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// The registration's `component_id` field.
    ComponentId,
    /// A `FLOWCTL_COMPONENT_ID` entry in the registration's metadata.
    Metadata,
    /// The only (or first) not yet registered declared component of that service type.
    ServiceType,
    /// Nothing tied it to a component; it is listed under its service id.
    Unmatched,
}

/// Something the rest of flowctl should tell the user about.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlPlaneEvent {
    /// A service registered. `component` is `None` when it could not be matched.
    Registered {
        /// The pipeline component it was matched to.
        component: Option<String>,
        /// The id it was given.
        service_id: String,
        /// Whether the pipeline declares that component.
        declared: bool,
    },
    /// A service has not sent a heartbeat for longer than the TTL.
    Unhealthy {
        /// The pipeline component, if the registration was matched to one.
        component: Option<String>,
        /// Its service id.
        service_id: String,
        /// Time since its last heartbeat (or registration).
        silent_for: Duration,
    },
    /// A service that was unhealthy sent a heartbeat again.
    Recovered {
        /// The pipeline component, if the registration was matched to one.
        component: Option<String>,
        /// Its service id.
        service_id: String,
    },
    /// A v1 component unregistered (`UnregisterComponent`).
    Unregistered {
        /// The pipeline component, if the registration was matched to one.
        component: Option<String>,
        /// Its service id.
        service_id: String,
    },
    /// Someone sent SIGUSR1 to ask for the status table.
    StatusRequested,
}

impl fmt::Display for ControlPlaneEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn name<'a>(component: &'a Option<String>, service_id: &'a str) -> &'a str {
            component.as_deref().unwrap_or(service_id)
        }
        match self {
            ControlPlaneEvent::Registered {
                component,
                service_id,
                declared,
            } => {
                write!(
                    f,
                    "{} registered with the control plane as {service_id}",
                    name(component, service_id)
                )?;
                if component.is_none() {
                    write!(f, " (not matched to a pipeline component)")?;
                } else if !declared {
                    write!(f, " (not declared in the pipeline)")?;
                }
                Ok(())
            }
            ControlPlaneEvent::Unhealthy {
                component,
                service_id,
                silent_for,
            } => write!(
                f,
                "{} is unhealthy: no heartbeat for {:.1}s",
                name(component, service_id),
                silent_for.as_secs_f64()
            ),
            ControlPlaneEvent::Recovered {
                component,
                service_id,
            } => write!(
                f,
                "{} recovered: heartbeats are arriving again",
                name(component, service_id)
            ),
            ControlPlaneEvent::Unregistered {
                component,
                service_id,
            } => write!(
                f,
                "{} unregistered from the control plane",
                name(component, service_id)
            ),
            ControlPlaneEvent::StatusRequested => write!(f, "status requested (SIGUSR1)"),
        }
    }
}

/// A copy of what the control plane knows about one registered service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSnapshot {
    /// The id the control plane knows it by (sent with every heartbeat).
    pub service_id: String,
    /// The pipeline component it was matched to.
    pub component: Option<String>,
    /// How `component` was found.
    pub matched_by: MatchedBy,
    /// What it registered as.
    pub service_type: ServiceType,
    /// Whether its last sign of life is within the TTL.
    pub healthy: bool,
    /// Time since the last heartbeat; `None` before the first one.
    pub last_heartbeat_age: Option<Duration>,
    /// The metrics of the last heartbeat.
    pub metrics: BTreeMap<String, f64>,
    /// The endpoint a v1 component registered (mapped to its network address); `None` for
    /// legacy registrations.
    pub endpoint: Option<String>,
}

/// The gRPC service.
struct ControlPlaneService {
    registry: SharedRegistry,
}

#[tonic::async_trait]
impl flowctl_proto::flowctl::control_plane_server::ControlPlane for ControlPlaneService {
    async fn register(
        &self,
        request: Request<ServiceInfo>,
    ) -> Result<Response<RegistrationAck>, Status> {
        let ack = lock(&self.registry).register(request.into_inner());
        Ok(Response::new(ack))
    }

    async fn heartbeat(&self, request: Request<ServiceHeartbeat>) -> Result<Response<()>, Status> {
        lock(&self.registry).heartbeat(request.into_inner())?;
        Ok(Response::new(()))
    }

    async fn get_service_status(
        &self,
        request: Request<ServiceInfo>,
    ) -> Result<Response<ServiceStatus>, Status> {
        let info = request.into_inner();
        let registry = lock(&self.registry);
        let found = if !info.service_id.is_empty() {
            registry.find(&info.service_id)
        } else if !info.component_id.is_empty() {
            registry
                .services
                .iter()
                .find(|r| r.component.as_deref() == Some(info.component_id.as_str()))
        } else {
            return Err(Status::invalid_argument(
                "set service_id or component_id to ask for a service's status",
            ));
        };
        match found {
            Some(registration) => Ok(Response::new(
                registration.status(Instant::now(), registry.ttl),
            )),
            None => Err(Status::not_found(format!(
                "no service registered as {:?}",
                if info.service_id.is_empty() {
                    &info.component_id
                } else {
                    &info.service_id
                }
            ))),
        }
    }

    async fn list_services(&self, _request: Request<()>) -> Result<Response<ServiceList>, Status> {
        let registry = lock(&self.registry);
        let now = Instant::now();
        let services = registry
            .services
            .iter()
            .map(|r| r.status(now, registry.ttl))
            .collect();
        Ok(Response::new(ServiceList { services }))
    }
}

/// A listening socket on `bind`, which need not be a local address yet: with Podman the
/// bridge interface that carries the gateway address exists only while a container is attached
/// (IP_FREEBIND). A port in use is still an error.
fn listen(bind: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if bind.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&bind.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What a run reads of its control plane, wherever that runs (embedded in flowctl, or as a
/// container next to a remote engine's pipeline).
pub trait ControlPlaneView: Send + Sync + fmt::Debug {
    /// Every registered service, in registration order.
    fn services(&self) -> Vec<ServiceSnapshot>;

    /// Waits up to `timeout` for the next event.
    fn next_event(&self, timeout: Duration) -> Option<ControlPlaneEvent>;

    /// The current registration of `component`, if any.
    fn service_of(&self, component: &str) -> Option<ServiceSnapshot> {
        self.services()
            .into_iter()
            .find(|s| s.component.as_deref() == Some(component))
    }

    /// Whether `component` has a current registration.
    fn is_registered(&self, component: &str) -> bool {
        self.service_of(component).is_some()
    }
}

impl ControlPlaneView for ControlPlane {
    fn services(&self) -> Vec<ServiceSnapshot> {
        ControlPlane::services(self)
    }

    fn next_event(&self, timeout: Duration) -> Option<ControlPlaneEvent> {
        ControlPlane::next_event(self, timeout)
    }

    fn is_registered(&self, component: &str) -> bool {
        ControlPlane::is_registered(self, component)
    }
}

/// The connections the server accepts, from one listener or two.
type Incoming = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send>,
>;

/// A running control plane. Dropping it shuts the server down.
pub struct ControlPlane {
    local_addr: SocketAddr,
    /// Its second address with [`ControlPlaneConfig::also_loopback`].
    loopback_addr: Option<SocketAddr>,
    registry: SharedRegistry,
    events: Mutex<mpsc::Receiver<ControlPlaneEvent>>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The server's task on the process's runtime; it ends once `shutdown` fired.
    server: Option<tokio::task::JoinHandle<()>>,
    /// Its other tasks, aborted when it stops.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Binds `bind` (port 0 picks a free port) and serves on the process's runtime. Binding
    /// happens before this returns, so a taken port is an error here, not later.
    pub fn start(bind: SocketAddr, config: ControlPlaneConfig) -> Result<ControlPlane> {
        let listener =
            listen(bind).with_context(|| format!("control plane: cannot listen on {bind}"))?;
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let loopback = match config.also_loopback && !bind.ip().is_loopback() {
            true => {
                let at = SocketAddr::from(([127, 0, 0, 1], local_addr.port()));
                let loopback = listen(at)
                    .with_context(|| format!("control plane: cannot listen on {at} too"))?;
                loopback.set_nonblocking(true)?;
                Some(loopback)
            }
            false => None,
        };
        let loopback_addr = match &loopback {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        };

        let runtime = crate::runtime::shared().context("control plane")?;
        let mut tasks = Vec::new();

        let (events_tx, events_rx) = mpsc::channel();
        if config.status_signal {
            // Installed before this returns, so a SIGUSR1 can never hit the default action
            // (terminate) once the run has started.
            let mut signal = {
                let _guard = runtime.enter();
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                    .context("control plane: cannot listen for SIGUSR1")?
            };
            let events = events_tx.clone();
            tasks.push(runtime.spawn(async move {
                while signal.recv().await.is_some() {
                    let _ = events.send(ControlPlaneEvent::StatusRequested);
                }
            }));
        }
        let ttl = config.ttl;
        let registry = Arc::new(Mutex::new(Registry {
            ttl,
            expected: config.expected,
            services: Vec::new(),
            next_id: 0,
            events: events_tx,
        }));

        let incoming: Incoming = {
            let _guard = runtime.enter();
            let first = TcpIncoming::from(tokio::net::TcpListener::from_std(listener)?);
            match loopback {
                Some(loopback) => {
                    let second = TcpIncoming::from(tokio::net::TcpListener::from_std(loopback)?);
                    Box::pin(tokio_stream::StreamExt::merge(first, second))
                }
                None => Box::pin(first),
            }
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let service = ControlPlaneService {
            registry: registry.clone(),
        };
        let v1_service = v1::V1ControlPlane::new(registry.clone());
        let server = runtime.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(ControlPlaneServer::new(service))
                .add_service(v1_service.into_server())
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = served {
                log::error!("control plane stopped: {e}");
            }
        });

        // Check often enough that an expiry is announced soon after the TTL passes.
        let period = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let watched = registry.clone();
        tasks.push(runtime.spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                lock(&watched).expire(Instant::now());
            }
        }));

        Ok(ControlPlane {
            local_addr,
            loopback_addr,
            registry,
            events: Mutex::new(events_rx),
            shutdown: Some(shutdown_tx),
            server: Some(server),
            tasks,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its address on 127.0.0.1 as well, with [`ControlPlaneConfig::also_loopback`].
    pub fn loopback_addr(&self) -> Option<SocketAddr> {
        self.loopback_addr
    }

    /// Whether `component` has a current registration.
    pub fn is_registered(&self, component: &str) -> bool {
        lock(&self.registry)
            .services
            .iter()
            .any(|r| r.component.as_deref() == Some(component))
    }

    /// Every registered service, in registration order.
    pub fn services(&self) -> Vec<ServiceSnapshot> {
        let registry = lock(&self.registry);
        let now = Instant::now();
        registry
            .services
            .iter()
            .map(|r| r.snapshot(now, registry.ttl))
            .collect()
    }

    /// The current registration of `component`, if any.
    pub fn service_of(&self, component: &str) -> Option<ServiceSnapshot> {
        self.services()
            .into_iter()
            .find(|s| s.component.as_deref() == Some(component))
    }

    /// Takes every event that happened since the last call, without waiting.
    pub fn drain_events(&self) -> Vec<ControlPlaneEvent> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events.try_iter().collect()
    }

    /// Waits up to `timeout` for the next event.
    pub fn next_event(&self, timeout: Duration) -> Option<ControlPlaneEvent> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events.recv_timeout(timeout).ok()
    }

    /// Stops serving and waits briefly for in-flight calls to finish.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        // In-flight calls get a moment to finish (never from inside the runtime, which cannot
        // block on itself).
        if let (Some(server), Err(_)) = (self.server.take(), tokio::runtime::Handle::try_current())
        {
            if let Ok(runtime) = crate::runtime::shared() {
                let _ = runtime
                    .block_on(async { tokio::time::timeout(Duration::from_secs(1), server).await });
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::SystemTime;

    use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
    use tonic::transport::Channel;
    use tonic::Code;

    const WAIT: Duration = Duration::from_secs(30);

    fn expected() -> Vec<ExpectedComponent> {
        [
            ("src", Role::Source),
            ("proc", Role::Processor),
            ("sink", Role::Sink),
        ]
        .into_iter()
        .map(|(id, role)| ExpectedComponent {
            id: id.to_string(),
            role,
        })
        .collect()
    }

    /// A control plane on a free loopback port expecting `src`, `proc` and `sink` (also for
    /// the flowctl.v1 tests).
    pub(in crate::control_plane) fn start(heartbeat_interval: Duration) -> ControlPlane {
        let config = ControlPlaneConfig::new(heartbeat_interval, expected());
        ControlPlane::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap()
    }

    /// A real tonic client over loopback, driven from a runtime of the test's own.
    struct Client {
        runtime: tokio::runtime::Runtime,
        client: ControlPlaneClient<Channel>,
    }

    impl Client {
        fn connect(plane: &ControlPlane) -> Client {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let url = format!("http://{}", plane.local_addr());
            let client = runtime.block_on(ControlPlaneClient::connect(url)).unwrap();
            Client { runtime, client }
        }

        fn register(&mut self, info: ServiceInfo) -> String {
            let client = &mut self.client;
            self.runtime
                .block_on(client.register(info))
                .unwrap()
                .into_inner()
                .service_id
        }

        fn heartbeat(&mut self, service_id: &str, metrics: &[(&str, f64)]) -> Result<(), Status> {
            let heartbeat = ServiceHeartbeat {
                service_id: service_id.to_string(),
                timestamp: Some(SystemTime::now().into()),
                metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            };
            let client = &mut self.client;
            self.runtime
                .block_on(client.heartbeat(heartbeat))
                .map(|_| ())
        }

        fn list(&mut self) -> Vec<ServiceStatus> {
            let client = &mut self.client;
            self.runtime
                .block_on(client.list_services(()))
                .unwrap()
                .into_inner()
                .services
        }

        fn status(&mut self, info: ServiceInfo) -> Result<ServiceStatus, Status> {
            let client = &mut self.client;
            self.runtime
                .block_on(client.get_service_status(info))
                .map(Response::into_inner)
        }
    }

    fn info(service_type: ServiceType) -> ServiceInfo {
        ServiceInfo {
            service_type: service_type as i32,
            ..Default::default()
        }
    }

    /// The next event other than a registration, waiting at most [`WAIT`].
    fn next_health_event(plane: &ControlPlane) -> ControlPlaneEvent {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match plane.next_event(left) {
                Some(ControlPlaneEvent::Registered { .. }) => continue,
                Some(event) => return event,
                None => break,
            }
        }
        panic!("no health event within {WAIT:?}");
    }

    #[test]
    fn registrations_are_matched_to_components() {
        let plane = start(Duration::from_secs(10));
        let mut client = Client::connect(&plane);

        // component_id wins over everything else.
        let proc_id = client.register(ServiceInfo {
            component_id: "proc".into(),
            ..info(ServiceType::Processor)
        });
        assert!(!proc_id.is_empty());
        // FLOWCTL_COMPONENT_ID in the metadata.
        let src_id = client.register(ServiceInfo {
            metadata: HashMap::from([("FLOWCTL_COMPONENT_ID".into(), "src".into())]),
            ..info(ServiceType::Source)
        });
        // Service type only: the upstream Node consumer sends PIPELINE meaning "consumer".
        let sink_id = client.register(info(ServiceType::Pipeline));
        // A component the pipeline does not declare is still accepted.
        let extra_id = client.register(ServiceInfo {
            component_id: "extra".into(),
            ..info(ServiceType::Sink)
        });
        // Nothing to match it to: accepted under its own service id.
        let stray_id = client.register(info(ServiceType::Source));
        // A service id chosen by the component is kept.
        let given_id = client.register(ServiceInfo {
            service_id: "given-id".into(),
            ..info(ServiceType::Unspecified)
        });
        assert_eq!(given_id, "given-id");

        let ids = [&proc_id, &src_id, &sink_id, &extra_id, &stray_id, &given_id];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b, "service ids must be unique");
            }
        }
        for component in ["src", "proc", "sink", "extra"] {
            assert!(plane.is_registered(component), "{component}");
        }
        assert!(!plane.is_registered("nobody"));

        let snapshots = plane.services();
        let by_id = |id: &str| snapshots.iter().find(|s| s.service_id == id).unwrap();
        assert_eq!(by_id(&proc_id).matched_by, MatchedBy::ComponentId);
        assert_eq!(by_id(&src_id).matched_by, MatchedBy::Metadata);
        assert_eq!(by_id(&sink_id).matched_by, MatchedBy::ServiceType);
        assert_eq!(by_id(&sink_id).component.as_deref(), Some("sink"));
        assert_eq!(by_id(&stray_id).matched_by, MatchedBy::Unmatched);
        assert_eq!(by_id(&stray_id).component, None);

        let events = plane.drain_events();
        assert_eq!(events.len(), 6, "{events:?}");
        assert!(events.contains(&ControlPlaneEvent::Registered {
            component: Some("extra".into()),
            service_id: extra_id.clone(),
            declared: false,
        }));
        assert!(events.contains(&ControlPlaneEvent::Registered {
            component: Some("sink".into()),
            service_id: sink_id,
            declared: true,
        }));
        plane.shutdown();
    }

    #[test]
    fn type_matching_prefers_a_candidate_named_by_the_health_endpoint() {
        let config = ControlPlaneConfig::new(
            Duration::from_secs(10),
            vec![
                ExpectedComponent {
                    id: "first-sink".into(),
                    role: Role::Sink,
                },
                ExpectedComponent {
                    id: "second-sink".into(),
                    role: Role::Sink,
                },
            ],
        );
        let plane = ControlPlane::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap();
        let mut client = Client::connect(&plane);
        client.register(ServiceInfo {
            health_endpoint: "http://second-sink:8093/health".into(),
            ..info(ServiceType::Sink)
        });
        assert!(plane.is_registered("second-sink"));
        assert!(!plane.is_registered("first-sink"));
        client.register(info(ServiceType::Sink));
        assert!(plane.is_registered("first-sink"));
    }

    #[test]
    fn heartbeats_update_status_and_listing() {
        let plane = start(Duration::from_secs(10));
        let mut client = Client::connect(&plane);
        let id = client.register(ServiceInfo {
            component_id: "proc".into(),
            ..info(ServiceType::Processor)
        });

        // Registered, no heartbeat yet: healthy, but no last heartbeat to show.
        let listed = client.list();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].is_healthy);
        assert_eq!(listed[0].last_heartbeat, None);

        let before = SystemTime::now();
        client
            .heartbeat(
                &id,
                &[("total_events_emitted", 42.0), ("success_count", 7.0)],
            )
            .unwrap();
        let listed = client.list();
        let status = &listed[0];
        assert_eq!(status.service_id, id);
        assert_eq!(status.component_id, "proc");
        assert_eq!(status.service_type(), ServiceType::Processor);
        assert!(status.is_healthy);
        let last: SystemTime = status.last_heartbeat.unwrap().try_into().unwrap();
        assert!(
            last >= before,
            "last_heartbeat is the time flowctl received it"
        );
        assert_eq!(status.metrics["total_events_emitted"], 42.0);

        let snapshot = plane.service_of("proc").unwrap();
        assert!(snapshot.healthy);
        assert!(snapshot.last_heartbeat_age.is_some());
        assert_eq!(snapshot.metrics["success_count"], 7.0);

        // GetServiceStatus by service id and by component id.
        let by_service = client
            .status(ServiceInfo {
                service_id: id.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_service.component_id, "proc");
        let by_component = client
            .status(ServiceInfo {
                component_id: "proc".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_component.service_id, id);
        let missing = client
            .status(ServiceInfo {
                service_id: "nope".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let empty = client.status(ServiceInfo::default()).unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
    }

    #[test]
    fn heartbeat_for_an_unknown_id_is_not_found() {
        let plane = start(Duration::from_secs(10));
        let mut client = Client::connect(&plane);
        let err = client.heartbeat("never-registered", &[]).unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("never-registered"), "{err}");
    }

    #[test]
    fn a_component_registering_again_replaces_its_old_registration() {
        let plane = start(Duration::from_secs(10));
        let mut client = Client::connect(&plane);
        let register = ServiceInfo {
            component_id: "src".into(),
            ..info(ServiceType::Source)
        };
        let old = client.register(register.clone());
        let new = client.register(register);
        assert_ne!(old, new);
        assert_eq!(client.list().len(), 1);
        assert_eq!(
            client.heartbeat(&old, &[]).unwrap_err().code(),
            Code::NotFound
        );
        client.heartbeat(&new, &[]).unwrap();
    }

    #[test]
    fn silence_beyond_the_ttl_is_unhealthy_and_a_heartbeat_recovers() {
        // TTL = 3 x 300 ms. The test waits for the events; it never assumes how long they take.
        let plane = start(Duration::from_millis(300));
        let mut client = Client::connect(&plane);
        let id = client.register(ServiceInfo {
            component_id: "sink".into(),
            ..info(ServiceType::Sink)
        });
        client.heartbeat(&id, &[("total_processed", 1.0)]).unwrap();

        match next_health_event(&plane) {
            ControlPlaneEvent::Unhealthy {
                component,
                service_id,
                silent_for,
            } => {
                assert_eq!(component.as_deref(), Some("sink"));
                assert_eq!(service_id, id);
                assert!(silent_for > Duration::from_millis(900), "{silent_for:?}");
            }
            other => panic!("expected Unhealthy, got {other:?}"),
        }
        assert!(!client.list()[0].is_healthy);
        assert!(!plane.service_of("sink").unwrap().healthy);
        // Still registered: unhealthy is not forgotten.
        assert!(plane.is_registered("sink"));

        client.heartbeat(&id, &[("total_processed", 2.0)]).unwrap();
        assert_eq!(
            next_health_event(&plane),
            ControlPlaneEvent::Recovered {
                component: Some("sink".into()),
                service_id: id,
            }
        );
        assert_eq!(
            plane.service_of("sink").unwrap().metrics["total_processed"],
            2.0
        );
    }

    #[test]
    fn sigusr1_asks_for_the_status_table() {
        let mut config = ControlPlaneConfig::new(Duration::from_secs(10), vec![]);
        config.status_signal = true;
        let plane = ControlPlane::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap();
        // The handler is installed when start returns, so this cannot kill the test process.
        let sent = std::process::Command::new("kill")
            .args(["-s", "USR1", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match plane.next_event(left) {
                Some(ControlPlaneEvent::StatusRequested) => break,
                Some(_) => continue,
                None => panic!("no StatusRequested within {WAIT:?}"),
            }
        }
    }

    #[test]
    fn shutdown_frees_the_port() {
        let plane = start(Duration::from_secs(10));
        let addr = plane.local_addr();
        plane.shutdown();
        // Polled: under a parallel test run another test's port-0 bind may briefly hold the
        // freed port (seen once on a loaded 2-core machine).
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = TcpListener::bind(addr) {
            assert!(
                Instant::now() < deadline,
                "port {addr} still taken after shutdown: {e}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn it_can_listen_on_an_address_that_is_not_up_yet() {
        // 198.51.100.0/24 is TEST-NET-2, documentation only: on no interface, like a Podman
        // gateway before the first container joins its bridge.
        let plane = ControlPlane::start(
            SocketAddr::from(([198, 51, 100, 77], 0)),
            ControlPlaneConfig::new(Duration::from_secs(1), vec![]),
        )
        .unwrap();
        assert_eq!(plane.local_addr().ip().to_string(), "198.51.100.77");
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = ControlPlane::start(
            addr,
            ControlPlaneConfig::new(Duration::from_secs(1), vec![]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
    }

    #[test]
    fn events_read_well() {
        let event = ControlPlaneEvent::Unhealthy {
            component: Some("ttp-processor".into()),
            service_id: "ttp-processor-2".into(),
            silent_for: Duration::from_millis(31_500),
        };
        assert_eq!(
            event.to_string(),
            "ttp-processor is unhealthy: no heartbeat for 31.5s"
        );
        let event = ControlPlaneEvent::Registered {
            component: None,
            service_id: "service-3".into(),
            declared: false,
        };
        assert_eq!(
            event.to_string(),
            "service-3 registered with the control plane as service-3 (not matched to a pipeline component)"
        );
    }
}
