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
use super::teardown::{exit_error, Halt, RunOutcome};
use crate::events::EventState;
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
    let plan = run.plan;
    let completion = Completion::of(plan);
    let mut reported = 0;
    let mut state: EventState = run.events.snapshot();
    loop {
        if state.interrupts > 0 {
            return Ok(RunOutcome::Interrupted);
        }
        for exit in &state.exits[reported..] {
            let Some(component) = plan.component(&exit.component) else {
                continue;
            };
            if exit.attempt != state.attempt_of(&component.id) {
                continue; // a replaced container
            }
            if exit.code != Some(0) {
                let error = exit_error(run.engine, run.logs, component, exit, "while running");
                if !start::may_restart(run, component) {
                    return Err(Halt::Exited(error));
                }
                start::restart(run, component, &error)?;
                start::start_component(run, component)?;
                continue;
            }
            run.console
                .info(format!("{} finished (exit code 0)", component.id));
        }
        reported = state.exits.len();
        if let Some(outcome) = completion.check(&state, run.console)? {
            return Ok(outcome);
        }
        state = run
            .events
            .wait_change(state.version, Duration::from_secs(3600));
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
