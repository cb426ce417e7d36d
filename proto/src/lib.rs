//! Generated gRPC and protobuf types for the contracts in `proto/` (see docs/contract.md).
//!
//! Module names follow the protobuf packages, so `token_transfer::TokenTransferEvent` here is
//! `token_transfer.TokenTransferEvent` on the wire.

#![allow(clippy::all, missing_docs)]

/// `package raw_ledger_service`: the source's raw ledger stream.
pub mod raw_ledger_service {
    tonic::include_proto!("raw_ledger_service");
}

/// `package asset`: native and issued Stellar assets.
pub mod asset {
    tonic::include_proto!("asset");
}

/// `package token_transfer`: token transfer events.
pub mod token_transfer {
    tonic::include_proto!("token_transfer");
}

/// `package token_transfer_service`: the processor's event stream.
pub mod token_transfer_service {
    tonic::include_proto!("token_transfer_service");
}

/// `package flowctl`: the control plane components register and heartbeat with.
pub mod flowctl {
    tonic::include_proto!("flowctl");

    /// `package flowctl.v1` (flow-proto v0.1.3): the current generation's event envelope, the
    /// data-plane services (`SourceService`, `ProcessorService`, `ConsumerService`) and
    /// `ControlPlaneService`.
    pub mod v1 {
        tonic::include_proto!("flowctl.v1");
    }
}

/// `package stellar.v1`: [`stellar::v1::RawLedger`], the payload of `stellar.ledger.v1` events.
pub mod stellar {
    /// `package stellar.v1`.
    pub mod v1 {
        tonic::include_proto!("stellar.v1");
    }
}

/// `flowctl.v1.Event`s as flowctl's relay carries them (encoded bytes, type and cursor read).
pub mod relayed;

#[cfg(feature = "component")]
pub mod component;
