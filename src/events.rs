//! What happens to a run while flowctl waits: signals and container exits. Threads that watch
//! containers and the signal handler record here; start-up and supervision wait here, so a
//! dying container or a Ctrl+C wakes them at once instead of after a poll interval.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A container that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub component: String,
    /// `None` when flowctl lost track of the container (`error` says why).
    pub code: Option<i64>,
    pub error: Option<String>,
}

/// Everything recorded so far.
#[derive(Debug, Clone, Default)]
pub struct EventState {
    /// Incremented on every change; pass it back to [`RunEvents::wait_change`].
    pub version: u64,
    /// How many times SIGINT, SIGTERM or SIGHUP arrived.
    pub interrupts: u32,
    /// In the order they happened.
    pub exits: Vec<Exit>,
}

impl EventState {
    /// The exit of `component`, if it has exited.
    pub fn exit_of(&self, component: &str) -> Option<&Exit> {
        self.exits.iter().find(|e| e.component == component)
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

    /// Records a container exit (only the first per component counts).
    pub fn exited(&self, exit: Exit) {
        self.update(|s| {
            if s.exit_of(&exit.component).is_none() {
                s.exits.push(exit);
            }
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
                code: Some(3),
                error: None,
            })
        });
        // Generous: the wait returns as soon as the exit is recorded.
        let state = events.wait_change(version, Duration::from_secs(60));
        handle.join().unwrap();
        assert_eq!(state.exit_of("sink").and_then(|e| e.code), Some(3));
        assert_eq!(events.interrupt(), 1);
        assert_eq!(events.interrupt(), 2);
    }
}
