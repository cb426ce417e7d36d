//! What flowctl gives every component it runs (docs/contract.md §4): the environment it injects and
//! where published ports bind. One definition, used by `flowctl run` and by `flowctl translate`,
//! so a translated pipeline sees exactly what a run gives it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration;

/// Published ports bind here only: nothing is reachable from other hosts by default.
pub const PUBLISH_HOST_IP: &str = "127.0.0.1";

/// `true` when a control plane is there to register with.
pub const ENABLE_FLOWCTL: &str = "ENABLE_FLOWCTL";
/// The control plane's `host:port`.
pub const FLOWCTL_ENDPOINT: &str = "FLOWCTL_ENDPOINT";
/// How often to heartbeat, e.g. `10s`.
pub const FLOWCTL_HEARTBEAT_INTERVAL: &str = "FLOWCTL_HEARTBEAT_INTERVAL";
/// The component's id in the pipeline file.
pub const FLOWCTL_COMPONENT_ID: &str = "FLOWCTL_COMPONENT_ID";
/// The component's id again, under the name upstream's flowctl.v1 SDK reads.
pub const COMPONENT_ID: &str = "COMPONENT_ID";
/// The container port of the HTTP health endpoint, set when the file implies it.
pub const HEALTH_PORT: &str = "HEALTH_PORT";

/// Environment variables flowctl sets in every container, overriding the file.
pub const INJECTED_ENV: &[&str] = &[
    ENABLE_FLOWCTL,
    FLOWCTL_ENDPOINT,
    FLOWCTL_HEARTBEAT_INTERVAL,
    FLOWCTL_COMPONENT_ID,
    COMPONENT_ID,
];

/// The control plane's name (container, network alias, service) when it runs as a container:
/// in translated pipelines, and next to a remote engine's pipeline.
pub const CONTROL_PLANE_SERVICE: &str = "flowctl-control-plane";
/// Port the control plane serves gRPC on inside its container.
pub const CONTROL_PLANE_PORT: u16 = 8080;

/// The arguments of `flowctl control-plane` in a container: listen on every interface of its
/// container, and expect the pipeline's components (`(id, role)`) by role.
pub fn control_plane_args<'a>(
    expected: impl IntoIterator<Item = (&'a str, &'a str)>,
    heartbeat_interval: Duration,
) -> Vec<String> {
    let mut args = vec![
        "control-plane".to_string(),
        "--listen".to_string(),
        format!("0.0.0.0:{CONTROL_PLANE_PORT}"),
        "--heartbeat-interval".to_string(),
        duration::format(heartbeat_interval),
    ];
    for (id, role) in expected {
        args.push("--expect".to_string());
        args.push(format!("{id}={role}"));
    }
    args
}

/// Where a component finds the control plane, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneAccess {
    /// `host:port` as the component's container reaches it.
    pub endpoint: String,
    pub heartbeat_interval: Duration,
}

/// The variables flowctl injects into component `id`'s container (they win over the file's),
/// in the order translated files list them. Without a control plane, `ENABLE_FLOWCTL=false`
/// tells the component not to look for one.
pub fn injected_env(id: &str, control_plane: Option<&ControlPlaneAccess>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    match control_plane {
        Some(access) => env.extend([
            (ENABLE_FLOWCTL.to_string(), "true".to_string()),
            (FLOWCTL_ENDPOINT.to_string(), access.endpoint.clone()),
            (
                FLOWCTL_HEARTBEAT_INTERVAL.to_string(),
                duration::format(access.heartbeat_interval),
            ),
        ]),
        None => env.push((ENABLE_FLOWCTL.to_string(), "false".to_string())),
    }
    env.push((FLOWCTL_COMPONENT_ID.to_string(), id.to_string()));
    env.push((COMPONENT_ID.to_string(), id.to_string()));
    env
}

/// The file's env plus what flowctl injects (which wins), as the engine receives it.
pub fn component_env(
    file_env: &BTreeMap<String, String>,
    id: &str,
    control_plane: Option<&ControlPlaneAccess>,
) -> BTreeMap<String, String> {
    let mut env = file_env.clone();
    env.extend(injected_env(id, control_plane));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_variables_win_over_the_file_and_are_all_listed() {
        let file = BTreeMap::from([
            ("ENABLE_FLOWCTL".to_string(), "false".to_string()),
            ("OWN".to_string(), "x".to_string()),
        ]);
        let access = ControlPlaneAccess {
            endpoint: "172.18.0.1:8080".into(),
            heartbeat_interval: Duration::from_millis(500),
        };
        let env = component_env(&file, "sink", Some(&access));
        assert_eq!(env["ENABLE_FLOWCTL"], "true");
        assert_eq!(env["FLOWCTL_ENDPOINT"], "172.18.0.1:8080");
        assert_eq!(env["FLOWCTL_HEARTBEAT_INTERVAL"], "500ms");
        assert_eq!(env["FLOWCTL_COMPONENT_ID"], "sink");
        assert_eq!(env["COMPONENT_ID"], "sink");
        assert_eq!(env["OWN"], "x");
        for key in INJECTED_ENV {
            assert!(env.contains_key(*key), "{key}");
        }
        let alone: BTreeMap<String, String> = injected_env("sink", None).into_iter().collect();
        assert_eq!(alone["ENABLE_FLOWCTL"], "false");
        assert!(!alone.contains_key("FLOWCTL_ENDPOINT"));
    }
}
