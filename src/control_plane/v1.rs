//! `flowctl.v1.ControlPlaneService` (flow-proto v0.1.3) over the one registry the legacy service
//! uses, with upstream's behaviour: the service id is `component_id`, else `component.id`;
//! registration marks a component healthy at once; a heartbeat with status UNKNOWN keeps the
//! status; `ListComponents` hides unhealthy components unless asked. A component silent beyond
//! the TTL reads UNHEALTHY, as in the legacy service.

use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use flowctl_proto::flowctl::v1::control_plane_service_server::{
    ControlPlaneService, ControlPlaneServiceServer,
};
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ComponentStatusRequest, ComponentStatusResponse, ComponentType,
    DiscoveryRequest, DiscoveryResponse, HealthStatus, HeartbeatRequest, ListComponentsRequest,
    ListComponentsResponse, RegisterRequest, RegisterResponse, UnregisterRequest,
};
use flowctl_proto::flowctl::ServiceInfo;

use super::registry::{lock, service_type_of, Registration, SharedRegistry};

/// The legacy view of a v1 registration, which the registry matches to a pipeline component.
fn legacy_view(service_id: &str, info: &ComponentInfo) -> ServiceInfo {
    ServiceInfo {
        service_id: service_id.to_string(),
        service_type: service_type_of(info.r#type()) as i32,
        input_event_types: info.input_event_types.clone(),
        output_event_types: info.output_event_types.clone(),
        health_endpoint: String::new(),
        max_inflight: 0,
        metadata: info.metadata.clone(),
        component_id: service_id.to_string(),
    }
}

fn status_of(registration: &Registration, now: Instant, ttl: Duration) -> ComponentStatusResponse {
    ComponentStatusResponse {
        component: Some(registration.component_info()),
        status: registration.health_status(now, ttl) as i32,
        last_heartbeat: registration.last_heartbeat.map(|(_, at)| at.into()),
        metrics: registration.text_metrics(),
        registered_at: Some(registration.registered_wall.into()),
    }
}

/// The gRPC service; cheap to clone (the registry is shared).
#[derive(Clone)]
pub(super) struct V1ControlPlane {
    registry: SharedRegistry,
}

impl V1ControlPlane {
    pub(super) fn new(registry: SharedRegistry) -> V1ControlPlane {
        V1ControlPlane { registry }
    }

    pub(super) fn into_server(self) -> ControlPlaneServiceServer<V1ControlPlane> {
        ControlPlaneServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl ControlPlaneService for V1ControlPlane {
    async fn register_component(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let request = request.into_inner();
        let info = request
            .component
            .ok_or_else(|| Status::invalid_argument("RegisterRequest.component is missing"))?;
        let service_id = if request.component_id.trim().is_empty() {
            info.id.trim().to_string()
        } else {
            request.component_id.trim().to_string()
        };
        if service_id.is_empty() {
            return Err(Status::invalid_argument(
                "set RegisterRequest.component_id or component.id",
            ));
        }
        let legacy = legacy_view(&service_id, &info);
        let ack = lock(&self.registry).register_as(legacy, Some(info));
        Ok(Response::new(RegisterResponse {
            service_id: ack.service_id,
            assigned_topics: Vec::new(),
            connection_info: Default::default(),
        }))
    }

    async fn unregister_component(
        &self,
        request: Request<UnregisterRequest>,
    ) -> Result<Response<()>, Status> {
        lock(&self.registry).unregister(&request.into_inner().service_id)?;
        Ok(Response::new(()))
    }

    async fn discover_components(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        let registry = lock(&self.registry);
        let now = Instant::now();
        let components = registry
            .services
            .iter()
            .filter(|r| r.is_healthy(now, registry.ttl))
            .map(Registration::component_info)
            .filter(|info| {
                request.r#type() == ComponentType::Unspecified || info.r#type() == request.r#type()
            })
            .filter(|info| {
                request.event_types.is_empty()
                    || request.event_types.iter().any(|wanted| {
                        info.input_event_types.contains(wanted)
                            || info.output_event_types.contains(wanted)
                    })
            })
            .filter(|info| {
                request
                    .metadata_filters
                    .iter()
                    .all(|(key, value)| info.metadata.get(key) == Some(value))
            })
            .collect();
        Ok(Response::new(DiscoveryResponse { components }))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<()>, Status> {
        let heartbeat = request.into_inner();
        let status = HealthStatus::try_from(heartbeat.status).unwrap_or(HealthStatus::Unknown);
        lock(&self.registry).heartbeat_v1(&heartbeat.service_id, status, heartbeat.metrics)?;
        Ok(Response::new(()))
    }

    async fn get_component_status(
        &self,
        request: Request<ComponentStatusRequest>,
    ) -> Result<Response<ComponentStatusResponse>, Status> {
        let service_id = request.into_inner().service_id;
        let registry = lock(&self.registry);
        let registration = registry.find(&service_id).ok_or_else(|| {
            Status::not_found(format!("no component registered as {service_id:?}"))
        })?;
        Ok(Response::new(status_of(
            registration,
            Instant::now(),
            registry.ttl,
        )))
    }

    async fn list_components(
        &self,
        request: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentsResponse>, Status> {
        let request = request.into_inner();
        let registry = lock(&self.registry);
        let now = Instant::now();
        let components = registry
            .services
            .iter()
            .map(|r| status_of(r, now, registry.ttl))
            .filter(|status| {
                request.include_unhealthy || status.status() != HealthStatus::Unhealthy
            })
            .filter(|status| {
                request.type_filter() == ComponentType::Unspecified
                    || status.component.as_ref().map(ComponentInfo::r#type)
                        == Some(request.type_filter())
            })
            .collect();
        Ok(Response::new(ListComponentsResponse { components }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
    use flowctl_proto::flowctl::v1::control_plane_service_client::ControlPlaneServiceClient;
    use flowctl_proto::flowctl::ServiceType;
    use tonic::transport::Channel;
    use tonic::Code;

    use super::*;
    use crate::control_plane::tests::start;
    use crate::control_plane::{ControlPlane, ControlPlaneEvent};

    /// Real tonic clients of both protocols over loopback, on a runtime of the test's own.
    struct Clients {
        runtime: tokio::runtime::Runtime,
        v1: ControlPlaneServiceClient<Channel>,
        legacy: ControlPlaneClient<Channel>,
    }

    impl Clients {
        fn connect(plane: &ControlPlane) -> Clients {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let url = format!("http://{}", plane.local_addr());
            let v1 = runtime
                .block_on(ControlPlaneServiceClient::connect(url.clone()))
                .unwrap();
            let legacy = runtime.block_on(ControlPlaneClient::connect(url)).unwrap();
            Clients {
                runtime,
                v1,
                legacy,
            }
        }

        fn register(&mut self, component_id: &str, info: ComponentInfo) -> Result<String, Status> {
            let request = RegisterRequest {
                component: Some(info),
                component_id: component_id.to_string(),
            };
            let v1 = &mut self.v1;
            self.runtime
                .block_on(v1.register_component(request))
                .map(|r| r.into_inner().service_id)
        }

        fn heartbeat(&mut self, service_id: &str, status: HealthStatus) -> Result<(), Status> {
            let request = HeartbeatRequest {
                service_id: service_id.to_string(),
                status: status as i32,
                metrics: HashMap::from([("events_processed".to_string(), "7".to_string())]),
            };
            let v1 = &mut self.v1;
            self.runtime.block_on(v1.heartbeat(request)).map(|_| ())
        }

        fn status(&mut self, service_id: &str) -> Result<ComponentStatusResponse, Status> {
            let request = ComponentStatusRequest {
                service_id: service_id.to_string(),
            };
            let v1 = &mut self.v1;
            self.runtime
                .block_on(v1.get_component_status(request))
                .map(Response::into_inner)
        }

        fn list(&mut self, include_unhealthy: bool, type_filter: ComponentType) -> Vec<String> {
            let request = ListComponentsRequest {
                type_filter: type_filter as i32,
                include_unhealthy,
            };
            let v1 = &mut self.v1;
            let listed = self.runtime.block_on(v1.list_components(request)).unwrap();
            listed
                .into_inner()
                .components
                .into_iter()
                .filter_map(|c| c.component.map(|c| c.id))
                .collect()
        }

        fn discover(&mut self, request: DiscoveryRequest) -> Vec<String> {
            let v1 = &mut self.v1;
            let found = self
                .runtime
                .block_on(v1.discover_components(request))
                .unwrap();
            found
                .into_inner()
                .components
                .into_iter()
                .map(|c| c.id)
                .collect()
        }
    }

    fn component(id: &str, component_type: ComponentType, endpoint: &str) -> ComponentInfo {
        ComponentInfo {
            id: id.to_string(),
            name: format!("{id}-binary"),
            r#type: component_type as i32,
            output_event_types: vec!["stellar.ledger.v1".into()],
            endpoint: endpoint.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn registration_names_the_service_by_component_id_else_component_dot_id() {
        let plane = start(Duration::from_secs(10));
        let mut clients = Clients::connect(&plane);
        let by_field = clients
            .register(
                "proc",
                component("ignored", ComponentType::Processor, ":50051"),
            )
            .unwrap();
        assert_eq!(by_field, "proc");
        let by_info = clients
            .register("", component("src", ComponentType::Source, ":50052"))
            .unwrap();
        assert_eq!(by_info, "src");
        let err = clients
            .register("", component("", ComponentType::Source, ""))
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        // Healthy at once, and matched to the pipeline components by those ids.
        let status = clients.status("proc").unwrap();
        assert_eq!(status.status(), HealthStatus::Healthy);
        assert!(status.registered_at.is_some());
        assert!(status.last_heartbeat.is_none());
        // The listen address becomes the address the pipeline's containers reach it at.
        assert_eq!(status.component.unwrap().endpoint, "proc:50051");
        assert!(plane.is_registered("proc") && plane.is_registered("src"));
        assert_eq!(
            plane.service_of("src").unwrap().endpoint.as_deref(),
            Some("src:50052")
        );
        assert_eq!(clients.status("nobody").unwrap_err().code(), Code::NotFound);
    }

    #[test]
    fn heartbeats_set_the_status_unless_unknown_and_list_hides_the_unhealthy() {
        let plane = start(Duration::from_secs(10));
        let mut clients = Clients::connect(&plane);
        let proc = clients
            .register(
                "proc",
                component("proc", ComponentType::Processor, ":50051"),
            )
            .unwrap();
        let sink = clients
            .register("sink", component("sink", ComponentType::Consumer, ":50053"))
            .unwrap();

        clients.heartbeat(&proc, HealthStatus::Degraded).unwrap();
        clients.heartbeat(&proc, HealthStatus::Unknown).unwrap();
        let status = clients.status(&proc).unwrap();
        assert_eq!(status.status(), HealthStatus::Degraded);
        assert_eq!(status.metrics["events_processed"], "7");
        assert!(status.last_heartbeat.is_some());
        assert_eq!(
            plane.service_of("proc").unwrap().metrics["events_processed"],
            7.0
        );

        clients.heartbeat(&sink, HealthStatus::Unhealthy).unwrap();
        assert_eq!(clients.list(false, ComponentType::Unspecified), ["proc"]);
        assert_eq!(
            clients.list(true, ComponentType::Unspecified),
            ["proc", "sink"]
        );
        assert_eq!(clients.list(true, ComponentType::Consumer), ["sink"]);
        assert!(!plane.service_of("sink").unwrap().healthy);

        clients.heartbeat(&sink, HealthStatus::Healthy).unwrap();
        assert_eq!(
            clients.list(false, ComponentType::Unspecified),
            ["proc", "sink"]
        );
        assert_eq!(
            clients
                .heartbeat("nobody", HealthStatus::Healthy)
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }

    #[test]
    fn discovery_filters_by_type_event_type_and_metadata_and_unregister_removes() {
        let plane = start(Duration::from_secs(10));
        let mut clients = Clients::connect(&plane);
        let mut source = component("src", ComponentType::Source, ":50052");
        source.metadata.insert("network".into(), "testnet".into());
        clients.register("src", source).unwrap();
        let mut proc = component("proc", ComponentType::Processor, ":50051");
        proc.output_event_types = vec!["stellar.token.transfer.v1".into()];
        clients.register("proc", proc).unwrap();

        let all = clients.discover(DiscoveryRequest::default());
        assert_eq!(all, ["src", "proc"]);
        let sources = clients.discover(DiscoveryRequest {
            r#type: ComponentType::Source as i32,
            ..Default::default()
        });
        assert_eq!(sources, ["src"]);
        let transfers = clients.discover(DiscoveryRequest {
            event_types: vec!["stellar.token.transfer.v1".into()],
            ..Default::default()
        });
        assert_eq!(transfers, ["proc"]);
        let on_testnet = clients.discover(DiscoveryRequest {
            metadata_filters: HashMap::from([("network".into(), "testnet".into())]),
            ..Default::default()
        });
        assert_eq!(on_testnet, ["src"]);

        let v1 = &mut clients.v1;
        clients
            .runtime
            .block_on(v1.unregister_component(UnregisterRequest {
                service_id: "src".into(),
            }))
            .unwrap();
        assert!(!plane.is_registered("src"));
        let unregistered = plane
            .drain_events()
            .into_iter()
            .any(|e| matches!(e, ControlPlaneEvent::Unregistered { service_id, .. } if service_id == "src"));
        assert!(unregistered);
        let again = clients
            .runtime
            .block_on(v1.unregister_component(UnregisterRequest {
                service_id: "src".into(),
            }))
            .unwrap_err();
        assert_eq!(again.code(), Code::NotFound);
    }

    #[test]
    fn legacy_and_v1_registrations_share_one_registry() {
        let plane = start(Duration::from_secs(10));
        let mut clients = Clients::connect(&plane);
        let legacy = &mut clients.legacy;
        let legacy_id = clients
            .runtime
            .block_on(legacy.register(ServiceInfo {
                service_type: ServiceType::Source as i32,
                component_id: "src".into(),
                output_event_types: vec!["raw_ledger".into()],
                ..Default::default()
            }))
            .unwrap()
            .into_inner()
            .service_id;
        clients
            .register(
                "proc",
                component("proc", ComponentType::Processor, ":50051"),
            )
            .unwrap();

        // The legacy registration through v1: a SOURCE with the pipeline component's id.
        let through_v1 = clients.status(&legacy_id).unwrap().component.unwrap();
        assert_eq!(through_v1.id, "src");
        assert_eq!(through_v1.r#type(), ComponentType::Source);
        assert_eq!(
            clients.list(false, ComponentType::Unspecified),
            ["src", "proc"]
        );

        // The v1 registration through the legacy service, with a heartbeat's numbers.
        clients.heartbeat("proc", HealthStatus::Healthy).unwrap();
        let legacy = &mut clients.legacy;
        let listed = clients
            .runtime
            .block_on(legacy.list_services(()))
            .unwrap()
            .into_inner()
            .services;
        let proc = listed.iter().find(|s| s.service_id == "proc").unwrap();
        assert_eq!(proc.component_id, "proc");
        assert_eq!(proc.service_type(), ServiceType::Processor);
        assert!(proc.is_healthy);
        assert_eq!(proc.metrics["events_processed"], 7.0);
        // One table: both are rows of the same registry.
        let components: Vec<_> = plane
            .services()
            .into_iter()
            .filter_map(|s| s.component)
            .collect();
        assert_eq!(components, ["src", "proc"]);
    }

    #[test]
    fn silence_beyond_the_ttl_reads_unhealthy_through_v1() {
        // TTL = 3 x 200 ms; the test waits for the control plane's own expiry event.
        let plane = start(Duration::from_millis(200));
        let mut clients = Clients::connect(&plane);
        clients
            .register("sink", component("sink", ComponentType::Consumer, ":50053"))
            .unwrap();
        loop {
            match plane.next_event(Duration::from_secs(30)) {
                Some(ControlPlaneEvent::Unhealthy { component, .. }) => {
                    assert_eq!(component.as_deref(), Some("sink"));
                    break;
                }
                Some(_) => continue,
                None => panic!("no expiry within 30 s"),
            }
        }
        assert_eq!(
            clients.status("sink").unwrap().status(),
            HealthStatus::Unhealthy
        );
        assert!(clients.list(false, ComponentType::Unspecified).is_empty());
        assert_eq!(clients.list(true, ComponentType::Unspecified), ["sink"]);
        clients.heartbeat("sink", HealthStatus::Unknown).unwrap();
        assert_eq!(
            clients.status("sink").unwrap().status(),
            HealthStatus::Healthy
        );
    }
}
