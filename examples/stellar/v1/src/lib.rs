//! flowctl's example Stellar pipeline as current-generation (`flowctl.v1`, flow-proto v0.1.3)
//! components. They never dial each other: the orchestrator calls each one and relays
//! `SourceService/StreamEvents` into `ProcessorService/Process` into `ConsumerService/Consume`.
//!
//! - `stellar-live-source-v1` ([`source`]) streams the ledgers of a data lake folder as
//!   [`event_types::STELLAR_LEDGER`] events.
//! - `ttp-processor-v1` ([`processor`]) turns each ledger event into one
//!   [`event_types::TOKEN_TRANSFER`] event per token transfer, the same events as `ttp-processor`.
//! - `consumer-app-v1` ([`consumer`]) prints them as JSON lines, exactly as `consumer-app` does.
//!
//! The data path is the first generation's (`stellar_components`, `stellar_ttp`); this crate adds
//! the v1 envelope, services and registration ([`component`]).

pub mod component;
pub mod consumer;
pub mod processor;
pub mod source;

/// The v1 event types these components produce and consume (upstream's names).
pub mod event_types {
    /// One ledger; payload `stellar.v1.RawLedger`, content type [`super::content_types::RAW_LEDGER`].
    pub const STELLAR_LEDGER: &str = "stellar.ledger.v1";
    /// One token transfer event; payload `token_transfer.TokenTransferEvent`, content type
    /// [`super::content_types::TOKEN_TRANSFER`].
    pub const TOKEN_TRANSFER: &str = "stellar.token.transfer.v1";
}

/// `Event.content_type` of each event type, as upstream's SDK components set it.
pub mod content_types {
    /// Upstream's `stellar-live-source` writes plain `application/protobuf` for its ledgers.
    pub const RAW_LEDGER: &str = "application/protobuf";
    /// Upstream's `ttp-processor-sdk` names the message.
    pub const TOKEN_TRANSFER: &str =
        "application/protobuf; message=token_transfer.TokenTransferEvent";
}
