//! `flowctl control-plane`: the control plane served alone, for a pipeline that Compose or
//! Kubernetes runs (see `flowctl translate`). Components find it through `FLOWCTL_ENDPOINT`
//! and register and heartbeat exactly as under `flowctl run`; this prints what happens.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::control_plane::{ControlPlane, ControlPlaneConfig, ExpectedComponent};
use crate::plan::Role;

/// How often the stop flag is checked while waiting for events.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// One `--expect ID=ROLE`: a component the control plane should expect, so registrations that
/// do not say who they are can be matched by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation(pub ExpectedComponent);

impl FromStr for Expectation {
    type Err = String;

    fn from_str(text: &str) -> Result<Expectation, String> {
        let (id, role) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not ID=ROLE (e.g. ttp-processor=processor)"))?;
        let role = Role::from_name(role)
            .ok_or_else(|| format!("`{role}` is not a role (use source, processor or sink)"))?;
        if id.is_empty() {
            return Err(format!("`{text}`: the component id is empty"));
        }
        Ok(Expectation(ExpectedComponent {
            id: id.to_string(),
            role,
        }))
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.0.id, self.0.role)
    }
}

/// Settings of `flowctl control-plane`.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Where to listen, e.g. `0.0.0.0:8080` in a container.
    pub listen: SocketAddr,
    /// The interval components heartbeat at; silence for three intervals is unhealthy.
    pub heartbeat_interval: Duration,
    pub expected: Vec<Expectation>,
}

/// Serves until `stop` is set, giving each line to report to `say`.
pub fn serve(
    options: &StandaloneOptions,
    stop: &AtomicBool,
    mut say: impl FnMut(String),
) -> Result<()> {
    let expected = options.expected.iter().map(|e| e.0.clone()).collect();
    let config = ControlPlaneConfig::new(options.heartbeat_interval, expected);
    let control_plane = ControlPlane::start(options.listen, config)?;
    let expecting = if options.expected.is_empty() {
        "any component".to_string()
    } else {
        options
            .expected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    say(format!(
        "flowctl control plane listening on {} (heartbeat interval {}; expecting {expecting})",
        control_plane.local_addr(),
        crate::duration::format(options.heartbeat_interval)
    ));
    while !stop.load(Ordering::SeqCst) {
        if let Some(event) = control_plane.next_event(STOP_CHECK) {
            say(event.to_string());
        }
    }
    control_plane.shutdown();
    say("flowctl control plane stopped".to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse() {
        let e: Expectation = "ttp-processor=processor".parse().unwrap();
        assert_eq!(e.0.id, "ttp-processor");
        assert_eq!(e.0.role, Role::Processor);
        assert_eq!(e.to_string(), "ttp-processor=processor");
        assert!("x".parse::<Expectation>().unwrap_err().contains("ID=ROLE"));
        assert!("x=consumer"
            .parse::<Expectation>()
            .unwrap_err()
            .contains("`consumer`"));
        assert!("=sink".parse::<Expectation>().is_err());
    }
}
