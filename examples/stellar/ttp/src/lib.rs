//! The Stellar side of flowctl's example pipeline: reading (and writing) a galexie-layout data
//! lake, and extracting token transfer events from `LedgerCloseMeta` by the upstream rules.

pub mod datalake;
pub mod events;
pub mod json;
pub mod offline;

pub use events::{ledger_events, Extractor};
