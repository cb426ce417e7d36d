//! What every way a run ends uses (the one exit sequence is `Run::end` in `run/mod.rs`): the
//! signal policy (SIGINT, SIGTERM, SIGHUP), the typed outcome that start-up and supervision
//! return ([`Halt`]), the stop order, and the [`CleanupGuard`] that removes the run through
//! [`cleanup::remove_run`] on a normal end, a failure, a signal, or while unwinding from a panic.
//!
//! The signal policy is process-wide and installed once, by `main`, before anything runs
//! (as just's `signal_handler.rs`): a run attaches to it once its engine is known, and
//! `flowctl control-plane` waits on its flag. The handler only records and kills the engine
//! calls in flight (a hung daemon cannot hold flowctl): the first signal stops gracefully, the
//! second starts the forced removal on a thread of its own, a third exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cleanup::{self, Removal, StopGroup, StopOrder};
use crate::engine::{self, Engine};
use crate::events::{Exit, RunEvents};
use crate::logs::{elapsed_ms, last_lines, Console, LogMux};
use crate::plan::{self, ComponentPlan, RunPlan};
use crate::reaper::Reaper;

/// The exit code after a stop by a signal (128 + SIGINT, as shells report).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Log lines shown with a failure.
pub const FAILURE_LOG_LINES: usize = 20;

/// How a run ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every sink exited 0.
    Completed,
    /// Stopped by SIGINT, SIGTERM or SIGHUP.
    Interrupted,
}

/// Why start-up or supervision stopped early. Control flow matches on this, never on the text
/// of an error.
#[derive(Debug)]
pub enum Halt {
    /// SIGINT, SIGTERM or SIGHUP arrived.
    Interrupted,
    /// A component's container stopped with a failure (its restart policy decides what next).
    Exited(ExitError),
    /// Anything else that makes the run fail.
    Failed(anyhow::Error),
}

impl From<crate::engine::EngineError> for Halt {
    fn from(error: crate::engine::EngineError) -> Halt {
        Halt::Failed(error.into())
    }
}

impl From<anyhow::Error> for Halt {
    fn from(error: anyhow::Error) -> Halt {
        Halt::Failed(error)
    }
}

impl Halt {
    /// The message for the user (`{:#}` of an error chain).
    pub fn message(&self) -> String {
        match self {
            Halt::Interrupted => "interrupted".to_string(),
            Halt::Exited(exit) => exit.to_string(),
            Halt::Failed(error) => format!("{error:#}"),
        }
    }
}

/// A component's container stopped with a failure: what happened (its exit code or OOM kill),
/// when, and its last log lines.
#[derive(Debug)]
pub struct ExitError {
    pub id: String,
    /// E.g. "exited with code 9".
    pub what: String,
    /// E.g. "while running".
    pub when: &'static str,
    logs: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "component `{}` {} {}\nlast log lines:\n{}",
            self.id,
            self.what,
            self.when,
            last_lines(&self.logs, FAILURE_LOG_LINES, &self.id)
        )
    }
}

impl std::error::Error for ExitError {}

impl ExitError {
    /// A stop described by `what` (e.g. "exited with code 9"), with the last lines it wrote.
    pub fn new(id: &str, what: String, when: &'static str, logs: String) -> ExitError {
        ExitError {
            id: id.to_string(),
            what,
            when,
            logs,
        }
    }
}

/// The error for a component that stopped: its exit code (or OOM kill) and last log lines.
pub fn exit_error(
    engine: &Engine,
    logs: &LogMux,
    component: &ComponentPlan,
    exit: &Exit,
    when: &'static str,
) -> ExitError {
    let id = &component.id;
    let oom = engine
        .inspect_container(&component.container_name)
        .ok()
        .flatten()
        .is_some_and(|info| info.state.oom_killed);
    let what = match (&exit.code, &exit.error) {
        (Some(code), _) if oom => {
            format!("was killed for running out of memory (exit code {code})")
        }
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(error)) => format!("could not be watched: {error}"),
        (None, None) => "stopped".to_string(),
    };
    logs.wait_drained(id, Duration::from_secs(2));
    let logs = engine
        .logs_tail(&component.container_name, FAILURE_LOG_LINES)
        .unwrap_or_default();
    ExitError {
        id: id.clone(),
        what,
        when,
        logs,
    }
}

/// [`Halt::Interrupted`] once a signal reached the run of `events`.
///
/// The signal policy kills the engine calls in flight before it tells the run (so that the
/// teardown's own calls are not killed), so a start-up step whose call it killed can fail and
/// ask here first: once calls were killed, the run waits (up to a second) to be told.
pub fn check_interrupted(events: &RunEvents) -> Result<(), Halt> {
    let mut state = events.snapshot();
    if state.interrupts == 0 && engine::calls_were_killed() {
        let deadline = Instant::now() + Duration::from_secs(1);
        while state.interrupts == 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = events.wait_change(state.version, left);
        }
    }
    if state.interrupts > 0 {
        Err(Halt::Interrupted)
    } else {
        Ok(())
    }
}

/// What the signal policy needs of the run it serves.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub events: Arc<RunEvents>,
    pub run_id: String,
    pub console: Console,
    /// What a forced stop (the second signal) removes.
    pub forced: Forced,
}

/// What a run is made of, as the forced stop removes it.
#[derive(Debug, Clone)]
pub enum Forced {
    /// Everything labelled with the run on this engine; with `swarm`, its services too.
    Engine { engine: Engine, swarm: bool },
    /// The processes in the run's record (`driver: process`), killed at once.
    Processes,
    /// Both: a `driver: process` file whose other components are containers.
    Mixed { engine: Engine },
}

impl Forced {
    /// Removes what `run_id` is made of, without grace.
    fn remove(&self, run_id: &str, console: Console) {
        match self {
            Forced::Engine { engine, swarm } => {
                let removal = cleanup::remove_forced(engine, run_id, *swarm);
                for error in removal.errors {
                    console.warn(format!("cleanup: {error}"));
                }
            }
            Forced::Processes => {
                let stopped = crate::processes::RunRecord::path(run_id)
                    .and_then(|path| crate::processes::RunRecord::load(&path));
                match stopped.map(|record| record.stop_all(Some(Duration::ZERO))) {
                    Ok(Ok(_)) => {}
                    Ok(Err(left)) => console.warn(format!("cleanup: {left}")),
                    Err(e) => console.warn(format!("cleanup: {e:#}")),
                }
            }
            Forced::Mixed { engine } => {
                Forced::Processes.remove(run_id, console);
                Forced::Engine {
                    engine: engine.clone(),
                    swarm: false,
                }
                .remove(run_id, console);
            }
        }
    }
}

/// The process-wide reaction to SIGINT, SIGTERM and SIGHUP: the one signal handler of
/// flowctl, for `run` and `control-plane` alike.
#[derive(Debug, Default)]
pub struct SignalPolicy {
    state: Mutex<PolicyState>,
    /// Set by the first signal; what a command without a run (`control-plane`) waits on.
    interrupted: AtomicBool,
}

#[derive(Debug, Default)]
struct PolicyState {
    /// Signals received, whether or not a run was attached.
    signals: u32,
    run: Option<ActiveRun>,
}

static POLICY: OnceLock<SignalPolicy> = OnceLock::new();

/// Installs the signal policy. `main` calls this once, before anything else happens.
pub fn install_signal_policy() -> Result<&'static SignalPolicy> {
    let policy = POLICY.get_or_init(SignalPolicy::default);
    ctrlc::set_handler(|| {
        if let Some(policy) = POLICY.get() {
            policy.on_signal();
        }
    })
    .context("cannot install the signal handler")?;
    Ok(policy)
}

/// While alive, signals go to the attached run; dropping it detaches.
#[derive(Debug)]
pub struct Attached<'a> {
    policy: &'a SignalPolicy,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.policy.lock().run = None;
    }
}

impl SignalPolicy {
    fn lock(&self) -> MutexGuard<'_, PolicyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes signals to `run` from now on; signals that came before count as its own.
    pub fn attach(&self, run: ActiveRun) -> Attached<'_> {
        let mut state = self.lock();
        for _ in 0..state.signals {
            run.events.interrupt();
        }
        state.run = Some(run);
        Attached { policy: self }
    }

    /// Set once a signal arrived.
    pub fn interrupted(&self) -> &AtomicBool {
        &self.interrupted
    }

    fn on_signal(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        let (count, run) = {
            let mut state = self.lock();
            state.signals += 1;
            (state.signals, state.run.clone())
        };
        let Some(run) = run else {
            // Nothing to clean up yet (or any more): only a third signal ends flowctl here.
            if count >= 3 {
                engine::kill_in_flight();
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            return;
        };
        let console = run.console;
        match count {
            1 => {
                // A call the daemon never answers would hold the run forever. Killed before the
                // run hears of the signal: only then does its teardown start, whose graceful
                // `stop` must not be killed too.
                engine::kill_in_flight();
                run.events.interrupt();
                console.info("stopping (press Ctrl+C again to force)");
            }
            2 => {
                run.events.interrupt();
                console.info(match run.forced {
                    Forced::Processes => "forcing: killing every process of this run now",
                    Forced::Engine { .. } => "forcing: removing every container of this run now",
                    Forced::Mixed { .. } => {
                        "forcing: killing every process and removing every container of this \
                         run now"
                    }
                });
                engine::kill_in_flight();
                // Not on this thread: the signal handler only records and kills, so that a
                // third signal is heard even while this removal hangs on a stuck engine.
                let forced = std::thread::Builder::new()
                    .name("forced-removal".into())
                    .spawn(move || run.forced.remove(&run.run_id, run.console));
                if let Err(e) = forced {
                    console.warn(format!("cannot start the forced removal: {e}"));
                }
            }
            _ => {
                engine::kill_in_flight();
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    }
}

/// Removes the run on drop unless [`CleanupGuard::teardown`] already did. Made before the
/// first thing of the run is created, like cross's container deleter, so dropping it (also
/// while unwinding from a panic) removes whatever exists by then.
#[derive(Debug)]
pub struct CleanupGuard {
    engine: Engine,
    run_id: String,
    order: StopOrder,
    console: Console,
    done: bool,
    /// Dismissed once teardown removed everything; otherwise it sweeps when dropped.
    reaper: Option<Reaper>,
}

impl CleanupGuard {
    pub fn new(
        engine: &Engine,
        run_id: &str,
        plan: &RunPlan,
        console: Console,
        reaper: Option<Reaper>,
    ) -> CleanupGuard {
        CleanupGuard {
            engine: engine.clone(),
            run_id: run_id.to_string(),
            order: stop_order(plan),
            console,
            done: false,
            reaper,
        }
    }

    /// After a completed run (every sink exited 0): stops what is left at once instead of
    /// level by level.
    pub fn completed(&mut self) {
        self.order = self.order.all_at_once();
    }

    /// Stops the containers in order and removes everything of the run, once.
    pub fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let started = Instant::now();
        self.console.info("stopping and removing containers...");
        let removal = cleanup::remove_run(&self.engine, &self.run_id, &self.order);
        let removed = format!("{} container(s)", removal.containers.len());
        let hint = "`flowctl gc` removes them";
        conclude_removal(
            self.console,
            &self.run_id,
            &removal,
            &removed,
            started,
            hint,
            &mut self.reaper,
        );
    }
}

/// Ends a run's teardown: says what it removed (`removed`, e.g. "3 container(s)", and the
/// networks) and dismisses the reaper, whose work is done; or says each error and that
/// something may be left, with `hint` on how to remove it, and leaves the reaper watching.
pub fn conclude_removal(
    console: Console,
    run_id: &str,
    removal: &Removal,
    removed: &str,
    started: Instant,
    hint: &str,
    reaper: &mut Option<Reaper>,
) {
    if removal.is_complete() {
        if let Some(reaper) = reaper.take() {
            reaper.dismiss();
        }
        console.info(format!(
            "removed {removed} and {} network(s) in {} ms",
            removal.networks.len(),
            elapsed_ms(started)
        ));
    } else {
        for error in &removal.errors {
            console.warn(format!("cleanup: {error}"));
        }
        console.warn(format!(
            "some resources of run {run_id} may be left; {hint}"
        ));
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Reverse start order, one group per depth level: sinks stop before what feeds them.
pub fn stop_order(plan: &RunPlan) -> StopOrder {
    StopOrder {
        groups: plan
            .levels()
            .into_iter()
            .rev()
            .map(|level| StopGroup {
                containers: level
                    .iter()
                    .filter(|c| c.process.is_none())
                    .map(|c| c.container_name.clone())
                    .collect(),
                grace: level
                    .iter()
                    .map(|c| c.stop_grace)
                    .max()
                    .unwrap_or(plan::DEFAULT_STOP_GRACE),
            })
            .filter(|group| !group.containers.is_empty())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Naming;
    use std::path::Path;

    fn plan(components: &str) -> RunPlan {
        let text = format!(
            "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: demo}}\nspec:\n{components}"
        );
        let file = crate::spec::parse(&text, "t.yaml").unwrap();
        let naming = Naming {
            project: Some("p".into()),
            ..Naming::default()
        };
        RunPlan::build(&file, Path::new("."), &naming).unwrap()
    }

    #[test]
    fn teardown_stops_sinks_first_one_level_at_a_time_with_the_longest_grace() {
        let plan = plan(
            "
  sources:
    - {id: a, image: img, stop_grace_period: 3s}
    - {id: b, image: img, stop_grace_period: 20s}
  processors:
    - {id: mid, image: img, inputs: [a, b]}
  sinks:
    - {id: sink, image: img, inputs: [mid], stop_grace_period: 1s}
",
        );
        let order = stop_order(&plan);
        let groups: Vec<(Vec<&str>, u64)> = order
            .groups
            .iter()
            .map(|g| {
                (
                    g.containers.iter().map(String::as_str).collect(),
                    g.grace.as_secs(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                (vec!["p-sink"], 1),
                (vec!["p-mid"], 10),
                (vec!["p-a", "p-b"], 20)
            ]
        );
    }

    #[test]
    fn a_completed_run_stops_what_is_left_in_one_call_with_the_longest_grace() {
        let plan = plan(
            "
  sources:
    - {id: a, image: img, stop_grace_period: 3s}
  sinks:
    - {id: sink, image: img, inputs: [a], stop_grace_period: 1s}
",
        );
        let order = stop_order(&plan).all_at_once();
        assert_eq!(order.groups.len(), 1);
        assert_eq!(order.groups[0].containers, ["p-sink", "p-a"]);
        assert_eq!(order.groups[0].grace, Duration::from_secs(3));
        assert!(StopOrder::default().all_at_once().groups.is_empty());
    }

    /// The panic path, against the real engine: a guard dropped while unwinding removes the
    /// run's network and containers (what `flowctl run` relies on when it panics).
    #[test]
    fn a_guard_dropped_while_unwinding_removes_the_run() {
        let program = std::env::var("FLOWCTL_DOCKER_BIN").unwrap_or_else(|_| "docker".into());
        let engine = Engine::detect(program, engine::Deadlines::default())
            .expect("these tests need the container engine (Docker or Podman) running");
        let run_id = format!("unwind-{}", super::super::new_run_id());
        let name = format!("flowctl-unit-{run_id}");
        let labels = crate::labels::run_labels("unit-unwind", None, &run_id, Default::default());
        engine.create_network(&name, &labels).unwrap();
        let spec = engine::ContainerSpec {
            name: name.clone(),
            image: "flowctl/test-component:dev".into(),
            network: name.clone(),
            aliases: vec![],
            labels: labels.clone(),
            env_file: None,
            publish: vec![],
            mounts: vec![],
            entrypoint: None,
            args: vec![],
            stop_timeout: std::time::Duration::from_secs(1),
            limits: Default::default(),
        };
        if let Err(e) = engine.create_container(&spec) {
            // Nothing may be left behind, not even by a failing test.
            let _ = engine.remove_network(&name);
            panic!(
                "the image flowctl/test-component:dev is missing: run scripts/build-images.sh: {e}"
            );
        }
        let plan = plan("  sources:\n    - {id: a, image: img}\n");
        let console = Console { color: false };
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = CleanupGuard::new(&engine, &run_id, &plan, console, None);
            panic!("a bug in flowctl");
        }));
        assert!(unwound.is_err());
        let filter = [crate::labels::run_filter(&run_id)];
        assert_eq!(
            engine.list_containers(&filter).unwrap(),
            Vec::<String>::new()
        );
        assert!(engine.list_networks(&filter).unwrap().is_empty());
    }

    #[test]
    fn signals_before_a_run_attaches_count_as_its_own() {
        let policy = SignalPolicy::default();
        policy.lock().signals = 1;
        let events = Arc::new(RunEvents::default());
        let run = ActiveRun {
            events: events.clone(),
            run_id: "r".into(),
            console: Console { color: false },
            forced: Forced::Engine {
                engine: Engine::known(
                    "/nonexistent/docker",
                    engine::EngineKind::Docker,
                    engine::Deadlines::default(),
                ),
                swarm: false,
            },
        };
        let attached = policy.attach(run);
        assert_eq!(events.snapshot().interrupts, 1);
        drop(attached);
        assert!(policy.lock().run.is_none());
    }
}
