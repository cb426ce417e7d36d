//! Once the pipeline is up: prove the declared streams carry data, then wait until every sink
//! has finished (or, without sinks, every component) and the flowctl.v1 relay has ended, a
//! signal, a broken relay edge, or a component failing, whose restart policy decides whether it
//! is replaced or the run fails. Relayed sinks (v1 consumers are servers and never exit) are
//! finished when the relay ends.

use std::time::Duration;

use anyhow::anyhow;

use super::reach;
use super::record::VerificationRecord;
use super::start::{self, LiveRun};
use super::teardown::{exit_error, ExitError, Halt, RunOutcome};
use crate::events::{EventState, Exit, RunEvents};
use crate::logs::Console;
use crate::plan::{ComponentPlan, Role, RunPlan};
use crate::verify;

/// Proves with typed gRPC clients that the declared streams deliver data.
pub fn verify_streams(run: &LiveRun, timeout: Duration) -> Result<(), Halt> {
    let (checks, notes) = verify::checks_for(run.plan, &reach::addresses(run.reachable));
    for note in notes {
        run.console.info(note);
    }
    if checks.is_empty() {
        return Ok(());
    }
    run.console
        .info(format!("verifying {} gRPC stream(s)...", checks.len()));
    let mut failures = Vec::new();
    for result in verify::verify_streams(&checks, timeout) {
        let record = match &result {
            Ok(report) => VerificationRecord {
                flow: report.flow.clone(),
                ok: true,
                detail: report.to_string(),
                events: report.events.map(|e| e.count),
            },
            Err(error) => VerificationRecord {
                flow: error.component.clone(),
                ok: false,
                detail: error.to_string(),
                events: None,
            },
        };
        run.record.lock().verification.push(record);
        match result {
            Ok(report) => run.console.info(report.to_string()),
            Err(error) => failures.push(error.to_string()),
        }
    }
    run.check_interrupted()?;
    match failures.as_slice() {
        [] => Ok(()),
        failures => Err(anyhow!(
            "stream verification failed (--no-verify skips it):\n  - {}",
            failures.join("\n  - ")
        )
        .into()),
    }
}

/// Waits until every sink has exited 0 (or, without sinks, every component), a signal, or a
/// component failing beyond what its restart policy allows.
pub fn supervise(run: &LiveRun) -> Result<RunOutcome, Halt> {
    wait_for_end(run.plan, run.events, run.console, &Containers(run))
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

/// A container run's components: containers, and the processes of a file mixing both.
struct Containers<'r, 'a>(&'r LiveRun<'a>);

impl Replace for Containers<'_, '_> {
    fn exit_error(&self, component: &ComponentPlan, exit: &Exit) -> ExitError {
        match self.0.processes().filter(|_| component.process.is_some()) {
            Some(processes) => Replace::exit_error(&processes, component, exit),
            None => exit_error(self.0.engine, self.0.logs, component, exit, "while running"),
        }
    }
    fn may_restart(&self, component: &ComponentPlan) -> bool {
        start::may_restart(self.0, component)
    }
    fn restart(&self, component: &ComponentPlan, error: &ExitError) -> Result<(), Halt> {
        match self.0.processes().filter(|_| component.process.is_some()) {
            Some(processes) => Replace::restart(&processes, component, error),
            None => start::restart(self.0, component, error),
        }
    }
    fn start(&self, component: &ComponentPlan) -> Result<(), Halt> {
        start::start_component(self.0, component)
    }
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
