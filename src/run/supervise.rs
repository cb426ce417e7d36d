//! Once the pipeline is up: prove the declared streams carry data, then wait until every sink
//! has finished (or, without sinks, every component) and the flowctl.v1 relay has ended, a
//! signal, a broken relay edge, or a component failing, whose restart policy decides whether it
//! is replaced or the run fails. Relayed sinks (v1 consumers are servers and never exit) are
//! finished when the relay ends.

use std::time::Duration;

use anyhow::anyhow;

use super::lifecycle::{wait_for_end, Replace};
use super::reach;
use super::record::VerificationRecord;
use super::start::{self, LiveRun};
use super::teardown::{exit_error, ExitError, Halt, RunOutcome};
use crate::events::Exit;
use crate::plan::ComponentPlan;
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
