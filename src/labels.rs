//! The labels flowctl puts on every container and network it creates. Cleanup and `gc` select
//! by these labels only, so they never touch anything flowctl did not make.

use std::collections::BTreeMap;

/// Present (`true`) on everything flowctl creates.
pub const MANAGED: &str = "io.flowctl.managed";
/// The pipeline's `metadata.name`.
pub const PIPELINE: &str = "io.flowctl.pipeline";
/// The `--project` name, when given.
pub const PROJECT: &str = "io.flowctl.project";
/// Unique per `flowctl run` invocation.
pub const RUN: &str = "io.flowctl.run";
/// The component id (containers only).
pub const COMPONENT: &str = "io.flowctl.component";
/// The control plane's `ip:port`, on every container, so `flowctl status` can find it.
pub const CONTROL_PLANE: &str = "io.flowctl.control-plane";
/// The component's role (`source`, `processor`, `sink`) on translated resources.
pub const ROLE: &str = "io.flowctl.role";
/// The container flowctl ran in, when it ran in one of the engine's containers (a CI job):
/// the run is dead once that container is gone.
pub const OWNER_CONTAINER: &str = "io.flowctl.owner-container";
/// Who owns the run (see `owner.rs`): host, boot id, pid and process start time.
pub const OWNER_HOST: &str = "io.flowctl.owner-host";
pub const OWNER_BOOT: &str = "io.flowctl.owner-boot";
pub const OWNER_PID: &str = "io.flowctl.owner-pid";
pub const OWNER_START: &str = "io.flowctl.owner-start";

/// `MANAGED=true`, as a `--filter label=` value.
pub fn managed_filter() -> String {
    format!("{MANAGED}=true")
}

/// The filter selecting everything of one run.
pub fn run_filter(run_id: &str) -> String {
    format!("{RUN}={run_id}")
}

/// Labels shared by the network and every container of a run; `owner` is the owner's own
/// labels (`RunOwner::labels`).
pub fn run_labels(
    pipeline: &str,
    project: Option<&str>,
    run_id: &str,
    owner: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED.to_string(), "true".to_string()),
        (PIPELINE.to_string(), pipeline.to_string()),
        (RUN.to_string(), run_id.to_string()),
    ]);
    labels.extend(owner);
    if let Some(project) = project {
        labels.insert(PROJECT.to_string(), project.to_string());
    }
    labels
}
