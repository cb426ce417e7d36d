//! A control plane flowctl does not host: `flowctl control-plane` running as a container next
//! to a remote engine's pipeline (or any other one a run can reach). flowctl reads it with
//! `ListServices`, polling, and turns what changed between two polls into the same events the
//! embedded control plane sends, so the rest of a run cannot tell the two apart.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tonic::transport::Endpoint;

use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
use flowctl_proto::flowctl::{ServiceStatus, ServiceType};

use super::{ControlPlaneEvent, ControlPlaneView, MatchedBy, ServiceSnapshot};

/// How long one `ListServices` may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often [`RemoteControlPlane::next_event`] asks for changes.
const POLL: Duration = Duration::from_millis(500);

/// A control plane reached at an address; see the module documentation.
#[derive(Debug)]
pub struct RemoteControlPlane {
    address: SocketAddr,
    state: Mutex<PollState>,
}

#[derive(Debug, Default)]
struct PollState {
    /// What the last poll saw, by service id.
    last: BTreeMap<String, ServiceSnapshot>,
    pending: VecDeque<ControlPlaneEvent>,
}

impl RemoteControlPlane {
    /// Waits (at most `patience`) until the control plane at `address` answers.
    pub fn connect(address: SocketAddr, patience: Duration) -> Result<RemoteControlPlane> {
        let deadline = Instant::now() + patience;
        loop {
            match list_services(address, CALL_TIMEOUT) {
                Ok(_) => {
                    return Ok(RemoteControlPlane {
                        address,
                        state: Mutex::new(PollState::default()),
                    })
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "the control plane container did not answer at {address} within {} s",
                        patience.as_secs()
                    )))
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Polls once and queues what changed since the last poll.
    fn poll(&self, state: &mut PollState) {
        let now = SystemTime::now();
        let Ok(list) = list_services(self.address, CALL_TIMEOUT) else {
            return;
        };
        let current: BTreeMap<String, ServiceSnapshot> = list
            .into_iter()
            .map(|status| snapshot_of(status, now))
            .map(|s| (s.service_id.clone(), s))
            .collect();
        for (id, service) in &current {
            match state.last.get(id) {
                None => state.pending.push_back(ControlPlaneEvent::Registered {
                    component: service.component.clone(),
                    service_id: id.clone(),
                    declared: service.component.is_some(),
                }),
                Some(before) if before.healthy && !service.healthy => {
                    state.pending.push_back(ControlPlaneEvent::Unhealthy {
                        component: service.component.clone(),
                        service_id: id.clone(),
                        silent_for: service.last_heartbeat_age.unwrap_or_default(),
                    })
                }
                Some(before) if !before.healthy && service.healthy => {
                    state.pending.push_back(ControlPlaneEvent::Recovered {
                        component: service.component.clone(),
                        service_id: id.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        state.last = current;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PollState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ControlPlaneView for RemoteControlPlane {
    fn services(&self) -> Vec<ServiceSnapshot> {
        let now = SystemTime::now();
        list_services(self.address, CALL_TIMEOUT)
            .map(|list| list.into_iter().map(|s| snapshot_of(s, now)).collect())
            .unwrap_or_default()
    }

    fn next_event(&self, timeout: Duration) -> Option<ControlPlaneEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut state = self.lock();
                if let Some(event) = state.pending.pop_front() {
                    return Some(event);
                }
                self.poll(&mut state);
                if let Some(event) = state.pending.pop_front() {
                    return Some(event);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            thread::sleep(left.min(POLL));
        }
    }
}

/// Converts what `ListServices` returned into the shape the table uses; `now` dates the
/// heartbeat ages.
pub fn snapshot_of(status: ServiceStatus, now: SystemTime) -> ServiceSnapshot {
    let last_heartbeat_age = status
        .last_heartbeat
        .and_then(|at| SystemTime::try_from(at).ok())
        .map(|at| now.duration_since(at).unwrap_or_default());
    ServiceSnapshot {
        service_type: ServiceType::try_from(status.service_type).unwrap_or_default(),
        component: (!status.component_id.is_empty()).then_some(status.component_id),
        matched_by: MatchedBy::Unmatched,
        service_id: status.service_id,
        healthy: status.is_healthy,
        last_heartbeat_age,
        metrics: status.metrics.into_iter().collect::<BTreeMap<_, _>>(),
        endpoint: None,
    }
}

/// Calls `ListServices` on the control plane at `address`.
pub fn list_services(address: SocketAddr, timeout: Duration) -> Result<Vec<ServiceStatus>> {
    crate::runtime::shared()?.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("cannot connect to the control plane at {address}"))?;
        let list = ControlPlaneClient::new(channel)
            .list_services(())
            .await
            .map_err(|status| {
                anyhow::anyhow!(
                    "control plane at {address}: ListServices failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok(list.into_inner().services)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_services_status_becomes_a_snapshot() {
        let now = SystemTime::now();
        let status = ServiceStatus {
            service_id: "s".into(),
            service_type: ServiceType::Sink as i32,
            is_healthy: true,
            last_heartbeat: Some((now - Duration::from_secs(4)).into()),
            metrics: [("total_processed".to_string(), 2.0)].into(),
            component_id: "consumer-app".into(),
        };
        let snapshot = snapshot_of(status, now);
        assert_eq!(snapshot.component.as_deref(), Some("consumer-app"));
        assert_eq!(snapshot.service_type, ServiceType::Sink);
        assert_eq!(snapshot.last_heartbeat_age, Some(Duration::from_secs(4)));
        assert_eq!(snapshot.metrics["total_processed"], 2.0);
    }

    #[test]
    fn list_services_against_a_real_control_plane() {
        use crate::control_plane::{ControlPlane, ControlPlaneConfig};
        let plane = ControlPlane::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ControlPlaneConfig::new(Duration::from_secs(10), vec![]),
        )
        .unwrap();
        assert!(list_services(plane.local_addr(), Duration::from_secs(10))
            .unwrap()
            .is_empty());
        let address = plane.local_addr();
        plane.shutdown();
        let err = list_services(address, Duration::from_secs(2)).unwrap_err();
        assert!(format!("{err:#}").contains(&address.to_string()), "{err:#}");
    }

    #[test]
    fn a_remote_control_plane_reports_registrations_as_events() {
        use crate::control_plane::{ControlPlane, ControlPlaneConfig};
        use flowctl_proto::flowctl::ServiceInfo;
        let plane = ControlPlane::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ControlPlaneConfig::new(Duration::from_secs(10), vec![]),
        )
        .unwrap();
        let remote =
            RemoteControlPlane::connect(plane.local_addr(), Duration::from_secs(30)).unwrap();
        assert_eq!(remote.next_event(Duration::from_millis(50)), None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = ControlPlaneClient::connect(format!("http://{}", plane.local_addr()))
                .await
                .unwrap();
            client
                .register(ServiceInfo {
                    service_type: ServiceType::Sink as i32,
                    component_id: "sink".into(),
                    ..ServiceInfo::default()
                })
                .await
                .unwrap();
        });
        match remote.next_event(Duration::from_secs(30)) {
            Some(ControlPlaneEvent::Registered { component, .. }) => {
                assert_eq!(component.as_deref(), Some("sink"))
            }
            other => panic!("{other:?}"),
        }
        assert!(remote.is_registered("sink"));
        assert!(!remote.is_registered("source"));
    }
}
