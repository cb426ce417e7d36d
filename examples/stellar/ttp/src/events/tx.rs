//! One transaction of a ledger with everything the event rules read, as upstream's
//! `ingest.LedgerTransaction`: envelopes matched to results by hash, in apply order.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use stellar_xdr::{
    FeeBumpTransactionInnerTx, GeneralizedTransactionSet, LedgerCloseMeta, LedgerCloseMetaV0,
    LedgerCloseMetaV1, LedgerEntryChange, LedgerEntryChanges, Memo, MuxedAccount, Operation,
    OperationResult, TransactionEnvelope, TransactionExt, TransactionMeta, TransactionPhase,
    TransactionResultPair, TransactionResultResult, TxSetComponent, Uint256,
};

use super::changes::{changes_of, Change};

/// What every event of a ledger shares.
#[derive(Debug, Clone, Copy)]
pub struct LedgerInfo {
    pub sequence: u32,
    pub close_time: u64,
    pub protocol: u32,
}

impl LedgerInfo {
    /// Header facts of a `LedgerCloseMeta`.
    pub fn of(meta: &LedgerCloseMeta) -> LedgerInfo {
        let header = match meta {
            LedgerCloseMeta::V0(v) => &v.ledger_header.header,
            LedgerCloseMeta::V1(v) => &v.ledger_header.header,
            LedgerCloseMeta::V2(v) => &v.ledger_header.header,
        };
        LedgerInfo {
            sequence: header.ledger_seq,
            close_time: header.scp_value.close_time.0,
            protocol: header.ledger_version,
        }
    }
}

/// A transaction with its result and meta.
#[derive(Debug)]
pub struct LedgerTx<'a> {
    /// Position in apply order, from 1.
    pub index: u32,
    pub hash: [u8; 32],
    pub envelope: &'a TransactionEnvelope,
    pub result: &'a TransactionResultPair,
    pub fee_changes: &'a LedgerEntryChanges,
    pub meta: &'a TransactionMeta,
    /// Protocol 23+: refunds applied after the whole transaction set.
    pub post_apply_fee_changes: Option<&'a LedgerEntryChanges>,
    pub ledger: LedgerInfo,
}

/// The transactions of a ledger in apply order, each paired with its envelope.
pub fn ledger_transactions<'a>(
    meta: &'a LedgerCloseMeta,
    network_id: &[u8; 32],
) -> Result<Vec<LedgerTx<'a>>> {
    let ledger = LedgerInfo::of(meta);
    let mut by_hash: HashMap<[u8; 32], &TransactionEnvelope> = HashMap::new();
    for (i, envelope) in envelopes(meta).into_iter().enumerate() {
        let hash = envelope
            .hash(*network_id)
            .with_context(|| format!("hashing transaction {i} of the tx set"))?;
        by_hash.insert(hash, envelope);
    }
    let mut txs = Vec::new();
    let mut push = |i: usize,
                    result: &'a TransactionResultPair,
                    fee_changes: &'a LedgerEntryChanges,
                    tx_meta: &'a TransactionMeta,
                    post: Option<&'a LedgerEntryChanges>|
     -> Result<()> {
        // As upstream's transaction reader: old ledgers need meta re-emitted in v2 or later.
        if ledger.protocol < 10
            && matches!(tx_meta, TransactionMeta::V0(_) | TransactionMeta::V1(_))
            && !fee_changes.is_empty()
        {
            bail!(
                "ledger {}: TransactionMeta v2 or later is required before protocol 10; \
                 reprocess the ledgers with a recent stellar-core",
                ledger.sequence
            );
        }
        let hash = result.transaction_hash.0;
        let envelope = by_hash.get(&hash).copied().ok_or_else(|| {
            anyhow!(
                "ledger {}: result {} names tx {} that is not in the tx set (wrong network \
                 passphrase?)",
                ledger.sequence,
                i + 1,
                hex(&hash)
            )
        })?;
        txs.push(LedgerTx {
            index: (i + 1) as u32,
            hash,
            envelope,
            result,
            fee_changes,
            meta: tx_meta,
            post_apply_fee_changes: post,
            ledger,
        });
        Ok(())
    };
    match meta {
        // V0 and V1 carry the same per-transaction record, without post-apply fee changes.
        LedgerCloseMeta::V0(LedgerCloseMetaV0 { tx_processing, .. })
        | LedgerCloseMeta::V1(LedgerCloseMetaV1 { tx_processing, .. }) => {
            for (i, p) in tx_processing.iter().enumerate() {
                push(
                    i,
                    &p.result,
                    &p.fee_processing,
                    &p.tx_apply_processing,
                    None,
                )?;
            }
        }
        LedgerCloseMeta::V2(v) => {
            for (i, p) in v.tx_processing.iter().enumerate() {
                push(
                    i,
                    &p.result,
                    &p.fee_processing,
                    &p.tx_apply_processing,
                    Some(&p.post_tx_apply_fee_processing),
                )?;
            }
        }
    }
    Ok(txs)
}

/// Every envelope of the ledger's transaction set, in set order.
fn envelopes(meta: &LedgerCloseMeta) -> Vec<&TransactionEnvelope> {
    fn generalized(set: &GeneralizedTransactionSet) -> Vec<&TransactionEnvelope> {
        let GeneralizedTransactionSet::V1(set) = set;
        let mut out = Vec::new();
        for phase in set.phases.iter() {
            match phase {
                TransactionPhase::V0(components) => {
                    for component in components.iter() {
                        let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = component;
                        out.extend(c.txs.iter());
                    }
                }
                TransactionPhase::V1(parallel) => {
                    for stage in parallel.execution_stages.iter() {
                        for cluster in stage.0.iter() {
                            out.extend(cluster.0.iter());
                        }
                    }
                }
            }
        }
        out
    }
    match meta {
        LedgerCloseMeta::V0(v) => v.tx_set.txs.iter().collect(),
        LedgerCloseMeta::V1(v) => generalized(&v.tx_set),
        LedgerCloseMeta::V2(v) => generalized(&v.tx_set),
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

impl<'a> LedgerTx<'a> {
    /// The account that paid the fee: the fee-bump source, else the transaction source.
    pub fn fee_account(&self) -> MuxedAccount {
        match self.envelope {
            TransactionEnvelope::TxFeeBump(e) => e.tx.fee_source.clone(),
            _ => self.source_account(),
        }
    }

    /// The (inner) transaction's source account.
    pub fn source_account(&self) -> MuxedAccount {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => {
                MuxedAccount::Ed25519(e.tx.source_account_ed25519.clone())
            }
            TransactionEnvelope::Tx(e) => e.tx.source_account.clone(),
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                inner.tx.source_account.clone()
            }
        }
    }

    /// The (inner) transaction's source account key.
    pub fn source_key(&self) -> Uint256 {
        match self.source_account() {
            MuxedAccount::Ed25519(k) => k,
            MuxedAccount::MuxedEd25519(m) => m.ed25519,
        }
    }

    /// The (inner) transaction's sequence number.
    pub fn seq_num(&self) -> i64 {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => e.tx.seq_num.0,
            TransactionEnvelope::Tx(e) => e.tx.seq_num.0,
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                inner.tx.seq_num.0
            }
        }
    }

    /// The (inner) transaction's memo.
    pub fn memo(&self) -> &Memo {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => &e.tx.memo,
            TransactionEnvelope::Tx(e) => &e.tx.memo,
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                &inner.tx.memo
            }
        }
    }

    /// The (inner) transaction's operations.
    pub fn operations(&self) -> &'a [Operation] {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => e.tx.operations.as_slice(),
            TransactionEnvelope::Tx(e) => e.tx.operations.as_slice(),
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                inner.tx.operations.as_slice()
            }
        }
    }

    /// Whether the (inner) transaction carries Soroban resources.
    pub fn is_soroban(&self) -> bool {
        let ext = match self.envelope {
            TransactionEnvelope::TxV0(_) => return false,
            TransactionEnvelope::Tx(e) => &e.tx.ext,
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                &inner.tx.ext
            }
        };
        matches!(ext, TransactionExt::V1(_))
    }

    /// Whether the transaction (or a fee-bump's inner transaction) succeeded.
    pub fn successful(&self) -> bool {
        matches!(
            self.result.result.result,
            TransactionResultResult::TxSuccess(_)
                | TransactionResultResult::TxFeeBumpInnerSuccess(_)
        )
    }

    /// The operation results of a successful transaction.
    pub fn operation_results(&self) -> &'a [OperationResult] {
        match &self.result.result.result {
            TransactionResultResult::TxSuccess(r) | TransactionResultResult::TxFailed(r) => {
                r.as_slice()
            }
            TransactionResultResult::TxFeeBumpInnerSuccess(p)
            | TransactionResultResult::TxFeeBumpInnerFailed(p) => match &p.result.result {
                stellar_xdr::InnerTransactionResultResult::TxSuccess(r)
                | stellar_xdr::InnerTransactionResultResult::TxFailed(r) => r.as_slice(),
                _ => &[],
            },
            _ => &[],
        }
    }

    fn internal_error_before_13(&self) -> bool {
        matches!(
            self.result.result.result,
            TransactionResultResult::TxInternalError
        ) && self.ledger.protocol <= 12
    }

    /// Raw ledger entry changes of one operation (upstream ignores them for old internal
    /// errors, stellar/go#2111).
    pub fn operation_raw_changes(&self, op_index: usize) -> Result<&'a [LedgerEntryChange]> {
        if self.internal_error_before_13() {
            return Ok(&[]);
        }
        let changes = match self.meta {
            TransactionMeta::V0(_) => bail!("TransactionMeta.V=0 not supported"),
            TransactionMeta::V1(m) => m.operations.get(op_index).map(|o| &o.changes),
            TransactionMeta::V2(m) => m.operations.get(op_index).map(|o| &o.changes),
            TransactionMeta::V3(m) => m.operations.get(op_index).map(|o| &o.changes),
            TransactionMeta::V4(m) => m.operations.get(op_index).map(|o| &o.changes),
        };
        Ok(changes.map(|c| c.as_slice()).unwrap_or(&[]))
    }

    /// Pre/post pairs of one operation's changes, sorted by ledger key as upstream.
    pub fn operation_changes(&self, op_index: usize) -> Result<Vec<Change<'a>>> {
        Ok(changes_of(self.operation_raw_changes(op_index)?))
    }

    /// Changes applied after the operations (`txChangesAfter`), where pre-23 refunds live.
    pub fn tx_changes_after(&self) -> &'a [LedgerEntryChange] {
        match self.meta {
            TransactionMeta::V2(m) => m.tx_changes_after.as_slice(),
            TransactionMeta::V3(m) => m.tx_changes_after.as_slice(),
            TransactionMeta::V4(m) => m.tx_changes_after.as_slice(),
            _ => &[],
        }
    }

    /// Changes applied before the operations.
    pub fn tx_changes_before(&self) -> &'a [LedgerEntryChange] {
        match self.meta {
            TransactionMeta::V1(m) => m.tx_changes.as_slice(),
            TransactionMeta::V2(m) => m.tx_changes_before.as_slice(),
            TransactionMeta::V3(m) => m.tx_changes_before.as_slice(),
            TransactionMeta::V4(m) => m.tx_changes_before.as_slice(),
            _ => &[],
        }
    }

    /// Number of operations the meta describes.
    pub fn meta_operation_count(&self) -> usize {
        match self.meta {
            TransactionMeta::V0(o) => o.len(),
            TransactionMeta::V1(m) => m.operations.len(),
            TransactionMeta::V2(m) => m.operations.len(),
            TransactionMeta::V3(m) => m.operations.len(),
            TransactionMeta::V4(m) => m.operations.len(),
        }
    }

    /// Meta version number, as upstream's `UnsafeMeta.V`.
    pub fn meta_version(&self) -> u32 {
        match self.meta {
            TransactionMeta::V0(_) => 0,
            TransactionMeta::V1(_) => 1,
            TransactionMeta::V2(_) => 2,
            TransactionMeta::V3(_) => 3,
            TransactionMeta::V4(_) => 4,
        }
    }

    /// Contract events of an operation: meta v3 keeps them per transaction, v4 per operation.
    pub fn contract_events(&self, op_index: usize) -> &'a [stellar_xdr::ContractEvent] {
        match self.meta {
            TransactionMeta::V3(m) => m.soroban_meta.as_ref().map_or(&[], |s| s.events.as_slice()),
            TransactionMeta::V4(m) => m
                .operations
                .get(op_index)
                .map_or(&[], |o| o.events.as_slice()),
            _ => &[],
        }
    }

    /// Lower-case hex of the transaction hash.
    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}
