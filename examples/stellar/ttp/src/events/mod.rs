//! Token transfer events from `LedgerCloseMeta`, by the rules of the upstream Go processor
//! (stellar/go `processors/token_transfer`, docs/contract.md §2).
//!
//! Classic operations are derived from the operation, its result and its ledger entry changes;
//! Soroban invocations from their SEP-41 contract events (meta v3 and v4). Fees come from the
//! fee-paying account's balance changes. Like upstream's default processor, classic operations
//! are *not* read from CAP-67 unified events, so ledgers from before protocol 23 and after it are
//! handled the same way.

mod address;
pub mod balances;
mod changes;
mod contract;
mod fees;
mod operations;
mod tx;

pub use address::{
    account_strkey, asset_contract_id, contract_strkey, network_id, parse_sep11_asset, proto_asset,
    sc_address_strkey, ContractAddresses,
};
pub use operations::revocation_balance_id;
pub use tx::{hex, ledger_transactions, LedgerInfo, LedgerTx};

use anyhow::{Context, Result};
use flowctl_proto::asset::Asset as ProtoAsset;
use flowctl_proto::token_transfer::{
    muxed_info, token_transfer_event::Event, Burn, Clawback, EventMeta, Fee, Mint, MuxedInfo,
    TokenTransferEvent, Transfer,
};
use stellar_xdr::{LedgerCloseMeta, Memo};

/// Extracts the token transfer events of one ledger, in upstream order: every transaction's
/// fee event first, then each transaction's operation events; a Soroban fee refund follows its
/// transaction's operation events before protocol 23 and comes after all of them from 23 on.
pub fn ledger_events(
    meta: &LedgerCloseMeta,
    network_passphrase: &str,
) -> Result<Vec<TokenTransferEvent>> {
    Extractor::new(network_passphrase).ledger_events(meta)
}

/// The fee and operation events of one transaction.
#[derive(Debug, Default)]
pub struct TransactionEvents {
    /// The fee charged, then a negative refund for Soroban transactions that got one.
    pub fee: Vec<TokenTransferEvent>,
    pub operations: Vec<TokenTransferEvent>,
}

/// An event extractor for one network; reuse it across ledgers (it caches contract ids).
#[derive(Debug, Clone)]
pub struct Extractor {
    contracts: ContractAddresses,
}

impl Extractor {
    /// An extractor for the network with this passphrase.
    pub fn new(network_passphrase: &str) -> Self {
        Extractor {
            contracts: ContractAddresses::new(network_passphrase),
        }
    }

    /// The network id (`sha256(passphrase)`).
    pub fn network_id(&self) -> [u8; 32] {
        *self.contracts.network_id()
    }

    /// See [`ledger_events`].
    pub fn ledger_events(&mut self, meta: &LedgerCloseMeta) -> Result<Vec<TokenTransferEvent>> {
        self.ledger_events_and_tx_count(meta)
            .map(|(events, _)| events)
    }

    /// [`ledger_events`] and the number of transactions in the ledger.
    pub fn ledger_events_and_tx_count(
        &mut self,
        meta: &LedgerCloseMeta,
    ) -> Result<(Vec<TokenTransferEvent>, usize)> {
        let info = LedgerInfo::of(meta);
        let txs = ledger_transactions(meta, &self.network_id())?;
        let p23 = info.protocol >= 23;
        let mut fees = Vec::with_capacity(txs.len());
        let mut operations = Vec::new();
        let mut refunds = Vec::new();
        for tx in &txs {
            let events = self.transaction_events(tx).with_context(|| {
                format!(
                    "ledger {} tx {} ({})",
                    info.sequence,
                    tx.index,
                    tx.hash_hex()
                )
            })?;
            let mut fee = events.fee.into_iter();
            fees.extend(fee.next());
            operations.extend(events.operations);
            if p23 {
                refunds.extend(fee);
            } else {
                operations.extend(fee);
            }
        }
        fees.append(&mut operations);
        fees.append(&mut refunds);
        Ok((fees, txs.len()))
    }

    /// Fee events of any transaction, operation events of a successful one.
    pub fn transaction_events(&mut self, tx: &LedgerTx<'_>) -> Result<TransactionEvents> {
        let fee = fees::fee_events(self, tx)?;
        if !tx.successful() {
            return Ok(TransactionEvents {
                fee,
                operations: Vec::new(),
            });
        }
        let results = tx.operation_results();
        let mut operations = Vec::new();
        for (i, op) in tx.operations().iter().enumerate() {
            let result = results
                .get(i)
                .with_context(|| format!("no result for operation {i}"))?;
            let events = operations::operation_events(self, tx, i, op, result)
                .with_context(|| format!("operation {} ({})", i + 1, op.body.name()))?;
            operations.extend(events);
        }
        Ok(TransactionEvents { fee, operations })
    }

    /// Event meta with the asset's SAC address as `contract_address`.
    fn meta_for_asset(
        &mut self,
        tx: &LedgerTx<'_>,
        op_index: Option<usize>,
        asset: &stellar_xdr::Asset,
    ) -> EventMeta {
        let contract = self.contracts.address(asset);
        event_meta(tx, op_index, contract)
    }
}

/// Event meta of a transaction; `op_index` is 0-based here and 1-based in the event.
pub(crate) fn event_meta(
    tx: &LedgerTx<'_>,
    op_index: Option<usize>,
    contract_address: String,
) -> EventMeta {
    EventMeta {
        ledger_sequence: tx.ledger.sequence,
        closed_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(tx.ledger.close_time).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        tx_hash: tx.hash_hex(),
        transaction_index: tx.index,
        operation_index: op_index.map(|i| i as u32 + 1),
        contract_address,
        to_muxed_info: None,
    }
}

/// `to_muxed_info` from a transaction memo, as upstream's `NewMuxedInfoFromMemo`.
pub(crate) fn muxed_info_from_memo(memo: &Memo) -> Option<MuxedInfo> {
    let content = match memo {
        Memo::None => return None,
        Memo::Id(id) => muxed_info::Content::Id(*id),
        // A memo text is bytes on the ledger; proto strings must be UTF-8.
        Memo::Text(text) => {
            muxed_info::Content::Text(String::from_utf8_lossy(text.as_slice()).into_owned())
        }
        Memo::Hash(h) | Memo::Return(h) => muxed_info::Content::Hash(h.0.to_vec()),
    };
    Some(MuxedInfo {
        content: Some(content),
    })
}

pub(crate) fn transfer(
    meta: EventMeta,
    from: String,
    to: String,
    amount: String,
    asset: Option<ProtoAsset>,
) -> TokenTransferEvent {
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(Event::Transfer(Transfer {
            from,
            to,
            asset,
            amount,
        })),
    }
}

pub(crate) fn mint(
    meta: EventMeta,
    to: String,
    amount: String,
    asset: Option<ProtoAsset>,
) -> TokenTransferEvent {
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(Event::Mint(Mint { to, asset, amount })),
    }
}

pub(crate) fn burn(
    meta: EventMeta,
    from: String,
    amount: String,
    asset: Option<ProtoAsset>,
) -> TokenTransferEvent {
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(Event::Burn(Burn {
            from,
            asset,
            amount,
        })),
    }
}

pub(crate) fn clawback(
    meta: EventMeta,
    from: String,
    amount: String,
    asset: Option<ProtoAsset>,
) -> TokenTransferEvent {
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(Event::Clawback(Clawback {
            from,
            asset,
            amount,
        })),
    }
}

pub(crate) fn fee(
    meta: EventMeta,
    from: String,
    amount: String,
    asset: Option<ProtoAsset>,
) -> TokenTransferEvent {
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(Event::Fee(Fee {
            from,
            asset,
            amount,
        })),
    }
}

/// The kind of an event as upstream names it (`transfer`, `mint`, `burn`, `clawback`, `fee`).
pub fn event_kind(event: &TokenTransferEvent) -> &'static str {
    match &event.event {
        Some(Event::Transfer(_)) => "transfer",
        Some(Event::Mint(_)) => "mint",
        Some(Event::Burn(_)) => "burn",
        Some(Event::Clawback(_)) => "clawback",
        Some(Event::Fee(_)) => "fee",
        None => "unknown",
    }
}

/// The asset an event moves, if known (custom SEP-41 tokens have none).
pub fn event_asset(event: &TokenTransferEvent) -> Option<&ProtoAsset> {
    match event.event.as_ref()? {
        Event::Transfer(e) => e.asset.as_ref(),
        Event::Mint(e) => e.asset.as_ref(),
        Event::Burn(e) => e.asset.as_ref(),
        Event::Clawback(e) => e.asset.as_ref(),
        Event::Fee(e) => e.asset.as_ref(),
    }
}
