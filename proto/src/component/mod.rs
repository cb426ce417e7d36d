//! What a pipeline component needs to take part in a flowctl run (docs/contract.md §3–§5): its
//! environment, a `/health` endpoint, a `healthcheck` probe usable where there is no curl (a
//! `FROM scratch` image), and an agent that registers with the control plane and heartbeats
//! (the legacy `flowctl.ControlPlane`, or `flowctl.v1.ControlPlaneService` for v1 components).

mod agent;
mod agent_v1;
mod env;
mod health;

pub use agent::{spawn_agent, AgentConfig};
pub use agent_v1::{spawn_v1_agent, v1_health_status, v1_metrics};
pub use env::{parse_duration, ComponentEnv};
pub use health::{probe_health, HealthServer, HealthStatus, Metrics};
