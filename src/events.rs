//! What happens to a run while flowctl waits: signals, container exits and the end of the
//! flowctl.v1 relay. Threads that watch
//! containers and the signal handler record here; start-up and supervision wait here, so a
//! dying container or a Ctrl+C wakes them at once instead of after a poll interval.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// A container that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub component: String,
    /// Which container of the component: 0 for the first, n after its n-th restart.
    pub attempt: u32,
    /// `None` when flowctl lost track of the container (`error` says why).
    pub code: Option<i64>,
    pub error: Option<String>,
    /// When flowctl saw it.
    pub at: SystemTime,
}

/// Everything recorded so far.
#[derive(Debug, Clone, Default)]
pub struct EventState {
    /// Incremented on every change; pass it back to [`RunEvents::wait_change`].
    pub version: u64,
    /// How many times SIGINT, SIGTERM or SIGHUP arrived.
    pub interrupts: u32,
    /// In the order they happened, of every attempt.
    pub exits: Vec<Exit>,
    /// Restarts so far per component (absent: never restarted).
    pub restarts: BTreeMap<String, u32>,
    /// How the flowctl.v1 relay ended, once it has: `Err` says which edge broke and why.
    pub relay_end: Option<Result<(), String>>,
    /// The latest attempt of each component that became ready (absent: none yet).
    pub ready: BTreeMap<String, u32>,
}

impl EventState {
    /// The current attempt of `component`: how often it was restarted.
    pub fn attempt_of(&self, component: &str) -> u32 {
        self.restarts.get(component).copied().unwrap_or(0)
    }

    /// Whether attempt `attempt` of `component` (or a later one) has become ready.
    pub fn is_ready(&self, component: &str, attempt: u32) -> bool {
        self.ready
            .get(component)
            .is_some_and(|ready| *ready >= attempt)
    }

    /// The exit of `component`'s current container, if it has exited.
    pub fn exit_of(&self, component: &str) -> Option<&Exit> {
        let attempt = self.attempt_of(component);
        self.exits
            .iter()
            .find(|e| e.component == component && e.attempt == attempt)
    }
}

/// Shared between the watcher threads, the signal handler and the main thread.
#[derive(Debug, Default)]
pub struct RunEvents {
    state: Mutex<EventState>,
    changed: Condvar,
}

impl RunEvents {
    fn lock(&self) -> MutexGuard<'_, EventState> {
        // The state is plain data; a panicking writer cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut EventState)) -> EventState {
        let mut state = self.lock();
        change(&mut state);
        state.version += 1;
        self.changed.notify_all();
        state.clone()
    }

    /// Records a signal; returns how many have arrived.
    pub fn interrupt(&self) -> u32 {
        self.update(|s| s.interrupts += 1).interrupts
    }

    /// Records a container exit (only the first per component and attempt counts).
    pub fn exited(&self, exit: Exit) {
        self.update(|s| {
            let known = s
                .exits
                .iter()
                .any(|e| e.component == exit.component && e.attempt == exit.attempt);
            if !known {
                s.exits.push(exit);
            }
        });
    }

    /// Records that `component` is being restarted; returns its new attempt number. From now
    /// on [`EventState::exit_of`] reports the new container's exit only.
    pub fn restarting(&self, component: &str) -> u32 {
        self.update(|s| *s.restarts.entry(component.to_string()).or_default() += 1)
            .attempt_of(component)
    }

    /// Records that attempt `attempt` of `component` is ready (a restarted source's relay
    /// waits for it to dial the new container).
    pub fn became_ready(&self, component: &str, attempt: u32) {
        self.update(|s| {
            let ready = s.ready.entry(component.to_string()).or_insert(attempt);
            *ready = (*ready).max(attempt);
        });
    }

    /// Records how the relay ended (only the first end counts).
    pub fn relay_ended(&self, end: Result<(), String>) {
        self.update(|s| {
            s.relay_end.get_or_insert(end);
        });
    }

    /// The current state.
    pub fn snapshot(&self) -> EventState {
        self.lock().clone()
    }

    /// Waits until something changes after `version`, or `timeout` passes.
    pub fn wait_change(&self, version: u64, timeout: Duration) -> EventState {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.version == version)
            .unwrap_or_else(|p| p.into_inner());
        state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn a_waiter_wakes_on_an_exit() {
        let events = Arc::new(RunEvents::default());
        let version = events.snapshot().version;
        let writer = events.clone();
        let handle = thread::spawn(move || {
            writer.exited(Exit {
                component: "sink".into(),
                attempt: 0,
                code: Some(3),
                error: None,
                at: SystemTime::now(),
            })
        });
        // Generous: the wait returns as soon as the exit is recorded.
        let state = events.wait_change(version, Duration::from_secs(60));
        handle.join().unwrap();
        assert_eq!(state.exit_of("sink").and_then(|e| e.code), Some(3));
        assert_eq!(events.interrupt(), 1);
        assert_eq!(events.interrupt(), 2);
    }

    #[test]
    fn a_restart_hides_the_old_exit_and_counts_only_the_new_one() {
        let events = RunEvents::default();
        let at = SystemTime::now();
        let exit = |attempt, code| Exit {
            component: "source".into(),
            attempt,
            code: Some(code),
            error: None,
            at,
        };
        events.exited(exit(0, 9));
        events.exited(exit(0, 1));
        assert_eq!(events.snapshot().exit_of("source"), Some(&exit(0, 9)));
        assert_eq!(events.restarting("source"), 1);
        let state = events.snapshot();
        assert_eq!(state.exit_of("source"), None);
        assert_eq!(state.attempt_of("source"), 1);
        assert_eq!(state.attempt_of("sink"), 0);
        events.exited(exit(1, 0));
        let state = events.snapshot();
        assert_eq!(state.exit_of("source"), Some(&exit(1, 0)));
        assert_eq!(state.exits.len(), 2);
    }
}
