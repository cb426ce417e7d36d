//! Builds one protocol-23 `LedgerCloseMeta` (V2, transaction meta V4) from planned
//! transactions, applying them to the world the way stellar-core does: every fee first, then
//! each transaction, then the Soroban refunds. The expected events are derived from the plans
//! alongside, by the upstream processor's rules.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountMergeResult, ClaimAtom, ClaimOfferAtom, ClawbackOp, ClawbackResult,
    ContractDataDurability, ContractEvent, ContractEventBody, ContractEventType, ContractEventV0,
    ContractId, CreateAccountOp, CreateAccountResult, DecoratedSignature, DependentTxCluster,
    ExtensionPoint, FeeBumpTransaction, FeeBumpTransactionEnvelope, FeeBumpTransactionExt,
    FeeBumpTransactionInnerTx, GeneralizedTransactionSet, Hash, HostFunction,
    InnerTransactionResult, InnerTransactionResultExt, InnerTransactionResultPair,
    InnerTransactionResultResult, Int128Parts, InvokeContractArgs, InvokeHostFunctionOp,
    InvokeHostFunctionResult, LedgerCloseMeta, LedgerCloseMetaExt, LedgerCloseMetaV2,
    LedgerEntryChange, LedgerEntryChanges, LedgerFootprint, LedgerHeader, LedgerHeaderExt,
    LedgerHeaderHistoryEntry, LedgerHeaderHistoryEntryExt, LedgerKey, LedgerKeyAccount,
    LedgerKeyContractData, Limits, Memo, MuxedAccount, MuxedAccountMed25519, MuxedEd25519Account,
    Operation, OperationBody, OperationMetaV2, OperationResult, OperationResultTr,
    ParallelTxExecutionStage, ParallelTxsComponent, PathPaymentStrictReceiveOp,
    PathPaymentStrictReceiveResult, PathPaymentStrictReceiveResultSuccess, PathPaymentStrictSendOp,
    PathPaymentStrictSendResult, PathPaymentStrictSendResultSuccess, PaymentOp, PaymentResult,
    Preconditions, ScAddress, ScMap, ScMapEntry, ScString, ScSymbol, ScVal, SequenceNumber,
    Signature, SignatureHint, SimplePaymentResult, SorobanAuthorizationEntry,
    SorobanAuthorizedFunction, SorobanAuthorizedInvocation, SorobanCredentials, SorobanResources,
    SorobanTransactionData, SorobanTransactionDataExt, SorobanTransactionMetaExt,
    SorobanTransactionMetaExtV1, SorobanTransactionMetaV2, StellarValue, StellarValueExt,
    TimeBounds, TimePoint, Transaction, TransactionEnvelope, TransactionEvent,
    TransactionEventStage, TransactionExt, TransactionMeta, TransactionMetaV4, TransactionPhase,
    TransactionResult, TransactionResultExt, TransactionResultMetaV1, TransactionResultPair,
    TransactionResultResult, TransactionResultSet, TransactionSetV1, TransactionV1Envelope,
    TxSetComponent, TxSetComponentTxsMaybeDiscountedFee, Uint256, WriteXdr,
};

use crate::expected::{Event, EventAsset, Kind, MuxedInfo};
use crate::plan::{Hop, MemoPlan, OpPlan, SacCall, TxPlan};
use crate::rng::SplitMix64;
use crate::world::{account_id, Tok, World};

/// The protocol the generated ledgers claim.
pub const PROTOCOL: u32 = 23;
/// Base fee per operation (stroops) and base reserve, as on mainnet.
const BASE_FEE: i64 = 100;
const BASE_RESERVE: u32 = 5_000_000;

/// Counts of what was generated, for the summary and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub ledgers: u64,
    pub transactions: u64,
    pub failed: u64,
    pub soroban: u64,
    pub refunds: u64,
    /// Transactions whose fee another account paid through a fee-bump envelope.
    pub fee_bumps: u64,
    /// Successful operations by kind.
    pub ops: BTreeMap<&'static str, u64>,
    /// Expected events by kind.
    pub events: BTreeMap<&'static str, u64>,
}

/// Chain state carried from one ledger to the next.
#[derive(Debug, Clone)]
pub struct Chain {
    pub prev_hash: [u8; 32],
    pub close_time: u64,
    pub fee_pool: i64,
    pub total_coins: i64,
    pub id_pool: u64,
    pub soroban_state_bytes: u64,
}

/// One generated ledger.
#[derive(Debug)]
pub struct Ledger {
    pub meta: LedgerCloseMeta,
    pub events: Vec<Event>,
}

/// Why an operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Underfunded,
    NoTrust,
}

/// A planned transaction with its envelope.
struct Built {
    plan: TxPlan,
    envelope: TransactionEnvelope,
    hash: [u8; 32],
    /// Hash of the inner transaction of a fee bump.
    inner_hash: Option<[u8; 32]>,
    /// Fee taken in fee processing (before any refund).
    fee: i64,
}

/// Generates ledger `seq` from `plans` (classic ones first, then Soroban ones, in apply order).
pub fn build_ledger(
    rng: &mut SplitMix64,
    world: &mut World,
    chain: &mut Chain,
    stats: &mut Stats,
    seq: u32,
    plans: Vec<TxPlan>,
    classic_base_fee: Option<i64>,
) -> Result<Ledger> {
    chain.close_time += 5 + u64::from(rng.chance(200));
    let close_time = chain.close_time;
    let classic_fee_per_op = classic_base_fee.unwrap_or(BASE_FEE);
    let mut built = Vec::with_capacity(plans.len());
    for plan in plans {
        let envelope = envelope(rng, world, &plan, close_time)?;
        let hash = envelope
            .hash(world.network_id)
            .context("hashing a transaction")?;
        let bump = i64::from(plan.fee_source.is_some());
        let fee = match plan.soroban {
            // A fee bump counts as one more operation for the inclusion fee.
            Some(s) => s.resource_fee + BASE_FEE * (1 + bump),
            None => (plan.ops.len() as i64 + bump) * classic_fee_per_op,
        };
        let inner_hash = match &envelope {
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                Some(
                    inner
                        .hash(world.network_id)
                        .context("hashing a transaction")?,
                )
            }
            _ => None,
        };
        built.push(Built {
            plan,
            envelope,
            hash,
            inner_hash,
            fee,
        });
    }

    // Where each transaction sits, for event metadata.
    let contexts: Vec<TxContext> = built
        .iter()
        .enumerate()
        .map(|(i, tx)| TxContext {
            seq,
            close_time,
            tx_index: i as u32 + 1,
            hash: tx.hash,
        })
        .collect();

    // Fee processing: every transaction's fee is charged before any is applied.
    let mut fee_changes = Vec::with_capacity(built.len());
    let mut events = Vec::new();
    for (i, tx) in built.iter().enumerate() {
        // The fee-bump payer when there is one, else the source.
        let src = tx.plan.fee_source.unwrap_or(tx.plan.source);
        let before = world.account_entry(src);
        world.accounts[src].balance -= tx.fee;
        world.accounts[src].last_modified = seq;
        fee_changes.push(vec![
            LedgerEntryChange::State(before),
            LedgerEntryChange::Updated(world.account_entry(src)),
        ]);
        events.push(fee_event_expected(world, &contexts[i], src, tx.fee));
    }

    // Apply.
    let mut applied = Vec::with_capacity(built.len());
    for (i, tx) in built.iter().enumerate() {
        applied.push(apply_tx(world, stats, &contexts[i], &tx.plan, &mut events)?);
    }

    // Post-apply fee processing: Soroban refunds, whose events come after all others (P23+).
    let mut tx_processing = Vec::with_capacity(built.len());
    let mut results = Vec::with_capacity(built.len());
    for (i, ((tx, fees), (op_results, success, mut meta))) in
        built.iter().zip(fee_changes).zip(applied).enumerate()
    {
        let src = tx.plan.fee_source.unwrap_or(tx.plan.source);
        let refund = tx.plan.soroban.map_or(0, |s| s.refund);
        let mut post = Vec::new();
        let fee_event = |amount: i64, stage: TransactionEventStage| TransactionEvent {
            stage,
            event: sac_event(
                &world.native_sac,
                vec![
                    symbol("fee"),
                    ScVal::Address(ScAddress::Account(account_id(&world.accounts[src].key))),
                ],
                amount,
            ),
        };
        let mut tx_events = vec![fee_event(tx.fee, TransactionEventStage::BeforeAllTxs)];
        if refund > 0 {
            tx_events.push(fee_event(-refund, TransactionEventStage::AfterAllTxs));
            let before = world.account_entry(src);
            world.accounts[src].balance += refund;
            world.accounts[src].last_modified = seq;
            post.push(LedgerEntryChange::State(before));
            post.push(LedgerEntryChange::Updated(world.account_entry(src)));
            stats.refunds += 1;
            events.push(fee_event_expected(world, &contexts[i], src, -refund));
        }
        meta.events = tx_events.try_into().context("transaction events")?;
        let charged = tx.fee - refund;
        chain.fee_pool += charged;
        let result = TransactionResultPair {
            transaction_hash: Hash(tx.hash),
            result: TransactionResult {
                fee_charged: charged,
                result: match (&tx.inner_hash, success) {
                    (None, true) => TransactionResultResult::TxSuccess(op_results.try_into()?),
                    (None, false) => TransactionResultResult::TxFailed(op_results.try_into()?),
                    (Some(inner), _) => {
                        let inner = InnerTransactionResultPair {
                            transaction_hash: Hash(*inner),
                            result: InnerTransactionResult {
                                fee_charged: 0,
                                result: if success {
                                    InnerTransactionResultResult::TxSuccess(op_results.try_into()?)
                                } else {
                                    InnerTransactionResultResult::TxFailed(op_results.try_into()?)
                                },
                                ext: InnerTransactionResultExt::V0,
                            },
                        };
                        if success {
                            TransactionResultResult::TxFeeBumpInnerSuccess(inner)
                        } else {
                            TransactionResultResult::TxFeeBumpInnerFailed(inner)
                        }
                    }
                },
                ext: TransactionResultExt::V0,
            },
        };
        results.push(result.clone());
        tx_processing.push(TransactionResultMetaV1 {
            ext: ExtensionPoint::V0,
            result,
            fee_processing: LedgerEntryChanges(fees.try_into()?),
            tx_apply_processing: TransactionMeta::V4(meta),
            post_tx_apply_fee_processing: LedgerEntryChanges(post.try_into()?),
        });
    }

    // Accounts created in this ledger can be merged from the next one on.
    for tx in &built {
        for op in &tx.plan.ops {
            if let OpPlan::CreateAccount { new, .. } = op {
                if world.accounts[*new].alive {
                    world.fresh.push(*new);
                }
            }
        }
    }

    let tx_set = tx_set(world, &built, chain.prev_hash, classic_base_fee)?;
    let tx_set_hash = sha256_xdr(&tx_set)?;
    let result_set_hash = sha256_xdr(&TransactionResultSet {
        results: results.try_into()?,
    })?;
    chain.id_pool += rng.below(50);
    chain.soroban_state_bytes += rng.below(20_000);
    let header = LedgerHeader {
        ledger_version: PROTOCOL,
        previous_ledger_hash: Hash(chain.prev_hash),
        scp_value: StellarValue {
            tx_set_hash: Hash(tx_set_hash),
            close_time: TimePoint(close_time),
            upgrades: Default::default(),
            ext: StellarValueExt::Basic,
        },
        tx_set_result_hash: Hash(result_set_hash),
        bucket_list_hash: Hash(rng.bytes32()),
        ledger_seq: seq,
        total_coins: chain.total_coins,
        fee_pool: chain.fee_pool,
        inflation_seq: 0,
        id_pool: chain.id_pool,
        base_fee: BASE_FEE as u32,
        base_reserve: BASE_RESERVE,
        max_tx_set_size: 1_000,
        skip_list: [Hash([0; 32]), Hash([0; 32]), Hash([0; 32]), Hash([0; 32])],
        ext: LedgerHeaderExt::V0,
    };
    let header_hash = sha256_xdr(&header)?;
    chain.prev_hash = header_hash;
    stats.ledgers += 1;
    for e in &events {
        *stats.events.entry(e.kind.name()).or_default() += 1;
    }
    let meta = LedgerCloseMeta::V2(LedgerCloseMetaV2 {
        ext: LedgerCloseMetaExt::V0,
        ledger_header: LedgerHeaderHistoryEntry {
            hash: Hash(header_hash),
            header,
            ext: LedgerHeaderHistoryEntryExt::V0,
        },
        tx_set,
        tx_processing: tx_processing.try_into()?,
        upgrades_processing: Default::default(),
        scp_info: Default::default(),
        total_byte_size_of_live_soroban_state: chain.soroban_state_bytes,
        evicted_keys: Default::default(),
    });
    Ok(Ledger { meta, events })
}

/// Where a transaction sits, for event metadata.
struct TxContext {
    seq: u32,
    close_time: u64,
    tx_index: u32,
    hash: [u8; 32],
}

/// One operation's effects on the books: (account, token, signed amount).
type Deltas = Vec<(usize, Tok, i64)>;

/// Applies one transaction: bumps the sequence number, checks every operation, and when all
/// succeed applies them and records their changes and expected events. Returns the operation
/// results, whether the transaction succeeded, and its meta (transaction events are added by
/// the caller).
/// The expected fee event (a charge, or a refund when `amount` is negative) of account `src`
/// for the transaction `ctx`.
fn fee_event_expected(world: &World, ctx: &TxContext, src: usize, amount: i64) -> Event {
    Event {
        ledger: ctx.seq,
        closed_at: ctx.close_time,
        tx_hash: ctx.hash,
        tx_index: ctx.tx_index,
        op_index: None,
        contract: world.native_sac_strkey.clone(),
        muxed: None,
        kind: Kind::Fee {
            from: world.accounts[src].strkey.clone(),
        },
        asset: EventAsset::Native,
        amount,
    }
}

fn apply_tx(
    world: &mut World,
    stats: &mut Stats,
    ctx: &TxContext,
    plan: &TxPlan,
    events: &mut Vec<Event>,
) -> Result<(Vec<OperationResult>, bool, TransactionMetaV4)> {
    let src = plan.source;
    stats.transactions += 1;
    if plan.soroban.is_some() {
        stats.soroban += 1;
    }
    if plan.fee_source.is_some() {
        stats.fee_bumps += 1;
    }
    let before = world.account_entry(src);
    world.accounts[src].seq = plan.seq;
    world.accounts[src].last_modified = ctx.seq;
    let tx_changes_before = vec![
        LedgerEntryChange::State(before),
        LedgerEntryChange::Updated(world.account_entry(src)),
    ];

    // Check every operation against a shadow of the balances first: a transaction applies all
    // of its operations or none.
    let mut shadow: BTreeMap<(usize, Tok), i64> = BTreeMap::new();
    let mut failures = Vec::with_capacity(plan.ops.len());
    for op in &plan.ops {
        let deltas = op_deltas(world, src, op);
        failures.push(check(world, &mut shadow, &deltas));
    }
    let success = failures.iter().all(Option::is_none);
    let mut results = Vec::with_capacity(plan.ops.len());
    let mut operations = Vec::new();
    if success {
        for (i, op) in plan.ops.iter().enumerate() {
            let (result, changes, contract_events) =
                apply_op(world, ctx, src, i as u32, plan, op, events)?;
            *stats.ops.entry(op.name()).or_default() += 1;
            results.push(result);
            operations.push(OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: LedgerEntryChanges(changes.try_into()?),
                events: contract_events.try_into()?,
            });
        }
    } else {
        stats.failed += 1;
        for (op, failure) in plan.ops.iter().zip(&failures) {
            results.push(match failure {
                Some(f) => failed_result(op, *f),
                None => success_result(world, src, op),
            });
        }
    }
    let soroban_meta = plan.soroban.map(|s| SorobanTransactionMetaV2 {
        ext: SorobanTransactionMetaExt::V1(SorobanTransactionMetaExtV1 {
            ext: ExtensionPoint::V0,
            total_non_refundable_resource_fee_charged: s.resource_fee / 2,
            total_refundable_resource_fee_charged: s.resource_fee - s.resource_fee / 2 - s.refund,
            rent_fee_charged: 0,
        }),
        return_value: Some(ScVal::Void),
    });
    Ok((
        results,
        success,
        TransactionMetaV4 {
            ext: ExtensionPoint::V0,
            tx_changes_before: LedgerEntryChanges(tx_changes_before.try_into()?),
            operations: operations.try_into()?,
            tx_changes_after: Default::default(),
            soroban_meta,
            events: Default::default(),
            diagnostic_events: Default::default(),
        },
    ))
}

/// The balance movements of an operation (issuers' own assets are created and destroyed, so
/// their side is listed but never applied).
fn op_deltas(world: &World, src: usize, op: &OpPlan) -> Deltas {
    match op {
        OpPlan::Payment {
            dst, tok, amount, ..
        } => vec![(src, *tok, -amount), (*dst, *tok, *amount)],
        OpPlan::CreateAccount { amount, .. } => vec![(src, Tok::Native, -amount)],
        OpPlan::PathPayment {
            dst,
            send,
            send_amount,
            hops,
            ..
        } => {
            let mut d = vec![(src, *send, -send_amount)];
            for h in hops {
                d.push((h.seller, h.bought, h.bought_amount));
                d.push((h.seller, h.sold, -h.sold_amount));
            }
            if let Some(last) = hops.last() {
                d.push((*dst, last.sold, last.sold_amount));
            }
            d
        }
        OpPlan::Merge { dst } => {
            let all = world.accounts[src].balance;
            vec![(src, Tok::Native, -all), (*dst, Tok::Native, all)]
        }
        OpPlan::Clawback {
            from,
            asset,
            amount,
        } => vec![(*from, Tok::Issued(*asset), -amount)],
        OpPlan::Sac { call, tok, amount } => match *call {
            SacCall::Transfer { from, to, .. } => vec![(from, *tok, -amount), (to, *tok, *amount)],
            SacCall::Mint { to } => vec![(to, *tok, *amount)],
            SacCall::Burn { from } => vec![(from, *tok, -amount)],
        },
    }
}

/// Checks `deltas` against the shadow balances and records them there.
fn check(
    world: &World,
    shadow: &mut BTreeMap<(usize, Tok), i64>,
    deltas: &Deltas,
) -> Option<Failure> {
    for &(acct, tok, delta) in deltas {
        if world.is_issuer(acct, tok) {
            continue;
        }
        if !world.can_hold(acct, tok) {
            return Some(if delta > 0 {
                Failure::NoTrust
            } else {
                Failure::Underfunded
            });
        }
        let bal = shadow
            .entry((acct, tok))
            .or_insert_with(|| world.balance(acct, tok));
        match bal.checked_add(delta) {
            Some(new) if new >= 0 => *bal = new,
            _ => return Some(Failure::Underfunded),
        }
    }
    None
}

/// Applies `deltas` to the world and returns the entry changes (a `STATE` and an `UPDATED` per
/// entry touched, in the order first touched).
fn apply_deltas(world: &mut World, deltas: &Deltas, ledger: u32) -> Vec<LedgerEntryChange> {
    let mut order: Vec<(usize, Tok)> = Vec::new();
    let mut sums: BTreeMap<(usize, Tok), i64> = BTreeMap::new();
    for &(acct, tok, delta) in deltas {
        if world.is_issuer(acct, tok) {
            continue;
        }
        if !sums.contains_key(&(acct, tok)) {
            order.push((acct, tok));
        }
        *sums.entry((acct, tok)).or_default() += delta;
    }
    let mut changes = Vec::with_capacity(order.len() * 2);
    for (acct, tok) in order {
        let delta = sums[&(acct, tok)];
        let entry = |w: &World| match tok {
            Tok::Native => w.account_entry(acct),
            Tok::Issued(a) => w.trustline_entry(acct, a),
        };
        changes.push(LedgerEntryChange::State(entry(world)));
        let account = &mut world.accounts[acct];
        match tok {
            Tok::Native => account.balance += delta,
            Tok::Issued(a) => *account.lines.entry(a).or_default() += delta,
        }
        account.last_modified = ledger;
        changes.push(LedgerEntryChange::Updated(entry(world)));
    }
    changes
}

/// The operation an expected event belongs to.
struct OpSite<'a> {
    tx: &'a TxContext,
    op_index: u32,
    memo: &'a MemoPlan,
    world: &'a World,
}

/// Upstream's `mintOrBurnOrTransferEvent`: a movement from an asset's issuer is a mint, to it a
/// burn, between two other parties (or issuer to itself) a transfer. Mints and transfers to an
/// account carry the destination's mux id, else the transaction memo, when `with_mux`.
fn movement(
    site: &OpSite<'_>,
    from: usize,
    to: usize,
    to_mux: Option<u64>,
    tok: Tok,
    amount: i64,
    with_mux: bool,
) -> Event {
    let (world, memo, ctx, op_index) = (site.world, site.memo, site.tx, site.op_index);
    let from_issuer = world.is_issuer(from, tok);
    let to_issuer = world.is_issuer(to, tok);
    let from_g = world.accounts[from].strkey.clone();
    let to_g = world.accounts[to].strkey.clone();
    let mux = || match (to_mux, memo) {
        (Some(id), _) => Some(MuxedInfo::Id(id)),
        (None, MemoPlan::Text(t)) => Some(MuxedInfo::Text(t.clone())),
        (None, MemoPlan::Id(id)) => Some(MuxedInfo::Id(*id)),
        (None, MemoPlan::None) => None,
    };
    let (kind, muxed) = if from_issuer && to_issuer {
        (
            Kind::Transfer {
                from: from_g,
                to: to_g,
            },
            None,
        )
    } else if from_issuer {
        (Kind::Mint { to: to_g }, if with_mux { mux() } else { None })
    } else if to_issuer {
        (Kind::Burn { from: from_g }, None)
    } else {
        (
            Kind::Transfer {
                from: from_g,
                to: to_g,
            },
            if with_mux { mux() } else { None },
        )
    };
    Event {
        ledger: ctx.seq,
        closed_at: ctx.close_time,
        tx_hash: ctx.hash,
        tx_index: ctx.tx_index,
        op_index: Some(op_index + 1),
        contract: world.sac_strkey(tok).to_string(),
        muxed,
        kind,
        asset: world.event_asset(tok),
        amount,
    }
}

/// Applies one checked operation: its ledger entry changes, result, contract events, and the
/// token transfer events it must yield.
fn apply_op(
    world: &mut World,
    ctx: &TxContext,
    src: usize,
    op_index: u32,
    plan: &TxPlan,
    op: &OpPlan,
    events: &mut Vec<Event>,
) -> Result<(OperationResult, Vec<LedgerEntryChange>, Vec<ContractEvent>)> {
    let deltas = op_deltas(world, src, op);
    let result = success_result(world, src, op);
    // Expected events are computed against the world before the operation (issuer checks do
    // not depend on balances).
    let mut expected: Vec<Event> = Vec::new();
    let mut contract_events = Vec::new();
    {
        let w: &World = world;
        let site = OpSite {
            tx: ctx,
            op_index,
            memo: &plan.memo,
            world: w,
        };
        match op {
            OpPlan::Payment {
                dst,
                mux,
                tok,
                amount,
            } => expected.push(movement(&site, src, *dst, *mux, *tok, *amount, true)),
            OpPlan::CreateAccount { new, amount } => {
                expected.push(movement(&site, src, *new, None, Tok::Native, *amount, true))
            }
            OpPlan::PathPayment { dst, mux, hops, .. } => {
                for h in hops {
                    expected.push(movement(
                        &site,
                        h.seller,
                        src,
                        None,
                        h.sold,
                        h.sold_amount,
                        false,
                    ));
                    expected.push(movement(
                        &site,
                        src,
                        h.seller,
                        None,
                        h.bought,
                        h.bought_amount,
                        false,
                    ));
                }
                if let Some(last) = hops.last() {
                    expected.push(movement(
                        &site,
                        src,
                        *dst,
                        *mux,
                        last.sold,
                        last.sold_amount,
                        true,
                    ));
                }
            }
            OpPlan::Merge { dst } => {
                let all = w.accounts[src].balance;
                if all > 0 {
                    expected.push(movement(&site, src, *dst, None, Tok::Native, all, true));
                }
            }
            OpPlan::Clawback {
                from,
                asset,
                amount,
            } => {
                let tok = Tok::Issued(*asset);
                expected.push(Event {
                    ledger: ctx.seq,
                    closed_at: ctx.close_time,
                    tx_hash: ctx.hash,
                    tx_index: ctx.tx_index,
                    op_index: Some(op_index + 1),
                    contract: w.sac_strkey(tok).to_string(),
                    muxed: None,
                    kind: Kind::Clawback {
                        from: w.accounts[*from].strkey.clone(),
                    },
                    asset: w.event_asset(tok),
                    amount: *amount,
                });
            }
            OpPlan::Sac { call, tok, amount } => {
                // CAP-67 (P23) SAC events: transfer [from, to, asset], mint [to, asset],
                // burn [from, asset]; the data is the i128 amount.
                let addr =
                    |a: usize| ScVal::Address(ScAddress::Account(account_id(&w.accounts[a].key)));
                let name = ScVal::String(ScString(w.sep11(*tok).try_into()?));
                let mut to_mux = None;
                let (topics, kind) = match *call {
                    SacCall::Transfer { from, to, mux } => {
                        to_mux = mux;
                        (
                            vec![symbol("transfer"), addr(from), addr(to), name],
                            Kind::Transfer {
                                from: w.accounts[from].strkey.clone(),
                                to: w.accounts[to].strkey.clone(),
                            },
                        )
                    }
                    SacCall::Mint { to } => (
                        vec![symbol("mint"), addr(to), name],
                        Kind::Mint {
                            to: w.accounts[to].strkey.clone(),
                        },
                    ),
                    SacCall::Burn { from } => (
                        vec![symbol("burn"), addr(from), name],
                        Kind::Burn {
                            from: w.accounts[from].strkey.clone(),
                        },
                    ),
                };
                // Paid to an `M…` address, the topic keeps the `G…` account and the data becomes
                // the map {amount, to_muxed_id} (CAP-67); upstream reads the id from there.
                contract_events.push(sac_event_muxed(&w.sac(*tok), topics, *amount, to_mux));
                expected.push(Event {
                    ledger: ctx.seq,
                    closed_at: ctx.close_time,
                    tx_hash: ctx.hash,
                    tx_index: ctx.tx_index,
                    op_index: Some(op_index + 1),
                    contract: w.sac_strkey(*tok).to_string(),
                    muxed: to_mux.map(MuxedInfo::Id),
                    kind,
                    asset: w.event_asset(*tok),
                    amount: *amount,
                });
            }
        }
    }
    // Classic operations also carry their CAP-67 events in protocol 23 (stellar-core with
    // EMIT_CLASSIC_EVENTS). Upstream's default processor derives classic events from the
    // operation and its result and must ignore these; path payments carry none here.
    if matches!(
        op,
        OpPlan::Payment { .. }
            | OpPlan::CreateAccount { .. }
            | OpPlan::Merge { .. }
            | OpPlan::Clawback { .. }
    ) {
        for e in &expected {
            let tok = match op {
                OpPlan::Payment { tok, .. } => *tok,
                OpPlan::Clawback { asset, .. } => Tok::Issued(*asset),
                _ => Tok::Native,
            };
            contract_events.push(unified_event(world, e, tok)?);
        }
    }
    let mut changes = apply_deltas(world, &deltas, ctx.seq);
    match op {
        OpPlan::CreateAccount { new, amount } => {
            let account = &mut world.accounts[*new];
            account.balance = *amount;
            account.alive = true;
            account.last_modified = ctx.seq;
            changes.push(LedgerEntryChange::Created(world.account_entry(*new)));
        }
        OpPlan::Merge { .. } => {
            // apply_deltas emptied the account; it is removed rather than updated.
            changes.retain(|c| {
                !matches!(c, LedgerEntryChange::Updated(e)
                    if matches!(&e.data, stellar_xdr::LedgerEntryData::Account(a)
                        if a.account_id == account_id(&world.accounts[src].key)))
            });
            changes.insert(
                1,
                LedgerEntryChange::Removed(LedgerKey::Account(LedgerKeyAccount {
                    account_id: account_id(&world.accounts[src].key),
                })),
            );
            world.accounts[src].alive = false;
        }
        _ => {}
    }
    events.extend(expected);
    Ok((result, changes, contract_events))
}

fn success_result(world: &World, src: usize, op: &OpPlan) -> OperationResult {
    let tr = match op {
        OpPlan::Payment { .. } => OperationResultTr::Payment(PaymentResult::Success),
        OpPlan::CreateAccount { .. } => {
            OperationResultTr::CreateAccount(CreateAccountResult::Success)
        }
        OpPlan::PathPayment {
            strict_send,
            dst,
            hops,
            ..
        } => {
            let offers: Vec<ClaimAtom> = hops.iter().map(|h| claim_atom(world, h)).collect();
            let last = hops.last().map_or(
                SimplePaymentResult {
                    destination: account_id(&world.accounts[*dst].key),
                    asset: stellar_xdr::Asset::Native,
                    amount: 0,
                },
                |h| SimplePaymentResult {
                    destination: account_id(&world.accounts[*dst].key),
                    asset: world.asset(h.sold),
                    amount: h.sold_amount,
                },
            );
            let offers = offers.try_into().unwrap_or_default();
            if *strict_send {
                OperationResultTr::PathPaymentStrictSend(PathPaymentStrictSendResult::Success(
                    PathPaymentStrictSendResultSuccess { offers, last },
                ))
            } else {
                OperationResultTr::PathPaymentStrictReceive(
                    PathPaymentStrictReceiveResult::Success(
                        PathPaymentStrictReceiveResultSuccess { offers, last },
                    ),
                )
            }
        }
        OpPlan::Merge { .. } => OperationResultTr::AccountMerge(AccountMergeResult::Success(
            world.accounts[src].balance,
        )),
        OpPlan::Clawback { .. } => OperationResultTr::Clawback(ClawbackResult::Success),
        OpPlan::Sac { .. } => OperationResultTr::InvokeHostFunction(
            InvokeHostFunctionResult::Success(Hash(Sha256::digest(b"void").into())),
        ),
    };
    OperationResult::OpInner(tr)
}

fn failed_result(op: &OpPlan, failure: Failure) -> OperationResult {
    let tr = match (op, failure) {
        (OpPlan::Payment { .. }, Failure::NoTrust) => {
            OperationResultTr::Payment(PaymentResult::NoTrust)
        }
        (OpPlan::Payment { .. }, Failure::Underfunded) => {
            OperationResultTr::Payment(PaymentResult::Underfunded)
        }
        (OpPlan::CreateAccount { .. }, _) => {
            OperationResultTr::CreateAccount(CreateAccountResult::Underfunded)
        }
        (
            OpPlan::PathPayment {
                strict_send: true, ..
            },
            f,
        ) => OperationResultTr::PathPaymentStrictSend(if f == Failure::NoTrust {
            PathPaymentStrictSendResult::NoTrust
        } else {
            PathPaymentStrictSendResult::Underfunded
        }),
        (OpPlan::PathPayment { .. }, f) => {
            OperationResultTr::PathPaymentStrictReceive(if f == Failure::NoTrust {
                PathPaymentStrictReceiveResult::NoTrust
            } else {
                PathPaymentStrictReceiveResult::Underfunded
            })
        }
        (OpPlan::Merge { .. }, _) => OperationResultTr::AccountMerge(AccountMergeResult::NoAccount),
        (OpPlan::Clawback { .. }, _) => OperationResultTr::Clawback(ClawbackResult::Underfunded),
        (OpPlan::Sac { .. }, _) => {
            OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Trapped)
        }
    };
    OperationResult::OpInner(tr)
}

fn claim_atom(world: &World, h: &Hop) -> ClaimAtom {
    ClaimAtom::OrderBook(ClaimOfferAtom {
        seller_id: account_id(&world.accounts[h.seller].key),
        offer_id: h.offer_id,
        asset_sold: world.asset(h.sold),
        amount_sold: h.sold_amount,
        asset_bought: world.asset(h.bought),
        amount_bought: h.bought_amount,
    })
}

/// The CAP-67 event a classic operation emits for a movement (the same parties and amount as the
/// token transfer event, the mux id or memo in the data map).
fn unified_event(world: &World, e: &Event, tok: Tok) -> Result<ContractEvent> {
    let addr = |g: &str| -> Result<ScVal> {
        let id: stellar_xdr::AccountId = g.parse().context("parsing a generated G address")?;
        Ok(ScVal::Address(ScAddress::Account(id)))
    };
    let name = ScVal::String(ScString(world.sep11(tok).try_into()?));
    let topics = match &e.kind {
        Kind::Transfer { from, to } => vec![symbol("transfer"), addr(from)?, addr(to)?, name],
        Kind::Mint { to } => vec![symbol("mint"), addr(to)?, name],
        Kind::Burn { from } => vec![symbol("burn"), addr(from)?, name],
        Kind::Clawback { from } => vec![symbol("clawback"), addr(from)?, name],
        Kind::Fee { from } => vec![symbol("fee"), addr(from)?],
    };
    let mut event = sac_event(&world.sac(tok), topics, e.amount);
    let to_muxed_id = match &e.muxed {
        Some(MuxedInfo::Id(id)) => Some(ScVal::U64(*id)),
        Some(MuxedInfo::Text(t)) => Some(ScVal::String(ScString(t.as_str().try_into()?))),
        None => None,
    };
    if let Some(val) = to_muxed_id {
        put_to_muxed_id(&mut event, val);
    }
    Ok(event)
}

/// A contract event of a Stellar Asset Contract whose data is the amount, or the map
/// `{amount, to_muxed_id}` when the destination was a muxed address.
fn sac_event_muxed(
    contract: &[u8; 32],
    topics: Vec<ScVal>,
    amount: i64,
    to_mux: Option<u64>,
) -> ContractEvent {
    let mut event = sac_event(contract, topics, amount);
    if let Some(id) = to_mux {
        put_to_muxed_id(&mut event, ScVal::U64(id));
    }
    event
}

/// Turns the event's data (the amount) into the CAP-67 map `{amount, to_muxed_id}`.
fn put_to_muxed_id(event: &mut ContractEvent, to_muxed_id: ScVal) {
    let ContractEventBody::V0(body) = &mut event.body;
    let entries = vec![
        ScMapEntry {
            key: symbol("amount"),
            val: body.data.clone(),
        },
        ScMapEntry {
            key: symbol("to_muxed_id"),
            val: to_muxed_id,
        },
    ];
    // Two entries are always within the map's length limit.
    body.data = ScVal::Map(entries.try_into().ok().map(ScMap));
}

/// A contract event of a Stellar Asset Contract with an i128 amount.
fn sac_event(contract: &[u8; 32], topics: Vec<ScVal>, amount: i64) -> ContractEvent {
    ContractEvent {
        ext: ExtensionPoint::V0,
        contract_id: Some(ContractId(Hash(*contract))),
        type_: ContractEventType::Contract,
        body: ContractEventBody::V0(ContractEventV0 {
            topics: topics.try_into().unwrap_or_default(),
            data: ScVal::I128(Int128Parts {
                hi: if amount < 0 { -1 } else { 0 },
                lo: amount as u64,
            }),
        }),
    }
}

fn symbol(s: &str) -> ScVal {
    // Only short literal names are passed here, which always fit a symbol.
    ScVal::Symbol(ScSymbol(s.try_into().unwrap_or_default()))
}

fn muxed(world: &World, acct: usize, mux: Option<u64>) -> MuxedAccount {
    let key = Uint256(world.accounts[acct].key);
    match mux {
        Some(id) => MuxedAccount::MuxedEd25519(MuxedAccountMed25519 { id, ed25519: key }),
        None => MuxedAccount::Ed25519(key),
    }
}

/// The signed envelope of a planned transaction.
fn envelope(
    rng: &mut SplitMix64,
    world: &World,
    plan: &TxPlan,
    close_time: u64,
) -> Result<TransactionEnvelope> {
    let src = plan.source;
    let mut operations = Vec::with_capacity(plan.ops.len());
    let mut ext = TransactionExt::V0;
    for op in &plan.ops {
        let body = match op {
            OpPlan::Payment {
                dst,
                mux,
                tok,
                amount,
            } => OperationBody::Payment(PaymentOp {
                destination: muxed(world, *dst, *mux),
                asset: world.asset(*tok),
                amount: *amount,
            }),
            OpPlan::CreateAccount { new, amount } => {
                OperationBody::CreateAccount(CreateAccountOp {
                    destination: account_id(&world.accounts[*new].key),
                    starting_balance: *amount,
                })
            }
            OpPlan::PathPayment {
                strict_send,
                dst,
                mux,
                send,
                send_amount,
                hops,
            } => {
                let path: Vec<stellar_xdr::Asset> = hops
                    .iter()
                    .take(hops.len().saturating_sub(1))
                    .map(|h| world.asset(h.sold))
                    .collect();
                let (dest, dest_amount) = hops
                    .last()
                    .map_or((Tok::Native, 0), |h| (h.sold, h.sold_amount));
                if *strict_send {
                    OperationBody::PathPaymentStrictSend(PathPaymentStrictSendOp {
                        send_asset: world.asset(*send),
                        send_amount: *send_amount,
                        destination: muxed(world, *dst, *mux),
                        dest_asset: world.asset(dest),
                        dest_min: (dest_amount - dest_amount / 100).max(1),
                        path: path.try_into()?,
                    })
                } else {
                    OperationBody::PathPaymentStrictReceive(PathPaymentStrictReceiveOp {
                        send_asset: world.asset(*send),
                        send_max: send_amount.saturating_add(send_amount / 100),
                        destination: muxed(world, *dst, *mux),
                        dest_asset: world.asset(dest),
                        dest_amount,
                        path: path.try_into()?,
                    })
                }
            }
            OpPlan::Merge { dst } => OperationBody::AccountMerge(muxed(world, *dst, None)),
            OpPlan::Clawback {
                from,
                asset,
                amount,
            } => OperationBody::Clawback(ClawbackOp {
                asset: world.assets[*asset].xdr.clone(),
                from: muxed(world, *from, None),
                amount: *amount,
            }),
            OpPlan::Sac { call, tok, amount } => {
                let (invoke, data) = sac_invocation(rng, world, *call, *tok, *amount, plan)?;
                ext = TransactionExt::V1(data);
                OperationBody::InvokeHostFunction(invoke)
            }
        };
        operations.push(Operation {
            source_account: None,
            body,
        });
    }
    let memo = match &plan.memo {
        MemoPlan::None => Memo::None,
        MemoPlan::Text(t) => Memo::Text(t.as_str().try_into()?),
        MemoPlan::Id(id) => Memo::Id(*id),
    };
    let key = world.accounts[src].key;
    let mut hint = [0u8; 4];
    hint.copy_from_slice(&key[28..]);
    let inner = TransactionV1Envelope {
        tx: Transaction {
            source_account: muxed(world, src, plan.source_mux),
            fee: plan.max_fee,
            seq_num: SequenceNumber(plan.seq),
            cond: Preconditions::Time(TimeBounds {
                min_time: TimePoint(0),
                max_time: TimePoint(close_time + 300),
            }),
            memo,
            operations: operations.try_into()?,
            ext,
        },
        signatures: vec![DecoratedSignature {
            hint: SignatureHint(hint),
            signature: Signature(rng.bytes64().to_vec().try_into()?),
        }]
        .try_into()?,
    };
    let Some(payer) = plan.fee_source else {
        return Ok(TransactionEnvelope::Tx(inner));
    };
    let payer_key = world.accounts[payer].key;
    hint.copy_from_slice(&payer_key[28..]);
    Ok(TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
        tx: FeeBumpTransaction {
            fee_source: MuxedAccount::Ed25519(Uint256(payer_key)),
            fee: i64::from(plan.max_fee) * 2 + 1_000,
            inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
            ext: FeeBumpTransactionExt::V0,
        },
        signatures: vec![DecoratedSignature {
            hint: SignatureHint(hint),
            signature: Signature(rng.bytes64().to_vec().try_into()?),
        }]
        .try_into()?,
    }))
}

/// The host function call and Soroban resources of a SAC invocation.
fn sac_invocation(
    rng: &mut SplitMix64,
    world: &World,
    call: SacCall,
    tok: Tok,
    amount: i64,
    plan: &TxPlan,
) -> Result<(InvokeHostFunctionOp, SorobanTransactionData)> {
    let addr = |a: usize| ScVal::Address(ScAddress::Account(account_id(&world.accounts[a].key)));
    let i128 = ScVal::I128(Int128Parts {
        hi: 0,
        lo: amount as u64,
    });
    let (name, args, touched) = match call {
        SacCall::Transfer { from, to, mux } => {
            let to_addr = match mux {
                Some(id) => ScVal::Address(ScAddress::MuxedAccount(MuxedEd25519Account {
                    id,
                    ed25519: Uint256(world.accounts[to].key),
                })),
                None => addr(to),
            };
            ("transfer", vec![addr(from), to_addr, i128], vec![from, to])
        }
        SacCall::Mint { to } => ("mint", vec![addr(to), i128], vec![to]),
        SacCall::Burn { from } => ("burn", vec![addr(from), i128], vec![from]),
    };
    let sac = ScAddress::Contract(ContractId(Hash(world.sac(tok))));
    let args = InvokeContractArgs {
        contract_address: sac.clone(),
        function_name: ScSymbol(name.try_into()?),
        args: args.try_into()?,
    };
    let invoke = InvokeHostFunctionOp {
        host_function: HostFunction::InvokeContract(args.clone()),
        auth: vec![SorobanAuthorizationEntry {
            credentials: SorobanCredentials::SourceAccount,
            root_invocation: SorobanAuthorizedInvocation {
                function: SorobanAuthorizedFunction::ContractFn(args),
                sub_invocations: Default::default(),
            },
        }]
        .try_into()?,
    };
    let instance = LedgerKey::ContractData(LedgerKeyContractData {
        contract: sac,
        key: ScVal::LedgerKeyContractInstance,
        durability: ContractDataDurability::Persistent,
    });
    let read_write: Vec<LedgerKey> = touched
        .into_iter()
        .filter(|a| !world.is_issuer(*a, tok))
        .map(|a| world.balance_key(a, tok))
        .collect();
    let resource_fee = plan.soroban.map_or(0, |s| s.resource_fee);
    let data = SorobanTransactionData {
        ext: SorobanTransactionDataExt::V0,
        resources: SorobanResources {
            footprint: LedgerFootprint {
                read_only: vec![instance].try_into()?,
                read_write: read_write.try_into()?,
            },
            instructions: rng.range(1_000_000, 8_000_000) as u32,
            disk_read_bytes: 0,
            write_bytes: rng.range(200, 1_200) as u32,
        },
        resource_fee,
    };
    Ok((invoke, data))
}

/// The P23 transaction set: a classic phase and a parallel Soroban phase, each listing its
/// envelopes sorted by hash (apply order is in `tx_processing`, as in real ledgers).
fn tx_set(
    world: &World,
    built: &[Built],
    prev_hash: [u8; 32],
    classic_base_fee: Option<i64>,
) -> Result<GeneralizedTransactionSet> {
    let _ = world;
    let mut classic: Vec<&Built> = built.iter().filter(|b| b.plan.soroban.is_none()).collect();
    let mut soroban: Vec<&Built> = built.iter().filter(|b| b.plan.soroban.is_some()).collect();
    classic.sort_by_key(|b| b.hash);
    soroban.sort_by_key(|b| b.hash);
    let classic: Vec<TransactionEnvelope> = classic.iter().map(|b| b.envelope.clone()).collect();
    let soroban: Vec<TransactionEnvelope> = soroban.iter().map(|b| b.envelope.clone()).collect();
    let classic_phase = TransactionPhase::V0(
        vec![TxSetComponent::TxsetCompTxsMaybeDiscountedFee(
            TxSetComponentTxsMaybeDiscountedFee {
                base_fee: classic_base_fee,
                txs: classic.try_into()?,
            },
        )]
        .try_into()?,
    );
    let stages = if soroban.is_empty() {
        vec![]
    } else {
        vec![ParallelTxExecutionStage(
            vec![DependentTxCluster(soroban.try_into()?)].try_into()?,
        )]
    };
    let soroban_phase = TransactionPhase::V1(ParallelTxsComponent {
        base_fee: None,
        execution_stages: stages.try_into()?,
    });
    Ok(GeneralizedTransactionSet::V1(TransactionSetV1 {
        previous_ledger_hash: Hash(prev_hash),
        phases: vec![classic_phase, soroban_phase].try_into()?,
    }))
}

fn sha256_xdr(value: &impl WriteXdr) -> Result<[u8; 32]> {
    let xdr = value.to_xdr(Limits::none()).context("XDR encoding")?;
    Ok(Sha256::digest(&xdr).into())
}
