//! The control plane's registry: who registered, matched to which pipeline component, and
//! when each was last heard from. Plain data behind one mutex; every change that the user
//! should hear about is sent as a [`ControlPlaneEvent`].

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;

use flowctl_proto::flowctl::v1::{ComponentInfo, ComponentType, HealthStatus};
use flowctl_proto::flowctl::{
    RegistrationAck, ServiceHeartbeat, ServiceInfo, ServiceStatus, ServiceType,
};

use super::{ControlPlaneEvent, ExpectedComponent, MatchedBy, ServiceSnapshot};
use crate::plan::Role;

/// The v1 type of a legacy service type (PIPELINE is upstream Node's word for a consumer).
pub(super) fn component_type_of(service_type: ServiceType) -> ComponentType {
    match service_type {
        ServiceType::Source => ComponentType::Source,
        ServiceType::Processor => ComponentType::Processor,
        ServiceType::Sink | ServiceType::Pipeline => ComponentType::Consumer,
        ServiceType::Unspecified => ComponentType::Unspecified,
    }
}

pub(super) fn service_type_of(component_type: ComponentType) -> ServiceType {
    match component_type {
        ComponentType::Source => ServiceType::Source,
        ComponentType::Processor => ServiceType::Processor,
        ComponentType::Consumer => ServiceType::Sink,
        ComponentType::Unspecified => ServiceType::Unspecified,
    }
}

/// Metadata keys a component may use to say which pipeline component it is, for components
/// that send no `component_id` (docs/contract.md §3).
const COMPONENT_ID_METADATA_KEYS: &[&str] = &[
    "FLOWCTL_COMPONENT_ID",
    "flowctl_component_id",
    "component_id",
];

/// Whether a registration of `service_type` can come from a component of `role`. The upstream
/// Node consumer registers as `SERVICE_TYPE_PIPELINE` meaning "consumer".
fn role_accepts(role: Role, service_type: ServiceType) -> bool {
    matches!(
        (role, service_type),
        (Role::Source, ServiceType::Source)
            | (Role::Processor, ServiceType::Processor)
            | (Role::Sink, ServiceType::Sink | ServiceType::Pipeline)
            // A whole-pipeline job may register as whatever it is.
            | (Role::Pipeline, _)
    )
}

#[derive(Debug)]
pub(super) struct Registration {
    pub(super) info: ServiceInfo,
    pub(super) component: Option<String>,
    pub(super) matched_by: MatchedBy,
    pub(super) registered_at: Instant,
    pub(super) last_heartbeat: Option<(Instant, SystemTime)>,
    pub(super) metrics: HashMap<String, f64>,
    /// Whether the last notice said healthy, so each change is announced once.
    pub(super) announced_healthy: bool,
    /// What the component says of itself: HEALTHY for legacy registrations (they have no
    /// status), the last known status of a v1 component (a heartbeat with UNKNOWN keeps it).
    pub(super) reported: HealthStatus,
    /// Wall-clock registration time, for `ComponentStatusResponse.registered_at`.
    pub(super) registered_wall: SystemTime,
    /// The `ComponentInfo` of a v1 registration (endpoint mapped, see [`map_endpoint`]);
    /// `None` for legacy ones, which v1 sees through [`Registration::component_info`].
    pub(super) v1_info: Option<ComponentInfo>,
}

impl Registration {
    pub(super) fn last_seen(&self) -> Instant {
        self.last_heartbeat
            .map(|(at, _)| at)
            .unwrap_or(self.registered_at)
    }

    /// Healthy while the last sign of life (registration or heartbeat) is within the TTL and
    /// the component does not call itself unhealthy.
    pub(super) fn is_healthy(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_seen()) <= ttl
            && self.reported != HealthStatus::Unhealthy
    }

    /// The v1 status: UNHEALTHY once silent beyond the TTL, else what it last reported.
    pub(super) fn health_status(&self, now: Instant, ttl: Duration) -> HealthStatus {
        if now.saturating_duration_since(self.last_seen()) > ttl {
            HealthStatus::Unhealthy
        } else {
            self.reported
        }
    }

    /// This registration as v1 sees it, whichever protocol registered it.
    pub(super) fn component_info(&self) -> ComponentInfo {
        if let Some(info) = &self.v1_info {
            return info.clone();
        }
        let legacy = &self.info;
        ComponentInfo {
            id: self
                .component
                .clone()
                .unwrap_or_else(|| legacy.service_id.clone()),
            name: self.component.clone().unwrap_or_default(),
            description: String::new(),
            version: String::new(),
            r#type: component_type_of(legacy.service_type()) as i32,
            input_event_types: legacy.input_event_types.clone(),
            output_event_types: legacy.output_event_types.clone(),
            endpoint: legacy.health_endpoint.clone(),
            metadata: legacy.metadata.clone(),
        }
    }

    /// The metrics as v1 carries them (text).
    pub(super) fn text_metrics(&self) -> HashMap<String, String> {
        self.metrics
            .iter()
            .map(|(key, value)| (key.clone(), value.to_string()))
            .collect()
    }

    pub(super) fn status(&self, now: Instant, ttl: Duration) -> ServiceStatus {
        ServiceStatus {
            service_id: self.info.service_id.clone(),
            service_type: self.info.service_type,
            is_healthy: self.is_healthy(now, ttl),
            last_heartbeat: self.last_heartbeat.map(|(_, at)| at.into()),
            metrics: self.metrics.clone(),
            component_id: self.component.clone().unwrap_or_default(),
        }
    }

    pub(super) fn snapshot(&self, now: Instant, ttl: Duration) -> ServiceSnapshot {
        ServiceSnapshot {
            service_id: self.info.service_id.clone(),
            component: self.component.clone(),
            matched_by: self.matched_by,
            service_type: self.info.service_type(),
            healthy: self.is_healthy(now, ttl),
            last_heartbeat_age: self
                .last_heartbeat
                .map(|(at, _)| now.saturating_duration_since(at)),
            metrics: self.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            endpoint: self.v1_info.as_ref().map(|info| info.endpoint.clone()),
        }
    }
}

#[derive(Debug)]
pub(super) struct Registry {
    pub(super) ttl: Duration,
    pub(super) expected: Vec<ExpectedComponent>,
    /// By service id, in registration order for stable listings.
    pub(super) services: Vec<Registration>,
    pub(super) next_id: u64,
    pub(super) events: mpsc::Sender<ControlPlaneEvent>,
}

impl Registry {
    pub(super) fn find(&self, service_id: &str) -> Option<&Registration> {
        self.services
            .iter()
            .find(|r| r.info.service_id == service_id)
    }

    pub(super) fn find_mut(&mut self, service_id: &str) -> Option<&mut Registration> {
        self.services
            .iter_mut()
            .find(|r| r.info.service_id == service_id)
    }

    pub(super) fn is_declared(&self, component: &str) -> bool {
        self.expected.iter().any(|e| e.id == component)
    }

    /// Ties a registration to a component: `component_id`, else a component id in the metadata,
    /// else by service type among declared components that have not registered yet.
    pub(super) fn match_component(&self, info: &ServiceInfo) -> (Option<String>, MatchedBy) {
        if !info.component_id.is_empty() {
            return (Some(info.component_id.clone()), MatchedBy::ComponentId);
        }
        for key in COMPONENT_ID_METADATA_KEYS {
            if let Some(id) = info.metadata.get(*key).filter(|id| !id.is_empty()) {
                return (Some(id.clone()), MatchedBy::Metadata);
            }
        }
        let service_type = info.service_type();
        let candidates: Vec<&ExpectedComponent> = self
            .expected
            .iter()
            .filter(|e| role_accepts(e.role, service_type))
            .filter(|e| {
                !self
                    .services
                    .iter()
                    .any(|r| r.component.as_deref() == Some(&e.id))
            })
            .collect();
        // A metadata value or the health endpoint's host naming a candidate settles ties
        // (components reach each other by their id as network alias).
        let named = candidates.iter().find(|e| {
            info.metadata.values().any(|v| v == &e.id)
                || endpoint_host(&info.health_endpoint) == Some(e.id.as_str())
        });
        // Otherwise the first one: flowctl starts components one by one in dependency order,
        // so the registration it is waiting for is the earliest unregistered one of that type.
        match named.or(candidates.first()) {
            Some(e) => (Some(e.id.clone()), MatchedBy::ServiceType),
            None => (None, MatchedBy::Unmatched),
        }
    }

    pub(super) fn register(&mut self, info: ServiceInfo) -> RegistrationAck {
        self.register_as(info, None)
    }

    /// Registers a legacy service (`v1_info` `None`) or a v1 component (`info` then is its
    /// legacy view): one registry, so either protocol sees both.
    pub(super) fn register_as(
        &mut self,
        mut info: ServiceInfo,
        mut v1_info: Option<ComponentInfo>,
    ) -> RegistrationAck {
        let (component, matched_by) = self.match_component(&info);
        if let (Some(v1), Some(component)) = (&mut v1_info, &component) {
            v1.endpoint = map_endpoint(&v1.endpoint, component);
        }
        if info.service_id.is_empty() {
            self.next_id += 1;
            let stem = component.as_deref().unwrap_or("service");
            info.service_id = format!("{stem}-{}", self.next_id);
        }
        // One live registration per service id, and per component: a restarted container
        // registers anew and replaces its former self.
        self.services
            .retain(|r| r.info.service_id != info.service_id);
        if let Some(component) = &component {
            self.services
                .retain(|r| r.component.as_ref() != Some(component));
        }
        let service_id = info.service_id.clone();
        let declared = component.as_deref().is_some_and(|c| self.is_declared(c));
        log::debug!(
            "control plane: {service_id} registered ({:?}, matched {matched_by:?} to {component:?})",
            info.service_type()
        );
        let _ = self.events.send(ControlPlaneEvent::Registered {
            component: component.clone(),
            service_id: service_id.clone(),
            declared,
        });
        self.services.push(Registration {
            info,
            component,
            matched_by,
            registered_at: Instant::now(),
            last_heartbeat: None,
            metrics: HashMap::new(),
            announced_healthy: true,
            reported: HealthStatus::Healthy,
            registered_wall: SystemTime::now(),
            v1_info,
        });
        RegistrationAck {
            service_id,
            topic_names: Vec::new(),
            connection_info: HashMap::new(),
        }
    }

    pub(super) fn heartbeat(&mut self, heartbeat: ServiceHeartbeat) -> Result<(), Status> {
        let events = self.events.clone();
        let registration = self.find_mut(&heartbeat.service_id).ok_or_else(|| {
            Status::not_found(format!(
                "unknown service id {:?}; register first",
                heartbeat.service_id
            ))
        })?;
        // Liveness uses flowctl's own clock, so a component with a skewed clock is judged fairly.
        registration.last_heartbeat = Some((Instant::now(), SystemTime::now()));
        registration.metrics = heartbeat.metrics;
        registration.reported = HealthStatus::Healthy;
        Self::announce_recovery(registration, &events);
        Ok(())
    }

    /// A v1 heartbeat: like a legacy one, and its status replaces the reported one unless it
    /// is UNKNOWN (upstream keeps the status then). Text metrics that are numbers are kept.
    pub(super) fn heartbeat_v1(
        &mut self,
        service_id: &str,
        status: HealthStatus,
        metrics: HashMap<String, String>,
    ) -> Result<(), Status> {
        let events = self.events.clone();
        let registration = self.find_mut(service_id).ok_or_else(|| {
            Status::not_found(format!("unknown service id {service_id:?}; register first"))
        })?;
        registration.last_heartbeat = Some((Instant::now(), SystemTime::now()));
        registration.metrics = metrics
            .into_iter()
            .filter_map(|(key, value)| value.trim().parse::<f64>().ok().map(|v| (key, v)))
            .collect();
        if status != HealthStatus::Unknown {
            registration.reported = status;
        }
        if registration.reported != HealthStatus::Unhealthy {
            Self::announce_recovery(registration, &events);
        }
        Ok(())
    }

    /// Removes a registration (v1 `UnregisterComponent`).
    pub(super) fn unregister(&mut self, service_id: &str) -> Result<(), Status> {
        let position = self
            .services
            .iter()
            .position(|r| r.info.service_id == service_id)
            .ok_or_else(|| Status::not_found(format!("unknown service id {service_id:?}")))?;
        let registration = self.services.remove(position);
        let _ = self.events.send(ControlPlaneEvent::Unregistered {
            component: registration.component,
            service_id: registration.info.service_id,
        });
        Ok(())
    }

    fn announce_recovery(
        registration: &mut Registration,
        events: &mpsc::Sender<ControlPlaneEvent>,
    ) {
        if !registration.announced_healthy {
            registration.announced_healthy = true;
            let _ = events.send(ControlPlaneEvent::Recovered {
                component: registration.component.clone(),
                service_id: registration.info.service_id.clone(),
            });
        }
    }

    /// Announces services that went silent for longer than the TTL.
    pub(super) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        for registration in &mut self.services {
            // Only silence is announced here (the event says "no heartbeat for ..."); a v1
            // component reporting UNHEALTHY shows as unhealthy in listings and the table.
            let silent = now.saturating_duration_since(registration.last_seen()) > ttl;
            if registration.announced_healthy && silent {
                registration.announced_healthy = false;
                let _ = self.events.send(ControlPlaneEvent::Unhealthy {
                    component: registration.component.clone(),
                    service_id: registration.info.service_id.clone(),
                    silent_for: now.saturating_duration_since(registration.last_seen()),
                });
            }
        }
    }
}

/// A v1 component registers its own listen address (`":50051"`, `"0.0.0.0:50051"`), which
/// means nothing outside its container: it becomes `<component>:<port>`, the address at which
/// the pipeline's containers reach it (its network alias). Addresses with a real host are kept.
pub(super) fn map_endpoint(endpoint: &str, component: &str) -> String {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return endpoint.to_string();
    };
    let unspecified = matches!(
        host,
        "" | "0.0.0.0" | "[::]" | "::" | "localhost" | "127.0.0.1"
    );
    if unspecified && port.parse::<u16>().is_ok() {
        format!("{component}:{port}")
    } else {
        endpoint.to_string()
    }
}

/// The host of `http://host:port/path`, if it has one.
fn endpoint_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    (!host.is_empty()).then_some(host)
}

pub(super) type SharedRegistry = Arc<Mutex<Registry>>;

pub(super) fn lock(registry: &SharedRegistry) -> MutexGuard<'_, Registry> {
    // A panic while holding the lock leaves a consistent registry (every update is one
    // assignment or push), so keep serving it.
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_a_health_endpoint() {
        assert_eq!(
            endpoint_host("http://ttp-processor:8088/health"),
            Some("ttp-processor")
        );
        assert_eq!(endpoint_host("consumer-app:8093"), Some("consumer-app"));
        assert_eq!(endpoint_host(""), None);
    }

    #[test]
    fn a_v1_listen_address_becomes_the_components_network_address() {
        assert_eq!(map_endpoint(":50051", "proc"), "proc:50051");
        assert_eq!(map_endpoint("0.0.0.0:50051", "proc"), "proc:50051");
        assert_eq!(map_endpoint("other-host:50051", "proc"), "other-host:50051");
        assert_eq!(map_endpoint("", "proc"), "");
    }
}
