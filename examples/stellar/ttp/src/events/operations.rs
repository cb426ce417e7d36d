//! Events of classic operations, from the operation, its result and its ledger entry changes.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use flowctl_proto::token_transfer::{token_transfer_event::Event, MuxedInfo, TokenTransferEvent};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, AccountMergeResult, Asset, ClaimAtom, ClaimableBalanceEntry, ClaimableBalanceId,
    CreateClaimableBalanceResult, Hash, HashIdPreimage, HashIdPreimageRevokeId, InflationResult,
    LedgerEntryData, Limits, LiquidityPoolEntryBody, ManageBuyOfferResult, ManageSellOfferResult,
    MuxedAccount, Operation, OperationBody, OperationResult, OperationResultTr,
    PathPaymentStrictReceiveResult, PathPaymentStrictSendResult, PoolId, PublicKey, SequenceNumber,
    WriteXdr,
};

use super::address::{
    account_of_strkey, account_strkey, asset_issuer, claimable_balance_strkey, ed25519_strkey,
    is_account_strkey, mux_id_of_strkey, muxed_base_strkey, muxed_strkey, pool_strkey, proto_asset,
};
use super::balances::{change_deltas, event_deltas, BalanceKey};
use super::changes::Change;
use super::{burn, clawback, contract, mint, muxed_info_from_memo, transfer, Extractor, LedgerTx};

/// Events of one successful operation (0-based `i`), as upstream's `EventsFromOperation`.
pub fn operation_events(
    x: &mut Extractor,
    tx: &LedgerTx<'_>,
    i: usize,
    op: &Operation,
    result: &OperationResult,
) -> Result<Vec<TokenTransferEvent>> {
    let tr = match result {
        OperationResult::OpInner(tr) => Some(tr),
        _ => None,
    };
    let source = op
        .source_account
        .clone()
        .unwrap_or_else(|| tx.source_account());
    let src = muxed_strkey(&source);
    let events = match (&op.body, tr) {
        (OperationBody::CreateAccount(o), _) => {
            let to = account_strkey(&o.destination);
            vec![x.mint_burn_or_transfer(
                tx,
                Some(i),
                &Asset::Native,
                &src,
                &to,
                o.starting_balance.to_string(),
                true,
            )?]
        }
        (OperationBody::AccountMerge(dest), Some(OperationResultTr::AccountMerge(r))) => match r {
            AccountMergeResult::Success(balance) => {
                let to = muxed_strkey(dest);
                vec![x.mint_burn_or_transfer(
                    tx,
                    Some(i),
                    &Asset::Native,
                    &src,
                    &to,
                    balance.to_string(),
                    true,
                )?]
            }
            _ => Vec::new(),
        },
        (OperationBody::Payment(o), _) => {
            let to = muxed_strkey(&o.destination);
            vec![x.mint_burn_or_transfer(
                tx,
                Some(i),
                &o.asset,
                &src,
                &to,
                o.amount.to_string(),
                true,
            )?]
        }
        (
            OperationBody::CreateClaimableBalance(o),
            Some(OperationResultTr::CreateClaimableBalance(r)),
        ) => {
            let CreateClaimableBalanceResult::Success(id) = r else {
                bail!("successful operation without a balance id");
            };
            let to = claimable_balance_strkey(id);
            vec![x.mint_burn_or_transfer(
                tx,
                Some(i),
                &o.asset,
                &src,
                &to,
                o.amount.to_string(),
                false,
            )?]
        }
        (OperationBody::ClaimClaimableBalance(o), _) => {
            let cb = single_claimable_balance(tx, i, ChangeKind::Removed)?;
            let from = claimable_balance_strkey(&o.balance_id);
            vec![x.mint_burn_or_transfer(
                tx,
                Some(i),
                &cb.asset,
                &from,
                &src,
                cb.amount.to_string(),
                true,
            )?]
        }
        (OperationBody::Clawback(o), _) => {
            let meta = x.meta_for_asset(tx, Some(i), &o.asset);
            let from = muxed_base_strkey(&o.from);
            vec![clawback(
                meta,
                from,
                o.amount.to_string(),
                Some(proto_asset(&o.asset)),
            )]
        }
        (OperationBody::ClawbackClaimableBalance(o), _) => {
            let cb = single_claimable_balance(tx, i, ChangeKind::Removed)?;
            let meta = x.meta_for_asset(tx, Some(i), &cb.asset);
            let from = claimable_balance_strkey(&o.balance_id);
            vec![clawback(
                meta,
                from,
                cb.amount.to_string(),
                Some(proto_asset(&cb.asset)),
            )]
        }
        (OperationBody::AllowTrust(_), _) | (OperationBody::SetTrustLineFlags(_), _) => {
            revoked_trustline_events(x, tx, i)?
        }
        (OperationBody::LiquidityPoolDeposit(_), _) => {
            let lp = single_pool_delta(tx, i)?;
            if lp.amount_a <= 0 || lp.amount_b <= 0 {
                bail!(
                    "deposit of a non-positive amount into {}",
                    pool_strkey(&lp.id)
                );
            }
            let pool = pool_strkey(&lp.id);
            vec![
                x.mint_burn_or_transfer(
                    tx,
                    Some(i),
                    &lp.asset_a,
                    &src,
                    &pool,
                    lp.amount_a.to_string(),
                    false,
                )?,
                x.mint_burn_or_transfer(
                    tx,
                    Some(i),
                    &lp.asset_b,
                    &src,
                    &pool,
                    lp.amount_b.to_string(),
                    false,
                )?,
            ]
        }
        (OperationBody::LiquidityPoolWithdraw(_), _) => {
            let lp = single_pool_delta(tx, i)?;
            if lp.amount_a < 0 || lp.amount_b < 0 {
                bail!(
                    "withdrawal of a negative amount from {}",
                    pool_strkey(&lp.id)
                );
            }
            let pool = pool_strkey(&lp.id);
            vec![
                x.mint_burn_or_transfer(
                    tx,
                    Some(i),
                    &lp.asset_a,
                    &pool,
                    &src,
                    lp.amount_a.to_string(),
                    true,
                )?,
                x.mint_burn_or_transfer(
                    tx,
                    Some(i),
                    &lp.asset_b,
                    &pool,
                    &src,
                    lp.amount_b.to_string(),
                    true,
                )?,
            ]
        }
        (OperationBody::ManageBuyOffer(_), Some(OperationResultTr::ManageBuyOffer(r))) => match r {
            ManageBuyOfferResult::Success(s) => {
                claim_atom_events(x, tx, i, &source, &s.offers_claimed)?
            }
            _ => Vec::new(),
        },
        (OperationBody::ManageSellOffer(_), Some(OperationResultTr::ManageSellOffer(r)))
        | (
            OperationBody::CreatePassiveSellOffer(_),
            Some(OperationResultTr::CreatePassiveSellOffer(r)),
        ) => match r {
            ManageSellOfferResult::Success(s) => {
                claim_atom_events(x, tx, i, &source, &s.offers_claimed)?
            }
            _ => Vec::new(),
        },
        (
            OperationBody::PathPaymentStrictSend(o),
            Some(OperationResultTr::PathPaymentStrictSend(r)),
        ) => {
            let PathPaymentStrictSendResult::Success(s) = r else {
                bail!("successful operation without a success result");
            };
            let mut events = claim_atom_events(x, tx, i, &source, &s.offers)?;
            let to = muxed_strkey(&o.destination);
            events.push(x.mint_burn_or_transfer(
                tx,
                Some(i),
                &o.dest_asset,
                &src,
                &to,
                s.last.amount.to_string(),
                true,
            )?);
            events
        }
        (
            OperationBody::PathPaymentStrictReceive(o),
            Some(OperationResultTr::PathPaymentStrictReceive(r)),
        ) => {
            let PathPaymentStrictReceiveResult::Success(s) = r else {
                bail!("successful operation without a success result");
            };
            let mut events = claim_atom_events(x, tx, i, &source, &s.offers)?;
            let to = muxed_strkey(&o.destination);
            events.push(x.mint_burn_or_transfer(
                tx,
                Some(i),
                &o.dest_asset,
                &src,
                &to,
                o.dest_amount.to_string(),
                true,
            )?);
            events
        }
        (OperationBody::Inflation, Some(OperationResultTr::Inflation(r))) => {
            let InflationResult::Success(payouts) = r else {
                bail!("successful inflation without payouts");
            };
            let meta = x.meta_for_asset(tx, Some(i), &Asset::Native);
            payouts
                .iter()
                .map(|p| {
                    mint(
                        meta.clone(),
                        account_strkey(&p.destination),
                        p.amount.to_string(),
                        Some(proto_asset(&Asset::Native)),
                    )
                })
                .collect()
        }
        (OperationBody::InvokeHostFunction(_), _) => contract::contract_events(x, tx, i)?,
        (
            OperationBody::AccountMerge(_)
            | OperationBody::CreateClaimableBalance(_)
            | OperationBody::ManageBuyOffer(_)
            | OperationBody::ManageSellOffer(_)
            | OperationBody::CreatePassiveSellOffer(_)
            | OperationBody::PathPaymentStrictSend(_)
            | OperationBody::PathPaymentStrictReceive(_)
            | OperationBody::Inflation,
            _,
        ) => bail!("operation result does not match the operation"),
        // Operations that move no tokens: upstream returns no events and skips reconciliation.
        _ => return Ok(Vec::new()),
    };
    if tx.ledger.protocol >= 8 {
        return Ok(events);
    }
    reconcile_xlm(x, tx, i, &source, events)
}

impl Extractor {
    /// Upstream's `mintOrBurnOrTransferEvent`: a movement from an asset's issuer is a mint, to its
    /// issuer a burn, otherwise (or issuer to itself) a transfer. Addresses are strkeys; `M…`
    /// ones are reduced to `G…`, and with `mux` the destination's mux id (or the transaction memo)
    /// goes into `to_muxed_info`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mint_burn_or_transfer(
        &mut self,
        tx: &LedgerTx<'_>,
        op_index: Option<usize>,
        asset: &Asset,
        from: &str,
        to: &str,
        amount: String,
        mux: bool,
    ) -> Result<TokenTransferEvent> {
        let issuer = asset_issuer(asset).map(account_strkey);
        let reduce = |address: &str| -> (String, bool) {
            if is_account_strkey(address) {
                let account = account_of_strkey(address).unwrap_or_else(|| address.to_string());
                let is_issuer = issuer.as_deref() == Some(account.as_str());
                (account, is_issuer)
            } else {
                (address.to_string(), false)
            }
        };
        let (from_address, from_issuer) = reduce(from);
        let (to_address, to_issuer) = reduce(to);
        if from_address.is_empty() || to_address.is_empty() {
            bail!("event with an empty address");
        }
        let mut meta = self.meta_for_asset(tx, op_index, asset);
        let asset = Some(proto_asset(asset));
        if to_issuer && !from_issuer {
            return Ok(burn(meta, from_address, amount, asset));
        }
        if mux {
            meta.to_muxed_info = destination_muxed_info(tx, to);
        }
        if from_issuer && !to_issuer {
            return Ok(mint(meta, to_address, amount, asset));
        }
        Ok(transfer(meta, from_address, to_address, amount, asset))
    }
}

/// Upstream's `setDestinationMuxedInfo`: only accounts carry it; none for Soroban transactions
/// before protocol 23; an `M…` destination gives its id, a `G…` one the transaction memo.
fn destination_muxed_info(tx: &LedgerTx<'_>, to: &str) -> Option<MuxedInfo> {
    if !is_account_strkey(to) || (tx.is_soroban() && tx.ledger.protocol < 23) {
        return None;
    }
    if to.starts_with('M') {
        return mux_id_of_strkey(to).map(|id| MuxedInfo {
            content: Some(flowctl_proto::token_transfer::muxed_info::Content::Id(id)),
        });
    }
    muxed_info_from_memo(tx.memo())
}

/// Two transfers per trade: what the seller (account or pool) gave to the operation source, and
/// what the source gave back. No muxed info: the trade's counterparty is not a destination.
fn claim_atom_events(
    x: &mut Extractor,
    tx: &LedgerTx<'_>,
    i: usize,
    source: &MuxedAccount,
    claims: &[ClaimAtom],
) -> Result<Vec<TokenTransferEvent>> {
    let operation_source = muxed_base_strkey(source);
    let mut events = Vec::with_capacity(claims.len() * 2);
    for claim in claims {
        let (seller, sold, amount_sold, bought, amount_bought) = match claim {
            ClaimAtom::V0(c) => (
                ed25519_strkey(&c.seller_ed25519),
                &c.asset_sold,
                c.amount_sold,
                &c.asset_bought,
                c.amount_bought,
            ),
            ClaimAtom::OrderBook(c) => (
                account_strkey(&c.seller_id),
                &c.asset_sold,
                c.amount_sold,
                &c.asset_bought,
                c.amount_bought,
            ),
            ClaimAtom::LiquidityPool(c) => (
                pool_strkey(&c.liquidity_pool_id),
                &c.asset_sold,
                c.amount_sold,
                &c.asset_bought,
                c.amount_bought,
            ),
        };
        events.push(x.mint_burn_or_transfer(
            tx,
            Some(i),
            sold,
            &seller,
            &operation_source,
            amount_sold.to_string(),
            false,
        )?);
        events.push(x.mint_burn_or_transfer(
            tx,
            Some(i),
            bought,
            &operation_source,
            &seller,
            amount_bought.to_string(),
            false,
        )?);
    }
    Ok(events)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Created,
    Removed,
}

fn claimable_balances(
    tx: &LedgerTx<'_>,
    i: usize,
    kind: ChangeKind,
) -> Result<Vec<ClaimableBalanceEntry>> {
    let mut out = Vec::new();
    for change in tx.operation_changes(i)? {
        let matches = match kind {
            ChangeKind::Created => change.is_created(),
            ChangeKind::Removed => change.is_removed(),
        };
        if let (true, Some(entry)) = (matches, change.latest()) {
            if let LedgerEntryData::ClaimableBalance(cb) = &entry.data {
                out.push(cb.clone());
            }
        }
    }
    Ok(out)
}

/// The one claimable balance an operation removed (claim or clawback).
fn single_claimable_balance(
    tx: &LedgerTx<'_>,
    i: usize,
    kind: ChangeKind,
) -> Result<ClaimableBalanceEntry> {
    let mut entries = claimable_balances(tx, i, kind)?;
    match entries.len() {
        0 => bail!("no claimable balance entry found in operation changes"),
        1 => Ok(entries.remove(0)),
        n => bail!("{n} claimable balance entries found in operation changes, expected one"),
    }
}

/// How one liquidity pool's reserves moved in an operation (absolute amounts).
struct PoolDelta {
    id: PoolId,
    asset_a: Asset,
    asset_b: Asset,
    amount_a: i64,
    amount_b: i64,
}

fn pool(e: Option<&stellar_xdr::LedgerEntry>) -> Option<&stellar_xdr::LiquidityPoolEntry> {
    match e.map(|e| &e.data) {
        Some(LedgerEntryData::LiquidityPool(lp)) => Some(lp),
        _ => None,
    }
}

fn pool_deltas(changes: &[Change<'_>]) -> Vec<PoolDelta> {
    let mut out = Vec::new();
    for change in changes {
        let (pre, post) = (pool(change.pre), pool(change.post));
        let Some(latest) = post.or(pre) else { continue };
        let LiquidityPoolEntryBody::LiquidityPoolConstantProduct(cp) = &latest.body;
        let reserves = |lp: Option<&stellar_xdr::LiquidityPoolEntry>| {
            lp.map_or((0, 0), |lp| {
                let LiquidityPoolEntryBody::LiquidityPoolConstantProduct(c) = &lp.body;
                (c.reserve_a, c.reserve_b)
            })
        };
        let ((pre_a, pre_b), (post_a, post_b)) = (reserves(pre), reserves(post));
        out.push(PoolDelta {
            id: latest.liquidity_pool_id.clone(),
            asset_a: cp.params.asset_a.clone(),
            asset_b: cp.params.asset_b.clone(),
            amount_a: (post_a - pre_a).abs(),
            amount_b: (post_b - pre_b).abs(),
        });
    }
    out
}

fn single_pool_delta(tx: &LedgerTx<'_>, i: usize) -> Result<PoolDelta> {
    let mut deltas = pool_deltas(&tx.operation_changes(i)?);
    match deltas.len() {
        0 => bail!("no liquidity pool entry found in operation changes"),
        1 => Ok(deltas.remove(0)),
        n => bail!("{n} liquidity pool entries found in operation changes, expected one"),
    }
}

/// The id of the claimable balance CAP-38 creates when revoking a trustline pulls `asset` out
/// of a pool: `sha256(HashIdPreimage::PoolRevokeOpId { tx source, tx seq, op index, pool, asset })`.
pub fn revocation_balance_id(
    source: &AccountId,
    seq_num: i64,
    op_index: u32,
    pool: &PoolId,
    asset: &Asset,
) -> Result<[u8; 32]> {
    let preimage = HashIdPreimage::PoolRevokeOpId(HashIdPreimageRevokeId {
        source_account: source.clone(),
        seq_num: SequenceNumber(seq_num),
        op_num: op_index,
        liquidity_pool_id: pool.clone(),
        asset: asset.clone(),
    });
    let bytes = preimage
        .to_xdr(Limits::none())
        .map_err(|e| anyhow!("encoding revoke id: {e}"))?;
    Ok(Sha256::digest(&bytes).into())
}

/// Allow trust / set trustline flags: when revoking authorisation pulls the trustor's shares out
/// of pools, each pool pays out into claimable balances (CAP-38), or burns an asset whose issuer
/// is the trustor. Matches created balances to pools by re-deriving their ids, as upstream.
fn revoked_trustline_events(
    x: &mut Extractor,
    tx: &LedgerTx<'_>,
    i: usize,
) -> Result<Vec<TokenTransferEvent>> {
    let changes = tx.operation_changes(i)?;
    let pools = pool_deltas(&changes);
    if pools.is_empty() {
        return Ok(Vec::new());
    }
    let created = claimable_balances(tx, i, ChangeKind::Created)?;
    if created.is_empty() {
        return Ok(Vec::new());
    }
    let by_id: HashMap<[u8; 32], &ClaimableBalanceEntry> = created
        .iter()
        .map(|cb| {
            let ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(h)) = &cb.balance_id;
            (*h, cb)
        })
        .collect();
    let source = AccountId(PublicKey::PublicKeyTypeEd25519(tx.source_key()));
    let mut events = Vec::new();
    for lp in &pools {
        let mut from_pool = Vec::new();
        for asset in [&lp.asset_a, &lp.asset_b] {
            let id = revocation_balance_id(&source, tx.seq_num(), i as u32, &lp.id, asset)?;
            if let Some(cb) = by_id.get(&id) {
                from_pool.push(*cb);
            }
        }
        let pool = pool_strkey(&lp.id);
        match from_pool.as_slice() {
            [] => {}
            [cb] => {
                // Upstream compares the assets with Go `==` on structs holding pointers, which
                // only matches for XLM; we compare values, so the burnt asset is always the one
                // without a balance.
                let (burnt, amount) = if cb.asset == lp.asset_a {
                    (&lp.asset_b, lp.amount_b)
                } else {
                    (&lp.asset_a, lp.amount_a)
                };
                let to = claimable_balance_strkey(&cb.balance_id);
                events.push(x.mint_burn_or_transfer(
                    tx,
                    Some(i),
                    &cb.asset,
                    &pool,
                    &to,
                    cb.amount.to_string(),
                    false,
                )?);
                let meta = x.meta_for_asset(tx, Some(i), burnt);
                events.push(burn(
                    meta,
                    pool.clone(),
                    amount.to_string(),
                    Some(proto_asset(burnt)),
                ));
            }
            [a, b] => {
                for cb in [a, b] {
                    let to = claimable_balance_strkey(&cb.balance_id);
                    events.push(x.mint_burn_or_transfer(
                        tx,
                        Some(i),
                        &cb.asset,
                        &pool,
                        &to,
                        cb.amount.to_string(),
                        false,
                    )?);
                }
            }
            _ => bail!("more than two claimable balances created from {pool}"),
        }
    }
    Ok(events)
}

/// Before protocol 8 some operations moved XLM without saying so in their results (CAP-67
/// "retroactively emitting events"): compare the operation source's XLM change in the ledger
/// with the events and emit a mint (first) or burn (last) for the difference.
fn reconcile_xlm(
    x: &mut Extractor,
    tx: &LedgerTx<'_>,
    i: usize,
    source: &MuxedAccount,
    mut events: Vec<TokenTransferEvent>,
) -> Result<Vec<TokenTransferEvent>> {
    let account = muxed_base_strkey(source);
    let key = BalanceKey {
        holder: account.clone(),
        asset: "native".to_string(),
    };
    let from_changes = change_deltas(&tx.operation_changes(i)?)
        .get(&key)
        .copied()
        .unwrap_or(0);
    let from_events = event_deltas(&events)?.get(&key).copied().unwrap_or(0);
    let diff = from_changes - from_events;
    if diff == 0 {
        return Ok(events);
    }
    let meta = x.meta_for_asset(tx, Some(i), &Asset::Native);
    let xlm = Some(proto_asset(&Asset::Native));
    if diff > 0 {
        events.insert(0, mint(meta, account, diff.to_string(), xlm));
    } else {
        events.push(burn(meta, account, (-diff).to_string(), xlm));
    }
    Ok(events)
}

/// Whether an event is a transfer (used by contract events).
pub(crate) fn as_transfer(
    event: &TokenTransferEvent,
) -> Option<&flowctl_proto::token_transfer::Transfer> {
    match event.event.as_ref()? {
        Event::Transfer(t) => Some(t),
        _ => None,
    }
}
