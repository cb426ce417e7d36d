//! Generated gRPC and protobuf types for the contracts in `proto/` (see CONTRACT.md).
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
}

#[cfg(feature = "component")]
pub mod component;
