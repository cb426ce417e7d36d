//! The control plane's registry: who registered, matched to which pipeline component, and
//! when each was last heard from. Plain data behind one mutex; every change that the user
//! should hear about is sent as a [`ControlPlaneEvent`].

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;

use flowctl_proto::flowctl::{
    RegistrationAck, ServiceHeartbeat, ServiceInfo, ServiceStatus, ServiceType,
};

use super::{ControlPlaneEvent, ExpectedComponent, MatchedBy, ServiceSnapshot};
use crate::plan::Role;

/// Metadata keys a component may use to say which pipeline component it is, for components
/// that send no `component_id` (CONTRACT.md §3).
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
}

impl Registration {
    pub(super) fn last_seen(&self) -> Instant {
        self.last_heartbeat
            .map(|(at, _)| at)
            .unwrap_or(self.registered_at)
    }

    /// Healthy while the last sign of life (registration or heartbeat) is within the TTL.
    pub(super) fn is_healthy(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_seen()) <= ttl
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

    pub(super) fn register(&mut self, mut info: ServiceInfo) -> RegistrationAck {
        let (component, matched_by) = self.match_component(&info);
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
        if !registration.announced_healthy {
            registration.announced_healthy = true;
            let _ = events.send(ControlPlaneEvent::Recovered {
                component: registration.component.clone(),
                service_id: registration.info.service_id.clone(),
            });
        }
        Ok(())
    }

    /// Announces services that went silent for longer than the TTL.
    pub(super) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        for registration in &mut self.services {
            if registration.announced_healthy && !registration.is_healthy(now, ttl) {
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
}
