//! Fee events: one per transaction, failed ones too, plus a negative refund for Soroban.

use anyhow::{bail, Result};
use flowctl_proto::token_transfer::TokenTransferEvent;
use stellar_xdr::{Asset, LedgerEntryChange, LedgerEntryData};

use super::address::{muxed_base_strkey, proto_asset};
use super::{fee, Extractor, LedgerTx};

/// The fee charged, then the Soroban refund (negative) when there is one, as upstream's
/// `generateFeeEvents`: classic fees are the result's `feeCharged`; a Soroban fee is what the fee
/// account's balance lost in fee processing, and its refund what it regained afterwards (in
/// `txChangesAfter` before protocol 23, in `postTxApplyFeeProcessing` from 23 on).
pub fn fee_events(x: &mut Extractor, tx: &LedgerTx<'_>) -> Result<Vec<TokenTransferEvent>> {
    let fee_account = tx.fee_account();
    let from = muxed_base_strkey(&fee_account);
    let meta = x.meta_for_asset(tx, None, &Asset::Native);
    let xlm = Some(proto_asset(&Asset::Native));
    if !tx.is_soroban() {
        let charged = tx.result.result.fee_charged;
        return Ok(vec![fee(meta, from, charged.to_string(), xlm)]);
    }
    let (start, end) = balance_start_end(tx.fee_changes.iter(), &from);
    if end > start {
        bail!("fee account {from} gained XLM in fee processing ({start} -> {end})");
    }
    let mut events = vec![fee(
        meta.clone(),
        from.clone(),
        (start - end).to_string(),
        xlm.clone(),
    )];
    let after = tx.tx_changes_after().iter().chain(
        tx.post_apply_fee_changes
            .map_or(&[][..], |c| c.as_slice())
            .iter(),
    );
    let (start, end) = balance_start_end(after, &from);
    if start > end {
        bail!("fee account {from} lost XLM in the refund ({start} -> {end})");
    }
    if end > start {
        events.push(fee(meta, from, (-(end - start)).to_string(), xlm));
    }
    Ok(events)
}

/// Balance of `account` in its last `STATE` and last `UPDATED` entry, 0 where there is none, as
/// upstream's `getAccountBalanceFromLedgerEntryChanges`.
fn balance_start_end<'a>(
    changes: impl Iterator<Item = &'a LedgerEntryChange>,
    account: &str,
) -> (i64, i64) {
    let (mut start, mut end) = (0, 0);
    for change in changes {
        let (entry, is_state) = match change {
            LedgerEntryChange::State(e) => (e, true),
            LedgerEntryChange::Updated(e) => (e, false),
            _ => continue,
        };
        if let LedgerEntryData::Account(a) = &entry.data {
            if a.account_id.to_string() == account {
                if is_state {
                    start = a.balance;
                } else {
                    end = a.balance;
                }
            }
        }
    }
    (start, end)
}
