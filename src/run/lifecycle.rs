//! What a container run and a process run share between start-up and teardown: starting
//! the components of one level in parallel, the supervision loop that waits for the end of
//! the run ([`wait_for_end`]) and replaces a failed component through a [`Replace`] as its
//! restart policy allows, and when a run is complete ([`Completion`]).

use std::thread;
use std::time::Duration;

use anyhow::anyhow;

use super::teardown::{check_interrupted, ExitError, Halt, RunOutcome};
use crate::events::{EventState, Exit, RunEvents};
use crate::logs::Console;
use crate::plan::{ComponentPlan, Role, RunPlan};

/// Runs `task` for each of `components` on threads of its own; the errors of all of them,
/// one per line, or [`Halt::Interrupted`] if a signal reached the run of `events` meanwhile.
pub fn in_parallel(
    events: &RunEvents,
    components: &[&ComponentPlan],
    task: impl Fn(&ComponentPlan) -> Result<(), Halt> + Sync,
) -> Result<(), Halt> {
    let task = &task;
    let results: Vec<Result<(), Halt>> = thread::scope(|scope| {
        let handles: Vec<_> = components
            .iter()
            .map(|component| scope.spawn(move || task(component)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a start-up thread panicked").into()))
            })
            .collect()
    });
    let mut halts: Vec<Halt> = results.into_iter().filter_map(Result::err).collect();
    if halts.is_empty() {
        return Ok(());
    }
    check_interrupted(events)?;
    if halts.len() == 1 {
        return Err(halts.remove(0));
    }
    let messages: Vec<String> = halts.iter().map(Halt::message).collect();
    Err(anyhow!("{}", messages.join("\n")).into())
}

/// Whether `component`'s policy allows another restart in the run of `events` (containers
/// and processes alike).
pub fn restart_allowed(events: &RunEvents, component: &ComponentPlan) -> bool {
    events.snapshot().attempt_of(&component.id) < component.restart.max_restarts()
}

/// Says why `component` is restarted and which restart this is; [`Halt::Interrupted`] if a
/// signal came meanwhile (containers and processes alike).
pub fn announce_restart(
    events: &RunEvents,
    console: Console,
    component: &ComponentPlan,
    exited: &ExitError,
) -> Result<(), Halt> {
    let attempt = events.snapshot().attempt_of(&component.id) + 1;
    console.warn(format!(
        "component `{}` {} {}; restarting it (restart {attempt} of {}, restart: {})",
        component.id,
        exited.what,
        exited.when,
        component.restart.max_restarts(),
        component.restart
    ));
    check_interrupted(events)
}

/// How supervision replaces a failed component: containers here, processes in
/// `run/process/`.
pub trait Replace {
    /// The error for `component`'s failed `exit`.
    fn exit_error(&self, component: &ComponentPlan, exit: &Exit) -> ExitError;
    /// Whether its restart policy allows another restart.
    fn may_restart(&self, component: &ComponentPlan) -> bool;
    /// Says why, clears what the failed one left and moves to the next attempt.
    fn restart(&self, component: &ComponentPlan, error: &ExitError) -> Result<(), Halt>;
    /// Starts the next attempt and waits until it is ready.
    fn start(&self, component: &ComponentPlan) -> Result<(), Halt>;
}

/// The supervision loop of `plan`'s run, on its `events`: a failed component is replaced
/// through `replace` as its policy allows, or fails the run.
pub fn wait_for_end(
    plan: &RunPlan,
    events: &RunEvents,
    console: Console,
    replace: &impl Replace,
) -> Result<RunOutcome, Halt> {
    let completion = Completion::of(plan);
    let mut reported = 0;
    let mut state: EventState = events.snapshot();
    loop {
        if state.interrupts > 0 {
            return Ok(RunOutcome::Interrupted);
        }
        for exit in &state.exits[reported..] {
            let Some(component) = plan.component(&exit.component) else {
                continue;
            };
            if exit.attempt != state.attempt_of(&component.id) {
                continue; // a replaced container or process
            }
            if exit.code != Some(0) {
                let error = replace.exit_error(component, exit);
                if !replace.may_restart(component) {
                    return Err(Halt::Exited(error));
                }
                replace.restart(component, &error)?;
                replace.start(component)?;
                continue;
            }
            console.info(format!("{} finished (exit code 0)", component.id));
        }
        reported = state.exits.len();
        if let Some(outcome) = completion.check(&state, console)? {
            return Ok(outcome);
        }
        state = events.wait_change(state.version, Duration::from_secs(3600));
    }
}

/// When a run is complete: every sink and job (or, without any, every component) that is not
/// relayed has exited 0, and the relay, if there is one, has ended.
pub struct Completion<'p> {
    plan: &'p RunPlan,
    finishing: Vec<&'p ComponentPlan>,
    has_sinks_or_jobs: bool,
    has_jobs: bool,
    relayed: bool,
}

impl<'p> Completion<'p> {
    pub fn of(plan: &'p RunPlan) -> Completion<'p> {
        let has_sinks_or_jobs = plan.components.iter().any(|c| c.role.must_finish());
        Completion {
            plan,
            finishing: plan
                .components
                .iter()
                .filter(|c| !has_sinks_or_jobs || c.role.must_finish())
                .filter(|c| !c.is_relayed())
                .collect(),
            has_sinks_or_jobs,
            has_jobs: plan.components.iter().any(|c| c.role == Role::Pipeline),
            relayed: plan.components.iter().any(ComponentPlan::is_relayed),
        }
    }

    /// `Completed` (said on `console`) once `state` shows the run complete; an error once
    /// a relay edge broke; `None` while it runs.
    pub fn check(&self, state: &EventState, console: Console) -> Result<Option<RunOutcome>, Halt> {
        if let Some(Err(broken)) = &state.relay_end {
            return Err(anyhow!("{broken}").into());
        }
        let all_done = self
            .finishing
            .iter()
            .all(|c| state.exit_of(&c.id).is_some_and(|e| e.code == Some(0)))
            && (!self.relayed || state.relay_end.is_some());
        if !all_done {
            return Ok(None);
        }
        let what = match (self.has_sinks_or_jobs, self.relayed) {
            (true, false) if self.has_jobs => "every sink and job finished",
            (true, false) => "every sink finished",
            (false, false) => "every component finished",
            (_, true) if self.finishing.is_empty() => "the relay ended",
            (_, true) => "the relay ended and every first-generation sink finished",
        };
        console.info(format!(
            "{what}: pipeline {} is complete",
            self.plan.pipeline
        ));
        Ok(Some(RunOutcome::Completed))
    }
}
