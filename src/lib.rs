//! flowctl: run data pipelines as real containers.
//!
//! A pipeline file ([`spec`]) becomes a validated [`plan::RunPlan`]; [`run`] starts it through
//! the container CLI ([`engine`], the only module that spawns it), supervises it and always
//! removes what it created ([`cleanup`]); [`gc`] removes what dead runs left behind.
//!
//! The modules the binary and the integration tests use are public; the rest is the crate's
//! own. See docs/architecture.md, "Code map", for what each file owns.

pub mod cleanup;
pub mod contract;
pub mod control_plane;
pub mod diagnostics;
pub mod duration;
pub mod engine;
mod events;
pub mod gc;
mod health;
pub mod init;
pub mod labels;
pub mod location;
pub mod logs;
pub mod metadata;
pub mod owner;
pub mod plan;
pub mod processes;
pub mod reaper;
pub mod run;
mod runtime;
pub mod spec;
pub mod standalone;
mod status;
pub mod status_client;
pub mod translate;
mod verify;
