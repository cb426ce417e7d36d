//! The Stellar side of flowctl's example pipeline: reading (and writing) a galexie-layout data
//! lake, and extracting token transfer events from `LedgerCloseMeta` by the upstream rules.
//!
//! - [`datalake`]: the galexie key scheme, manifest, and zstd/XDR batch files.
//! - [`events`]: token transfer events with parity to stellar/go `processors/token_transfer`
//!   ([`ledger_events`], or an [`Extractor`] reused across ledgers), plus upstream's balance
//!   verification ([`events::balances::verify_ledger`]).
//! - [`json`]: events as JSON lines in the shape of the upstream output.
//! - [`offline`]: `ttp-processor events`, the same extraction over a lake or a base64 file in one
//!   process (also the data-path benchmark's in-process floor).

pub mod datalake;
pub mod events;
pub mod json;
pub mod offline;

pub use events::{ledger_events, Extractor};
