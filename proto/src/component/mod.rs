//! What a pipeline component needs to take part in a flowctl run (CONTRACT.md §3–§5): its
//! environment, a `/health` endpoint, a `healthcheck` probe usable where there is no curl (a
//! `FROM scratch` image), and an agent that registers with the control plane and heartbeats.

mod agent;
mod env;
mod health;

pub use agent::{spawn_agent, AgentConfig};
pub use env::{parse_duration, ComponentEnv};
pub use health::{probe_health, HealthServer, HealthStatus, Metrics};
