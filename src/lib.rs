//! flowctl: run data pipelines as real containers.
//!
//! A pipeline file ([`spec`]) becomes a validated [`plan::RunPlan`]; [`run`] starts it through
//! the container CLI ([`engine`], the only module that spawns it), supervises it and always
//! removes what it created ([`cleanup`]); `flowctl gc` removes what dead runs left behind.

pub mod cleanup;
pub mod control_plane;
pub mod engine;
pub mod events;
pub mod health;
pub mod labels;
pub mod logs;
pub mod owner;
pub mod plan;
pub mod reaper;
pub mod run;
pub mod spec;
pub mod standalone;
pub mod status;
pub mod translate;
pub mod verify;
