//! The three components of flowctl's example Stellar pipeline, as a library so every behaviour
//! can be tested in-process; the binaries in `src/bin/` only call [`source::main`],
//! [`processor::main`] and [`consumer::main`].
//!
//! - `stellar-live-source-datalake` ([`source`]) streams raw ledgers from a data lake folder
//!   (`raw_ledger_service.RawLedgerService`).
//! - `ttp-processor` ([`processor`]) turns them into token transfer events
//!   (`token_transfer_service.EventService`).
//! - `consumer-app` ([`consumer`]) prints those events as JSON lines and counts them.

pub mod component;
pub mod consumer;
pub mod grpc;
pub mod logging;
pub mod processor;
pub mod shutdown;
pub mod source;

/// Event type names used in control plane registrations (docs/contract.md §3).
pub mod event_types {
    /// What the source emits.
    pub const RAW_LEDGER: &str = "raw_ledger_service.RawLedgerChunk";
    /// What the processor emits and the consumer takes in.
    pub const TOKEN_TRANSFER: &str = "event_service.TokenTransferEvent";
}

/// Exit code for configuration and usage errors (a message names the variable or argument).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for failures while running.
pub const EXIT_FAILURE: u8 = 1;
