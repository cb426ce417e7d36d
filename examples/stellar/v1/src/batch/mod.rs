//! One ledger as a [`LedgerBatch`] (upstream's `stellar.ledger.batch.v1` payload): the ledger,
//! its transactions, their operations, the contract events and contract invocations of Soroban
//! operations, and the token transfers `ttp-processor` extracts, as typed rows.
//!
//! What carries over from upstream's `stellar-ledger-processor` (its facts, not its code):
//! - row ids are `<kind>_` and the first 24 hex digits of the SHA-256 of the row's key parts
//!   joined with `:` (`ledger:NETWORK:SEQ`, `tx:NETWORK:SEQ:INDEX:HASH`,
//!   `op:NETWORK:SEQ:TX:OP`, ...), so a re-run of a range produces the same ids and a sink
//!   can upsert by them;
//! - transaction and operation indexes count from 0 in apply order; hashes are lower-case hex;
//!   envelopes, results (`TransactionResultPair`), metas and operations are base64 XDR; an
//!   operation's type is the Go SDK's name (`OperationTypePayment`); `schema_version` is `v1`.
//!
//! What is ours: each transaction's envelope is the one whose hash its result names (upstream
//! pairs the i-th result with the i-th envelope of the transaction set, which is in another
//! order than the apply order of the results, so its envelope and operation rows can belong to
//! another transaction of the ledger); token transfer rows are `stellar_ttp`'s events (the ones
//! the ttp processors stream), one per event, so their id also has the event's position in the
//! ledger (upstream's key `token-transfer:NETWORK:SEQ:TX:OP` is not unique: a fee and a payment
//! share it); contract events are the `contract` events of each operation; an invocation row is
//! an `InvokeHostFunction` operation calling a contract (its arguments as [`scval::to_json`]).
//! Account effects and upstream's bronze rows are not produced.

pub mod rows;
pub mod scval;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use flowctl_proto::token_transfer::{token_transfer_event::Event, TokenTransferEvent};
use sha2::{Digest, Sha256};
use stellar_ttp::events::{
    contract_strkey, hex, ledger_transactions, Extractor, LedgerInfo, LedgerTx,
};
use stellar_xdr::{
    ContractEventBody, ContractEventType, HostFunction, LedgerCloseMeta, Limits, OperationBody,
    WriteXdr,
};

use self::rows::{
    ContractEventRow, ContractInvocationRow, LedgerBatch, LedgerRow, OperationRow,
    TokenTransferRow, TransactionRow,
};

/// `LedgerBatch.schema_version`, as upstream.
pub const SCHEMA_VERSION: &str = "v1";
/// `LedgerBatch.extraction_version`: which extraction wrote the rows.
pub const EXTRACTION_VERSION: &str = concat!("flowctl-rust-v", env!("CARGO_PKG_VERSION"));

/// A stable row id: `kind_` and 24 hex digits of `sha256(kind:part:part...)`.
pub fn row_id(kind: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    for part in parts {
        hasher.update(b":");
        hasher.update(part.as_bytes());
    }
    let digest = hex(&hasher.finalize());
    format!("{kind}_{}", &digest[..24])
}

fn base64_xdr(value: &impl WriteXdr, what: &str) -> Result<String> {
    let bytes = value
        .to_xdr(Limits::none())
        .with_context(|| format!("encoding the {what} as XDR"))?;
    Ok(BASE64.encode(bytes))
}

/// The batch of one ledger of the network `network` (its passphrase). `extractor` must be for
/// the same network (it is reused across ledgers for its caches).
pub fn ledger_batch(
    meta: &LedgerCloseMeta,
    network: &str,
    extractor: &mut Extractor,
) -> Result<LedgerBatch> {
    let info = LedgerInfo::of(meta);
    let sequence = info.sequence;
    let seq = sequence.to_string();
    let closed_at = i64::try_from(info.close_time).unwrap_or(i64::MAX);
    let header = match meta {
        LedgerCloseMeta::V0(v) => &v.ledger_header,
        LedgerCloseMeta::V1(v) => &v.ledger_header,
        LedgerCloseMeta::V2(v) => &v.ledger_header,
    };
    let txs = ledger_transactions(meta, &extractor.network_id())?;
    let mut batch = LedgerBatch {
        network_passphrase: network.to_string(),
        ledger_sequence: sequence,
        closed_at_unix: closed_at,
        schema_version: SCHEMA_VERSION.to_string(),
        extraction_version: EXTRACTION_VERSION.to_string(),
        ledgers: vec![LedgerRow {
            id: row_id("ledger", &[network, &seq]),
            network_passphrase: network.to_string(),
            ledger_sequence: sequence,
            closed_at_unix: closed_at,
            ledger_hash: hex(&header.hash.0),
            previous_ledger_hash: hex(&header.header.previous_ledger_hash.0),
            protocol_version: info.protocol,
            transaction_count: txs.len() as u32,
            schema_version: SCHEMA_VERSION.to_string(),
            extraction_version: EXTRACTION_VERSION.to_string(),
        }],
        ..LedgerBatch::default()
    };
    let mut tx_ids = Vec::with_capacity(txs.len());
    for tx in &txs {
        let tx_id = add_transaction(&mut batch, tx, network, &seq)
            .with_context(|| format!("ledger {sequence} tx {}", tx.hash_hex()))?;
        tx_ids.push(tx_id);
    }
    let transfers = extractor
        .ledger_events(meta)
        .with_context(|| format!("ledger {sequence}: token transfers"))?;
    for (position, event) in transfers.iter().enumerate() {
        batch
            .token_transfers
            .push(token_transfer_row(event, position, network, &seq, &tx_ids)?);
    }
    Ok(batch)
}

/// Adds the transaction's row, its operations, contract events and invocations; returns its id.
fn add_transaction(
    batch: &mut LedgerBatch,
    tx: &LedgerTx<'_>,
    network: &str,
    seq: &str,
) -> Result<String> {
    let sequence = batch.ledger_sequence;
    let tx_index = tx.index - 1;
    let index = tx_index.to_string();
    let hash = tx.hash_hex();
    let tx_id = row_id("tx", &[network, seq, &index, &hash]);
    batch.transactions.push(TransactionRow {
        id: tx_id.clone(),
        network_passphrase: network.to_string(),
        ledger_sequence: sequence,
        transaction_index: tx_index,
        transaction_hash: hash,
        successful: tx.successful(),
        envelope_xdr: base64_xdr(tx.envelope, "envelope")?,
        result_xdr: base64_xdr(tx.result, "result")?,
        meta_xdr: base64_xdr(tx.meta, "meta")?,
    });
    let mut event_index = 0u32;
    for (op_index, op) in tx.operations().iter().enumerate() {
        let op_index = op_index as u32;
        let op_text = op_index.to_string();
        batch.operations.push(OperationRow {
            id: row_id("op", &[network, seq, &index, &op_text]),
            transaction_id: tx_id.clone(),
            network_passphrase: network.to_string(),
            ledger_sequence: sequence,
            transaction_index: tx_index,
            operation_index: op_index,
            operation_type: format!("OperationType{}", op.body.name()),
            operation_xdr: base64_xdr(op, "operation")?,
        });
        if let OperationBody::InvokeHostFunction(invoke) = &op.body {
            if let HostFunction::InvokeContract(call) = &invoke.host_function {
                batch.contract_invocations.push(ContractInvocationRow {
                    id: row_id("contract-invocation", &[network, seq, &index, &op_text]),
                    transaction_id: tx_id.clone(),
                    network_passphrase: network.to_string(),
                    ledger_sequence: sequence,
                    transaction_index: tx_index,
                    invocation_index: op_index,
                    contract_id: stellar_ttp::events::sc_address_strkey(&call.contract_address),
                    function_name: String::from_utf8_lossy(call.function_name.as_slice())
                        .into_owned(),
                    arguments_json: scval::list_json(call.args.as_slice()),
                });
            }
        }
        // Meta v3 keeps a Soroban transaction's events for its one operation; v4 per operation.
        if tx.meta_version() == 3 && op_index > 0 {
            continue;
        }
        for event in tx.contract_events(op_index as usize) {
            if event.type_ != ContractEventType::Contract {
                continue;
            }
            let ContractEventBody::V0(body) = &event.body;
            let event_text = event_index.to_string();
            batch.contract_events.push(ContractEventRow {
                id: row_id("contract-event", &[network, seq, &index, &event_text]),
                transaction_id: tx_id.clone(),
                network_passphrase: network.to_string(),
                ledger_sequence: sequence,
                transaction_index: tx_index,
                event_index,
                contract_id: event
                    .contract_id
                    .as_ref()
                    .map(|id| contract_strkey(&id.0 .0))
                    .unwrap_or_default(),
                topic_json: scval::list_json(body.topics.as_slice()),
                value_json: scval::to_json(&body.data).to_string(),
            });
            event_index += 1;
        }
    }
    Ok(tx_id)
}

/// The row of the `position`-th token transfer event of the ledger.
fn token_transfer_row(
    event: &TokenTransferEvent,
    position: usize,
    network: &str,
    seq: &str,
    tx_ids: &[String],
) -> Result<TokenTransferRow> {
    let meta = event
        .meta
        .as_ref()
        .context("a token transfer without meta")?;
    // The events count transactions and operations from 1, the batch from 0.
    let tx_index = meta.transaction_index.saturating_sub(1);
    let op_index = meta.operation_index.map_or(0, |i| i.saturating_sub(1));
    let transaction_id = tx_ids.get(tx_index as usize).cloned().with_context(|| {
        format!("a token transfer of transaction {tx_index}, not in the ledger")
    })?;
    let (from, to, asset, amount) = match &event.event {
        Some(Event::Transfer(e)) => (e.from.as_str(), e.to.as_str(), &e.asset, &e.amount),
        Some(Event::Mint(e)) => ("", e.to.as_str(), &e.asset, &e.amount),
        Some(Event::Burn(e)) => (e.from.as_str(), "", &e.asset, &e.amount),
        Some(Event::Clawback(e)) => (e.from.as_str(), "", &e.asset, &e.amount),
        Some(Event::Fee(e)) => (e.from.as_str(), "", &e.asset, &e.amount),
        None => anyhow::bail!("a token transfer event without a kind"),
    };
    let (asset_code, asset_issuer) = match asset.as_ref().and_then(|a| a.asset_type.as_ref()) {
        Some(flowctl_proto::asset::asset::AssetType::Native(_)) => {
            ("native".to_string(), String::new())
        }
        Some(flowctl_proto::asset::asset::AssetType::IssuedAsset(issued)) => {
            (issued.asset_code.clone(), issued.issuer.clone())
        }
        None => (String::new(), String::new()),
    };
    Ok(TokenTransferRow {
        id: row_id(
            "token-transfer",
            &[
                network,
                seq,
                &tx_index.to_string(),
                &op_index.to_string(),
                &position.to_string(),
            ],
        ),
        transaction_id,
        network_passphrase: network.to_string(),
        ledger_sequence: meta.ledger_sequence,
        transaction_index: tx_index,
        operation_index: op_index,
        asset_code,
        asset_issuer,
        from_account: from.to_string(),
        to_account: to.to_string(),
        amount: amount.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_are_kind_and_24_hex_digits_of_the_key() {
        let id = row_id("ledger", &["Test SDF Network ; September 2015", "997"]);
        let digest = hex(&Sha256::digest(
            b"ledger:Test SDF Network ; September 2015:997",
        ));
        assert_eq!(id, format!("ledger_{}", &digest[..24]));
        assert_ne!(
            id,
            row_id("ledger", &["Test SDF Network ; September 2015", "998"])
        );
    }
}
