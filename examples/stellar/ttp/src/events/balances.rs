//! Balance bookkeeping of upstream's `verify_events.go`: what events say each holder gained or
//! lost, against what the ledger entry changes say. Used for the pre-protocol-8 XLM
//! reconciliation and, in tests, as an independent check that events account for every token
//! movement of every transaction.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use flowctl_proto::token_transfer::{token_transfer_event::Event, TokenTransferEvent};
use stellar_xdr::{LedgerCloseMeta, LedgerEntryData, LiquidityPoolEntryBody};

use super::address::{
    account_strkey, asset_canonical, claimable_balance_strkey, pool_strkey, proto_asset_canonical,
    trustline_asset,
};
use super::changes::{changes_of, Change};
use super::{event_asset, Extractor, LedgerTx};

/// A holder (strkey) of an asset (canonical string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BalanceKey {
    pub holder: String,
    pub asset: String,
}

fn add(map: &mut HashMap<BalanceKey, i128>, holder: String, asset: String, delta: i128) {
    // Contract balances live in contract data with no standard layout: upstream skips them.
    if holder.starts_with('C') || delta == 0 {
        return;
    }
    let key = BalanceKey { holder, asset };
    let value = map.entry(key.clone()).or_insert(0);
    *value += delta;
    if *value == 0 {
        map.remove(&key);
    }
}

fn data(e: Option<&stellar_xdr::LedgerEntry>) -> Option<&LedgerEntryData> {
    e.map(|e| &e.data)
}

/// Net balance change per holder and asset in ledger entry changes (accounts, trustlines,
/// claimable balances, liquidity pools).
pub fn change_deltas(changes: &[Change<'_>]) -> HashMap<BalanceKey, i128> {
    let mut map = HashMap::new();
    for change in changes {
        let Some(latest) = change.latest() else {
            continue;
        };
        match &latest.data {
            LedgerEntryData::Account(a) => {
                let balance = |d: Option<&LedgerEntryData>| match d {
                    Some(LedgerEntryData::Account(a)) => a.balance as i128,
                    _ => 0,
                };
                let delta = balance(data(change.post)) - balance(data(change.pre));
                add(
                    &mut map,
                    account_strkey(&a.account_id),
                    "native".to_string(),
                    delta,
                );
            }
            LedgerEntryData::Trustline(t) => {
                let Some(asset) = trustline_asset(&t.asset) else {
                    continue;
                };
                let balance = |d: Option<&LedgerEntryData>| match d {
                    Some(LedgerEntryData::Trustline(t)) => t.balance as i128,
                    _ => 0,
                };
                let delta = balance(data(change.post)) - balance(data(change.pre));
                add(
                    &mut map,
                    account_strkey(&t.account_id),
                    asset_canonical(&asset),
                    delta,
                );
            }
            LedgerEntryData::ClaimableBalance(cb) => {
                let amount = |d: Option<&LedgerEntryData>| match d {
                    Some(LedgerEntryData::ClaimableBalance(cb)) => cb.amount as i128,
                    _ => 0,
                };
                let delta = amount(data(change.post)) - amount(data(change.pre));
                add(
                    &mut map,
                    claimable_balance_strkey(&cb.balance_id),
                    asset_canonical(&cb.asset),
                    delta,
                );
            }
            LedgerEntryData::LiquidityPool(lp) => {
                let reserves = |d: Option<&LedgerEntryData>| match d {
                    Some(LedgerEntryData::LiquidityPool(lp)) => {
                        let LiquidityPoolEntryBody::LiquidityPoolConstantProduct(c) = &lp.body;
                        (c.reserve_a as i128, c.reserve_b as i128)
                    }
                    _ => (0, 0),
                };
                let LiquidityPoolEntryBody::LiquidityPoolConstantProduct(cp) = &lp.body;
                let ((pre_a, pre_b), (post_a, post_b)) =
                    (reserves(data(change.pre)), reserves(data(change.post)));
                let holder = pool_strkey(&lp.liquidity_pool_id);
                add(
                    &mut map,
                    holder.clone(),
                    asset_canonical(&cp.params.asset_a),
                    post_a - pre_a,
                );
                add(
                    &mut map,
                    holder,
                    asset_canonical(&cp.params.asset_b),
                    post_b - pre_b,
                );
            }
            _ => {}
        }
    }
    map
}

/// Net balance change per holder and asset that events claim. Events without an asset (custom
/// SEP-41 tokens) are skipped, as upstream.
pub fn event_deltas(events: &[TokenTransferEvent]) -> Result<HashMap<BalanceKey, i128>> {
    let mut map = HashMap::new();
    for event in events {
        let Some(asset) = event_asset(event).and_then(proto_asset_canonical) else {
            continue;
        };
        let parse = |amount: &str| -> Result<i128> {
            amount
                .parse::<i128>()
                .with_context(|| format!("invalid amount {amount:?}"))
        };
        match &event.event {
            Some(Event::Transfer(e)) => {
                let amount = parse(&e.amount)?;
                add(&mut map, e.from.clone(), asset.clone(), -amount);
                add(&mut map, e.to.clone(), asset, amount);
            }
            Some(Event::Mint(e)) => add(&mut map, e.to.clone(), asset, parse(&e.amount)?),
            Some(Event::Burn(e)) => add(&mut map, e.from.clone(), asset, -parse(&e.amount)?),
            Some(Event::Clawback(e)) => add(&mut map, e.from.clone(), asset, -parse(&e.amount)?),
            Some(Event::Fee(e)) => add(&mut map, e.from.clone(), asset, -parse(&e.amount)?),
            None => bail!("event without a kind"),
        }
    }
    Ok(map)
}

/// Upstream's `VerifyEvents`: for every transaction of the ledger, the balance changes its
/// events describe must equal those of its ledger entry changes (fee processing, transaction
/// and operation changes, post-apply refunds). Returns the number of transactions checked.
pub fn verify_ledger(meta: &LedgerCloseMeta, network_passphrase: &str) -> Result<usize> {
    let mut extractor = Extractor::new(network_passphrase);
    let txs = super::ledger_transactions(meta, &extractor.network_id())?;
    for tx in &txs {
        let events = extractor.transaction_events(tx)?;
        let mut all = events.fee;
        all.extend(events.operations);
        let from_events = event_deltas(&all)?;
        let from_changes = change_deltas(&transaction_changes(tx)?);
        if from_events != from_changes {
            let mut keys: Vec<&BalanceKey> =
                from_events.keys().chain(from_changes.keys()).collect();
            keys.sort();
            keys.dedup();
            let diff: Vec<String> = keys
                .into_iter()
                .filter(|k| from_events.get(k) != from_changes.get(k))
                .map(|k| {
                    format!(
                        "{} {}: events {:?}, changes {:?}",
                        k.holder,
                        k.asset,
                        from_events.get(k),
                        from_changes.get(k)
                    )
                })
                .collect();
            bail!(
                "ledger {} tx {} ({}): balance deltas differ\n  {}",
                tx.ledger.sequence,
                tx.index,
                tx.hash_hex(),
                diff.join("\n  ")
            );
        }
    }
    Ok(txs.len())
}

/// Every change a transaction made, as upstream's fee changes + `GetChanges` + post-apply fee
/// changes (operation changes are dropped for internal errors before protocol 13).
fn transaction_changes<'a>(tx: &LedgerTx<'a>) -> Result<Vec<Change<'a>>> {
    let mut out = changes_of(tx.fee_changes.as_slice());
    out.extend(changes_of(tx.tx_changes_before()));
    let internal_error = matches!(
        tx.result.result.result,
        stellar_xdr::TransactionResultResult::TxInternalError
    ) && tx.ledger.protocol <= 12;
    if !internal_error {
        for i in 0..tx.meta_operation_count() {
            out.extend(tx.operation_changes(i)?);
        }
        out.extend(changes_of(tx.tx_changes_after()));
    }
    if let Some(post) = tx.post_apply_fee_changes {
        out.extend(changes_of(post.as_slice()));
    }
    Ok(out)
}
