//! The status table: one row per component with its container, ports, health, registration
//! and the key heartbeat metrics (CONTRACT.md §3), for `flowctl run` and `flowctl status`.
//!
//! `flowctl status` finds a running control plane through the label [`CONTROL_PLANE_LABEL`]
//! that `flowctl run` puts on every container it starts: its value is the control plane's
//! `ip:port` on the pipeline's bridge gateway, which the host can reach too. Labels survive a
//! crashed flowctl and need no state file; a dead run simply does not answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tonic::transport::Endpoint;

use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
use flowctl_proto::flowctl::{ServiceStatus, ServiceType};

use crate::control_plane::{ControlPlane, ControlPlaneEvent, MatchedBy, ServiceSnapshot};
use crate::engine::Engine;
use crate::events::RunEvents;
use crate::health::HealthProbe;
use crate::labels;
use crate::logs::Console;
use crate::plan::RunPlan;
use crate::run::PUBLISH_HOST_IP;

/// Container label holding the control plane's `ip:port` for `flowctl status`.
pub const CONTROL_PLANE_LABEL: &str = "io.flowctl.control-plane";

/// What the table shows about one component.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    /// The component id (or `(service id)` for an unmatched registration).
    pub component: String,
    /// Container name; `-` for a service with no container of this run.
    pub container: String,
    /// The image it runs.
    pub image: String,
    /// Published ports, e.g. `127.0.0.1:49153->50052`.
    pub ports: Vec<String>,
    /// What the container engine / health check says (`running`, `healthy`, `exited (1)`, ...).
    pub state: String,
    /// Whether the pipeline says this component registers with the control plane.
    pub expects_registration: bool,
    /// Its current registration.
    pub service: Option<ServiceSnapshot>,
}

/// Heartbeat metrics shown as "processed": the count (ledgers for the source and the processor,
/// events for the consumer, as upstream counts them) and the last ledger seen.
const TOTAL_PROCESSED: &str = "total_processed";
const LAST_LEDGER_KEYS: &[&str] = &["last_successful_sequence", "last_processed_ledger"];
/// Events: what a processor emits, what a consumer receives.
const EVENTS_EMITTED: &str = "total_events_emitted";
const EVENTS_RECEIVED: &str = "total_events_received";

impl StatusRow {
    fn health(&self) -> String {
        match &self.service {
            Some(service) if !service.healthy => match service.last_heartbeat_age {
                Some(age) => format!("unhealthy (silent {})", age_text(age)),
                None => "unhealthy (no heartbeat)".to_string(),
            },
            _ => self.state.clone(),
        }
    }

    fn registered(&self) -> String {
        match (&self.service, self.expects_registration) {
            (Some(service), _) => format!("yes ({})", service.service_id),
            (None, true) => "no".to_string(),
            (None, false) => "-".to_string(),
        }
    }

    fn heartbeat(&self) -> String {
        match self.service.as_ref().and_then(|s| s.last_heartbeat_age) {
            Some(age) => format!("{} ago", age_text(age)),
            None => "-".to_string(),
        }
    }

    fn metric(&self, key: &str) -> Option<f64> {
        self.service.as_ref()?.metrics.get(key).copied()
    }

    fn processed(&self) -> String {
        let processed = self.metric(TOTAL_PROCESSED);
        let last = LAST_LEDGER_KEYS
            .iter()
            .find_map(|key| self.metric(key))
            .filter(|last| *last > 0.0);
        match (processed, last) {
            (Some(n), Some(last)) => format!("{} (ledger {})", count(n), count(last)),
            (Some(n), None) => count(n),
            (None, Some(last)) => format!("ledger {}", count(last)),
            (None, None) => "-".to_string(),
        }
    }

    fn events(&self) -> String {
        match (self.metric(EVENTS_EMITTED), self.metric(EVENTS_RECEIVED)) {
            (Some(out), Some(received)) => format!("{} out, {} in", count(out), count(received)),
            (Some(out), None) => format!("{} out", count(out)),
            (None, Some(received)) => format!("{} in", count(received)),
            (None, None) => "-".to_string(),
        }
    }
}

/// A metric as a whole number (they are counters and ledger numbers carried as doubles).
fn count(value: f64) -> String {
    format!("{value:.0}")
}

fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    if secs < 60 {
        format!("{}s", secs)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

const HEADERS: [&str; 9] = [
    "COMPONENT",
    "CONTAINER",
    "IMAGE",
    "PORTS",
    "HEALTH",
    "REGISTERED",
    "HEARTBEAT",
    "PROCESSED",
    "EVENTS",
];

/// Renders `rows` as an aligned plain-text table (no colour, so it can be piped).
pub fn render(rows: &[StatusRow]) -> String {
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|row| {
            [
                row.component.clone(),
                row.container.clone(),
                row.image.clone(),
                if row.ports.is_empty() {
                    "-".to_string()
                } else {
                    row.ports.join(", ")
                },
                row.health(),
                row.registered(),
                row.heartbeat(),
                row.processed(),
                row.events(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(str::to_string);
    for line in std::iter::once(&header).chain(&cells) {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Adds rows for services that registered but belong to no row (a container of another
/// pipeline, a component matched to nothing), so nothing registered is hidden.
pub fn add_unlisted_services(rows: &mut Vec<StatusRow>, services: Vec<ServiceSnapshot>) {
    for service in services {
        let listed = rows.iter().any(|row| {
            row.service
                .as_ref()
                .is_some_and(|s| s.service_id == service.service_id)
        });
        if !listed {
            rows.push(StatusRow {
                component: service
                    .component
                    .clone()
                    .unwrap_or_else(|| format!("({})", service.service_id)),
                container: "-".to_string(),
                image: "-".to_string(),
                ports: Vec::new(),
                state: "-".to_string(),
                expects_registration: false,
                service: Some(service),
            });
        }
    }
}

/// `(container port, host port)` pairs by component id, filled in as components start.
pub type HostPorts = Mutex<BTreeMap<String, Vec<(u16, u16)>>>;

/// What the status table of a `flowctl run` is built from.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// The run's plan.
    pub plan: RunPlan,
    /// Container exits seen so far.
    pub events: Arc<RunEvents>,
    /// The run's control plane.
    pub control: Arc<ControlPlane>,
    /// `(container port, host port)` by component id, for started components.
    pub host_ports: Arc<HostPorts>,
}

impl StatusView {
    /// One row per component (probing each health endpoint now), plus registrations that
    /// belong to no component of the plan.
    pub fn rows(&self) -> Vec<StatusRow> {
        let host_ports = self
            .host_ports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let exits = self.events.snapshot();
        let mut rows: Vec<StatusRow> = self
            .plan
            .components
            .iter()
            .map(|component| {
                let ports = host_ports.get(&component.id);
                let state = match (exits.exit_of(&component.id), ports) {
                    (Some(exit), _) => match exit.code {
                        Some(code) => format!("exited ({code})"),
                        None => "stopped".to_string(),
                    },
                    (None, None) => "not started".to_string(),
                    (None, Some(ports)) => {
                        let probe = component.health.as_ref().and_then(|health| {
                            ports
                                .iter()
                                .find(|(container, _)| *container == health.container_port)
                                .map(|(_, host)| HealthProbe::new(*host, &health.path))
                        });
                        match probe.map(|probe| probe.check()) {
                            None => "running".to_string(),
                            Some(Ok(())) => "healthy".to_string(),
                            Some(Err(why)) => format!("unhealthy: {}", shorten(&why, 40)),
                        }
                    }
                };
                StatusRow {
                    component: component.id.clone(),
                    container: component.container_name.clone(),
                    image: component.image.clone(),
                    ports: ports
                        .into_iter()
                        .flatten()
                        .map(|(container, host)| format!("{PUBLISH_HOST_IP}:{host}->{container}"))
                        .collect(),
                    state,
                    expects_registration: component.register,
                    service: self.control.service_of(&component.id),
                }
            })
            .collect();
        add_unlisted_services(&mut rows, self.control.services());
        rows
    }
}

fn shorten(text: &str, max: usize) -> String {
    let text = text.lines().next().unwrap_or("");
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints the status table through `console`, one line each.
pub fn print_table(console: Console, rows: &[StatusRow]) {
    for line in render(rows).lines() {
        console.info(format!("  {line}"));
    }
}

/// The background thread of `flowctl run` that reports control plane events (registered,
/// unhealthy, recovered) as they happen and prints the status table on SIGUSR1 and every
/// `--status-interval`.
#[derive(Debug)]
pub struct Notices {
    view: StatusView,
    console: Console,
    /// Set once everything is up: periodic tables only make sense from then on.
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Notices {
    /// Starts reporting.
    pub fn start(view: StatusView, console: Console, interval: Option<Duration>) -> Notices {
        let up = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (view, up, stop) = (view.clone(), up.clone(), stop.clone());
            thread::Builder::new()
                .name("notices".into())
                .spawn(move || report(&view, console, interval, &up, &stop))
                .map_err(|e| console.warn(format!("cannot report control plane events: {e}")))
                .ok()
        };
        Notices {
            view,
            console,
            up,
            stop,
            thread,
        }
    }

    /// Prints the table now and starts the periodic tables.
    pub fn print_status(&self) {
        print_table(self.console, &self.view.rows());
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops reporting (before teardown: stopped components go silent, which is no news).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the reporting thread looks at its stop flag.
const NOTICE_POLL: Duration = Duration::from_millis(200);

fn report(
    view: &StatusView,
    console: Console,
    interval: Option<Duration>,
    up: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut next_table = interval.map(|every| Instant::now() + every);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let wait = next_table
            .map(|at| at.saturating_duration_since(now).min(NOTICE_POLL))
            .unwrap_or(NOTICE_POLL);
        match view.control.next_event(wait) {
            Some(event @ ControlPlaneEvent::StatusRequested) => {
                console.info(event.to_string());
                print_table(console, &view.rows());
            }
            Some(event @ ControlPlaneEvent::Unhealthy { .. }) => {
                // A container that exited stops heartbeating; its exit is reported elsewhere.
                let exited = match &event {
                    ControlPlaneEvent::Unhealthy {
                        component: Some(component),
                        ..
                    } => view.events.snapshot().exit_of(component).is_some(),
                    _ => false,
                };
                if !exited && !stop.load(Ordering::SeqCst) {
                    console.warn(event.to_string());
                }
            }
            Some(event) if !stop.load(Ordering::SeqCst) => console.info(event.to_string()),
            Some(_) | None => {}
        }
        if let (Some(at), Some(every)) = (next_table, interval) {
            if Instant::now() >= at {
                if up.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                    print_table(console, &view.rows());
                }
                next_table = Some(Instant::now() + every);
            }
        }
    }
}

/// How long `flowctl status` waits for a control plane.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// `flowctl status`: a table per running pipeline (optionally only `project`'s). Runs are
/// found by the labels of their containers; each run's control plane is asked with
/// `ListServices` at the address in [`CONTROL_PLANE_LABEL`].
pub fn show(engine: &Engine, project: Option<&str>) -> Result<String> {
    let mut filters = vec![labels::managed_filter()];
    if let Some(project) = project {
        filters.push(format!("{}={project}", labels::PROJECT));
    }
    let ids = engine.list_containers(&filters)?;
    let containers = engine.inspect_containers(&ids)?;
    if containers.is_empty() {
        return Ok(match project {
            Some(project) => format!("no flowctl pipeline of project {project} is running\n"),
            None => "no flowctl pipeline is running\n".to_string(),
        });
    }
    let mut runs: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for container in containers {
        let run = container
            .labels
            .get(labels::RUN)
            .cloned()
            .unwrap_or_default();
        runs.entry(run).or_default().push(container);
    }
    let mut out = String::new();
    for (index, (run, mut containers)) in runs.into_iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let label = |key: &str| {
            containers
                .iter()
                .find_map(|c| c.labels.get(key).cloned())
                .unwrap_or_default()
        };
        let pipeline = label(labels::PIPELINE);
        let endpoint = label(CONTROL_PLANE_LABEL);
        let _ = write!(out, "pipeline {pipeline} (run {run}");
        let project = label(labels::PROJECT);
        if !project.is_empty() {
            let _ = write!(out, ", project {project}");
        }
        let services = match endpoint.parse::<SocketAddr>() {
            Ok(address) => match list_services(address, STATUS_TIMEOUT) {
                Ok(list) => {
                    let _ = writeln!(out, "): control plane {address}");
                    let now = SystemTime::now();
                    list.into_iter().map(|s| snapshot_of(s, now)).collect()
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "): control plane {address} does not answer ({}); if its flowctl \
                         has ended, `flowctl gc` removes what is left",
                        e.root_cause()
                    );
                    Vec::new()
                }
            },
            Err(_) => {
                let _ = writeln!(out, "): no control plane recorded");
                Vec::new()
            }
        };
        let mut rows: Vec<StatusRow> = containers
            .iter()
            .map(|container| {
                let component = container
                    .labels
                    .get(labels::COMPONENT)
                    .cloned()
                    .unwrap_or_else(|| container.name.clone());
                let state = if container.state.running {
                    container.state.status.clone()
                } else {
                    format!("{} ({})", container.state.status, container.state.exit_code)
                };
                StatusRow {
                    service: services
                        .iter()
                        .find(|s: &&ServiceSnapshot| s.component.as_deref() == Some(&component))
                        .cloned(),
                    component,
                    container: container.name.clone(),
                    image: container.image.clone(),
                    ports: container.ports.clone(),
                    state,
                    expects_registration: !endpoint.is_empty(),
                }
            })
            .collect();
        add_unlisted_services(&mut rows, services);
        out.push_str(&render(&rows));
    }
    Ok(out)
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
    }
}

/// Calls `ListServices` on the control plane at `address`.
pub fn list_services(address: SocketAddr, timeout: Duration) -> Result<Vec<ServiceStatus>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    runtime.block_on(async {
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

    fn snapshot(id: &str, component: &str, metrics: &[(&str, f64)]) -> ServiceSnapshot {
        ServiceSnapshot {
            service_id: id.to_string(),
            component: Some(component.to_string()),
            matched_by: MatchedBy::ComponentId,
            service_type: ServiceType::Processor,
            healthy: true,
            last_heartbeat_age: Some(Duration::from_secs(3)),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn row(component: &str, service: Option<ServiceSnapshot>) -> StatusRow {
        StatusRow {
            component: component.to_string(),
            container: component.to_string(),
            image: format!("flowctl/{component}:dev"),
            ports: vec!["127.0.0.1:49153->50051".into()],
            state: "healthy".to_string(),
            expects_registration: true,
            service,
        }
    }

    #[test]
    fn table_shows_metrics_registration_and_health() {
        let mut silent = snapshot("sink-3", "consumer-app", &[("total_events_received", 9.0)]);
        silent.healthy = false;
        silent.last_heartbeat_age = Some(Duration::from_secs(95));
        let rows = vec![
            row(
                "ttp-processor",
                Some(snapshot(
                    "ttp-processor-2",
                    "ttp-processor",
                    &[
                        ("total_processed", 12.0),
                        ("last_processed_ledger", 1011.0),
                        ("total_events_emitted", 340.0),
                    ],
                )),
            ),
            row("consumer-app", Some(silent)),
            row("waiting", None),
            StatusRow {
                expects_registration: false,
                ports: vec![],
                state: "running".into(),
                ..row("third-party", None)
            },
        ];
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("COMPONENT"), "{table}");
        // Columns line up: every row's CONTAINER starts where the header's does.
        let column = lines[0].find("CONTAINER").unwrap();
        for line in &lines[1..] {
            assert_eq!(&line[column - 2..column], "  ", "{table}");
        }
        assert!(lines[1].contains("yes (ttp-processor-2)"), "{table}");
        assert!(lines[1].contains("3s ago"), "{table}");
        assert!(lines[1].contains("12 (ledger 1011)"), "{table}");
        assert!(lines[1].contains("340 out"), "{table}");
        assert!(lines[2].contains("unhealthy (silent 1m35s)"), "{table}");
        assert!(lines[2].contains("9 in"), "{table}");
        assert!(lines[3].contains(" no "), "{table}");
        assert!(lines[4].contains("running"), "{table}");
    }

    #[test]
    fn services_without_a_row_are_added() {
        let mut rows = vec![row(
            "ttp-processor",
            Some(snapshot("p-1", "ttp-processor", &[])),
        )];
        let mut stray = snapshot("service-4", "x", &[]);
        stray.component = None;
        add_unlisted_services(
            &mut rows,
            vec![snapshot("p-1", "ttp-processor", &[]), stray],
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].component, "(service-4)");
        assert_eq!(rows[1].container, "-");
    }

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
    fn ages_read_well() {
        assert_eq!(age_text(Duration::from_millis(2500)), "2s");
        assert_eq!(age_text(Duration::from_secs(61)), "1m01s");
        assert_eq!(age_text(Duration::from_secs(3720)), "1h02m");
    }
}
