//! What a run reports while it runs, from a background thread: control plane events
//! (registered, unhealthy, recovered) as they happen, and the status table once all is up, on
//! SIGUSR1 and every `--status-interval`. The rows come from the run's own plan, events and
//! control plane ([`StatusView`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::reach::Reachable;
use crate::control_plane::{ControlPlaneEvent, ControlPlaneView};
use crate::events::RunEvents;
use crate::health::HealthProbe;
use crate::logs::Console;
use crate::plan::RunPlan;
use crate::status::{add_unlisted_services, print_table, shorten, StatusRow};

/// What the status table of a `flowctl run` is built from.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// The run's plan.
    pub plan: RunPlan,
    /// Container exits seen so far.
    pub events: Arc<RunEvents>,
    /// The run's control plane.
    pub control: Arc<dyn ControlPlaneView>,
    /// How each started component's ports are reached.
    pub reachable: Arc<Reachable>,
    /// The flowctl.v1 relay's edges and their event counts (empty without a relay).
    pub relay: Arc<super::relay::EdgeCounts>,
    /// The terminal width tables are fitted to; `None` for full width.
    pub width: Option<usize>,
    /// The pid of each process component's current process (`driver: process`).
    pub pids: Arc<Pids>,
}

/// Process ids by component id.
pub type Pids = std::sync::Mutex<std::collections::BTreeMap<String, u32>>;

impl StatusView {
    /// The table, then one line per relayed edge with its event count.
    pub fn print(&self, console: Console) {
        print_table(console, &self.rows(), self.width);
        for line in super::relay::edge_lines(&self.relay) {
            console.info(line);
        }
    }

    /// One row per component (probing each health endpoint now), plus registrations that
    /// belong to no component of the plan.
    pub fn rows(&self) -> Vec<StatusRow> {
        let reachable = self
            .reachable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let exits = self.events.snapshot();
        let pids = self
            .pids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut rows: Vec<StatusRow> = self
            .plan
            .components
            .iter()
            .map(|component| {
                let ports = reachable.get(&component.id);
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
                                .find(|port| port.container_port == health.container_port)
                                .map(|port| HealthProbe::for_plan(port.address, health))
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
                    container: match (&component.process, pids.get(&component.id)) {
                        (None, _) => component.container_name.clone(),
                        (Some(_), Some(pid)) => format!("pid {pid}"),
                        (Some(_), None) => "-".to_string(),
                    },
                    image: match &component.process {
                        Some(process) => process.command.clone(),
                        None => component.image.clone(),
                    },
                    ports: ports
                        .into_iter()
                        .flatten()
                        .map(|port| {
                            let at = port.published.unwrap_or(port.address);
                            format!("{at}->{}", port.container_port)
                        })
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
        self.view.print(self.console);
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
                view.print(console);
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
                    view.print(console);
                }
                next_table = Some(Instant::now() + every);
            }
        }
    }
}
