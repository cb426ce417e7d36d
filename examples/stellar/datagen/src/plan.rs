//! What a generated transaction is meant to do, chosen at random from the world as it is at the
//! start of a ledger. The plan is the generation model: the XDR and the expected events are both
//! derived from it, independently of each other.

use crate::rng::SplitMix64;
use crate::world::{Tok, World};

/// One offer (or issuer) crossed by a path payment, from the seller's side as in `ClaimAtom`.
#[derive(Debug, Clone)]
pub struct Hop {
    pub seller: usize,
    pub offer_id: i64,
    pub sold: Tok,
    pub sold_amount: i64,
    pub bought: Tok,
    pub bought_amount: i64,
}

/// A Stellar Asset Contract function call.
#[derive(Debug, Clone, Copy)]
pub enum SacCall {
    /// `mux`: pay the `M…` address with this id (CAP-67 puts it in the event's data map).
    Transfer {
        from: usize,
        to: usize,
        mux: Option<u64>,
    },
    Mint {
        to: usize,
    },
    Burn {
        from: usize,
    },
}

/// One operation; its source is always the transaction's source.
#[derive(Debug, Clone)]
pub enum OpPlan {
    Payment {
        dst: usize,
        /// Pay to the `M…` address with this id instead of the `G…` one.
        mux: Option<u64>,
        tok: Tok,
        amount: i64,
    },
    CreateAccount {
        new: usize,
        amount: i64,
    },
    PathPayment {
        strict_send: bool,
        dst: usize,
        mux: Option<u64>,
        send: Tok,
        send_amount: i64,
        hops: Vec<Hop>,
    },
    Merge {
        dst: usize,
    },
    Clawback {
        from: usize,
        asset: usize,
        amount: i64,
    },
    Sac {
        call: SacCall,
        tok: Tok,
        amount: i64,
    },
}

impl OpPlan {
    /// A short name for statistics.
    pub fn name(&self) -> &'static str {
        match self {
            OpPlan::Payment { .. } => "payment",
            OpPlan::CreateAccount { .. } => "create_account",
            OpPlan::PathPayment {
                strict_send: true, ..
            } => "path_payment_strict_send",
            OpPlan::PathPayment { .. } => "path_payment_strict_receive",
            OpPlan::Merge { .. } => "account_merge",
            OpPlan::Clawback { .. } => "clawback",
            OpPlan::Sac {
                call: SacCall::Transfer { .. },
                ..
            } => "sac_transfer",
            OpPlan::Sac {
                call: SacCall::Mint { .. },
                ..
            } => "sac_mint",
            OpPlan::Sac {
                call: SacCall::Burn { .. },
                ..
            } => "sac_burn",
        }
    }
}

/// The transaction memo.
#[derive(Debug, Clone)]
pub enum MemoPlan {
    None,
    Text(String),
    Id(u64),
}

/// Soroban fees: the declared resource fee and how much of it is refunded after apply.
#[derive(Debug, Clone, Copy)]
pub struct SorobanFee {
    pub resource_fee: i64,
    pub refund: i64,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct TxPlan {
    pub source: usize,
    /// The envelope names the source as this `M…` address.
    pub source_mux: Option<u64>,
    /// Another account pays the fee through a fee-bump envelope.
    pub fee_source: Option<usize>,
    pub seq: i64,
    /// Maximum fee the envelope bids.
    pub max_fee: u32,
    pub memo: MemoPlan,
    pub ops: Vec<OpPlan>,
    pub soroban: Option<SorobanFee>,
}

/// Picks a random live user.
fn user(rng: &mut SplitMix64, world: &World) -> usize {
    world.users[rng.index(world.users.len())]
}

/// A different random user than `not`.
fn other_user(rng: &mut SplitMix64, world: &World, not: usize) -> usize {
    loop {
        let u = user(rng, world);
        if u != not {
            return u;
        }
    }
}

/// A token `acct` holds with a positive balance (XLM when it holds nothing else).
fn held_token(rng: &mut SplitMix64, world: &World, acct: usize) -> Tok {
    let lines: Vec<usize> = world.accounts[acct]
        .lines
        .iter()
        .filter(|(_, b)| **b > 0)
        .map(|(a, _)| *a)
        .collect();
    if lines.is_empty() || rng.chance(400) {
        Tok::Native
    } else {
        Tok::Issued(lines[rng.index(lines.len())])
    }
}

/// A random amount up to a tenth of what `acct` holds of `tok` (at least 1 stroop).
fn some_of(rng: &mut SplitMix64, world: &World, acct: usize, tok: Tok) -> i64 {
    let cap = if world.is_issuer(acct, tok) {
        10_000_000_000
    } else {
        (world.balance(acct, tok) / 10).clamp(1, 50_000_000_000)
    };
    rng.range(1, cap)
}

/// A destination for a payment of `tok` from `src`: a user that can hold it, not `src`.
fn payee(rng: &mut SplitMix64, world: &World, src: usize, tok: Tok) -> Option<usize> {
    for _ in 0..20 {
        let u = user(rng, world);
        if u != src && world.can_hold(u, tok) && !world.is_issuer(u, tok) {
            return Some(u);
        }
    }
    None
}

/// A mux id for 5% of payments, as exchanges use for deposits.
fn maybe_mux(rng: &mut SplitMix64) -> Option<u64> {
    rng.chance(50).then(|| rng.below(1_000_000_000))
}

/// Takes the next sequence number of `acct`.
fn take_seq(world: &mut World, acct: usize) -> i64 {
    let a = &mut world.accounts[acct];
    a.next_seq += 1;
    a.next_seq
}

/// Plans a classic transaction. `ledger` is the ledger being built (new accounts are created
/// in it). Kinds and weights (per mille) imitate mainnet's mix.
pub fn classic_tx(rng: &mut SplitMix64, world: &mut World, ledger: u32) -> TxPlan {
    let roll = rng.below(1000);
    let memo = match rng.below(10) {
        0 | 1 => MemoPlan::Text(format!("inv-{}", rng.below(1_000_000))),
        2 => MemoPlan::Id(rng.below(10_000_000_000)),
        _ => MemoPlan::None,
    };
    let (source, ops) = match roll {
        // XLM payment.
        0..=299 => {
            let src = user(rng, world);
            let dst = other_user(rng, world, src);
            let amount = some_of(rng, world, src, Tok::Native);
            let mux = maybe_mux(rng);
            (
                src,
                vec![OpPlan::Payment {
                    dst,
                    mux,
                    tok: Tok::Native,
                    amount,
                }],
            )
        }
        // Issued asset payment between holders (XLM when no payee trusts it).
        300..=499 => {
            let src = user(rng, world);
            let tok = held_token(rng, world, src);
            let amount = some_of(rng, world, src, tok);
            let dst = payee(rng, world, src, tok).unwrap_or_else(|| other_user(rng, world, src));
            let tok = if world.can_hold(dst, tok) {
                tok
            } else {
                Tok::Native
            };
            let mux = maybe_mux(rng);
            (
                src,
                vec![OpPlan::Payment {
                    dst,
                    mux,
                    tok,
                    amount: amount.min(world.balance(src, tok).max(1)),
                }],
            )
        }
        // Mint: the issuer pays a holder.
        500..=549 => {
            let a = rng.index(world.assets.len());
            let issuer = world.assets[a].issuer;
            let tok = Tok::Issued(a);
            match payee(rng, world, issuer, tok) {
                Some(dst) => (
                    issuer,
                    vec![OpPlan::Payment {
                        dst,
                        mux: None,
                        tok,
                        amount: rng.range(1, 10_000_000_000),
                    }],
                ),
                None => native_payment(rng, world),
            }
        }
        // Burn: a holder pays the issuer back.
        550..=589 => {
            let src = user(rng, world);
            match held_token(rng, world, src) {
                Tok::Issued(a) => {
                    let tok = Tok::Issued(a);
                    let amount = some_of(rng, world, src, tok);
                    (
                        src,
                        vec![OpPlan::Payment {
                            dst: world.assets[a].issuer,
                            mux: None,
                            tok,
                            amount,
                        }],
                    )
                }
                Tok::Native => native_payment(rng, world),
            }
        }
        // Batch payout: 2-4 payments in one transaction.
        590..=649 => {
            let src = user(rng, world);
            let n = 2 + rng.index(3);
            let mut ops = Vec::with_capacity(n);
            for _ in 0..n {
                let tok = held_token(rng, world, src);
                let Some(dst) = payee(rng, world, src, tok) else {
                    continue;
                };
                let amount = some_of(rng, world, src, tok) / n as i64 + 1;
                ops.push(OpPlan::Payment {
                    dst,
                    mux: None,
                    tok,
                    amount,
                });
            }
            if ops.is_empty() {
                return classic_tx(rng, world, ledger);
            }
            (src, ops)
        }
        // Create account.
        650..=699 => {
            let src = user(rng, world);
            let amount = rng.range(10_000_000, 1_000_000_000);
            let new = world.new_account(rng, 0, ledger);
            (src, vec![OpPlan::CreateAccount { new, amount }])
        }
        // Path payments.
        700..=789 => path_payment(rng, world, roll < 750),
        // Merge an account made by an earlier create account.
        790..=809 if !world.fresh.is_empty() => {
            let i = rng.index(world.fresh.len());
            let src = world.fresh.swap_remove(i);
            let dst = user(rng, world);
            (src, vec![OpPlan::Merge { dst }])
        }
        // Clawback by the issuer of a clawback-enabled asset.
        810..=829 => {
            let holders: Vec<(usize, usize)> = (0..12)
                .map(|_| user(rng, world))
                .flat_map(|u| {
                    world.accounts[u]
                        .lines
                        .iter()
                        .filter(|(a, b)| world.assets[**a].clawback && **b > 0)
                        .map(move |(a, _)| (u, *a))
                        .collect::<Vec<_>>()
                })
                .collect();
            if holders.is_empty() {
                native_payment(rng, world)
            } else {
                let (from, asset) = holders[rng.index(holders.len())];
                let amount = some_of(rng, world, from, Tok::Issued(asset));
                (
                    world.assets[asset].issuer,
                    vec![OpPlan::Clawback {
                        from,
                        asset,
                        amount,
                    }],
                )
            }
        }
        // Fails: pays more than the payer has.
        830..=929 => {
            let src = user(rng, world);
            let tok = held_token(rng, world, src);
            match payee(rng, world, src, tok) {
                Some(dst) => {
                    let amount = world.balance(src, tok).saturating_add(rng.range(1, 1_000));
                    (
                        src,
                        vec![OpPlan::Payment {
                            dst,
                            mux: None,
                            tok,
                            amount,
                        }],
                    )
                }
                None => native_payment(rng, world),
            }
        }
        // Fails: pays an asset to an account without a trustline for it.
        930..=979 => {
            let src = user(rng, world);
            let tok = held_token(rng, world, src);
            let dst = (0..20)
                .map(|_| user(rng, world))
                .find(|u| *u != src && !world.can_hold(*u, tok));
            match dst {
                Some(dst) => {
                    let amount = some_of(rng, world, src, tok);
                    (
                        src,
                        vec![OpPlan::Payment {
                            dst,
                            mux: None,
                            tok,
                            amount,
                        }],
                    )
                }
                None => native_payment(rng, world),
            }
        }
        _ => native_payment(rng, world),
    };
    let seq = take_seq(world, source);
    let max_fee = ops.len() as u32 * rng.range(200, 2_000) as u32;
    let source_mux = rng.chance(40).then(|| rng.below(1 << 40));
    let fee_source = rng.chance(50).then(|| other_user(rng, world, source));
    TxPlan {
        source,
        source_mux,
        fee_source,
        seq,
        max_fee,
        memo,
        ops,
        soroban: None,
    }
}

fn native_payment(rng: &mut SplitMix64, world: &World) -> (usize, Vec<OpPlan>) {
    let src = user(rng, world);
    let dst = other_user(rng, world, src);
    let amount = some_of(rng, world, src, Tok::Native);
    (
        src,
        vec![OpPlan::Payment {
            dst,
            mux: None,
            tok: Tok::Native,
            amount,
        }],
    )
}

/// A path payment across one or two offers of market makers (sometimes the destination asset's
/// issuer sells it directly, which the events show as a mint).
fn path_payment(
    rng: &mut SplitMix64,
    world: &mut World,
    strict_send: bool,
) -> (usize, Vec<OpPlan>) {
    let src = user(rng, world);
    let send = held_token(rng, world, src);
    let dest = if send == Tok::Native || rng.chance(300) {
        Tok::Issued(rng.index(world.assets.len()))
    } else {
        Tok::Native
    };
    if dest == send {
        return native_payment(rng, world);
    }
    let Some(dst) = payee(rng, world, src, dest) else {
        return native_payment(rng, world);
    };
    let send_amount = some_of(rng, world, src, send);
    // A mid asset when neither end is XLM: XLM is the usual bridge.
    let mids: Vec<Tok> = if send != Tok::Native && dest != Tok::Native && rng.chance(600) {
        vec![Tok::Native]
    } else {
        vec![]
    };
    let mut hops = Vec::new();
    let mut bought = send;
    let mut bought_amount = send_amount;
    for sold in mids.into_iter().chain([dest]) {
        let sold_amount = (bought_amount as i128 * rng.range(500, 2_000) as i128 / 1_000)
            .clamp(1, i128::from(i64::MAX / 4)) as i64;
        let seller = match sold {
            Tok::Issued(a) if bought == Tok::Native && rng.chance(200) => world.assets[a].issuer,
            _ => world.makers[rng.index(world.makers.len())],
        };
        world.next_offer_id += 1;
        hops.push(Hop {
            seller,
            offer_id: world.next_offer_id,
            sold,
            sold_amount,
            bought,
            bought_amount,
        });
        bought = sold;
        bought_amount = sold_amount;
    }
    let mux = maybe_mux(rng);
    (
        src,
        vec![OpPlan::PathPayment {
            strict_send,
            dst,
            mux,
            send,
            send_amount,
            hops,
        }],
    )
}

/// A SAC transfer of XLM from `from` to another user: the call planned when there is no issued
/// asset to mint or burn.
fn native_transfer(rng: &mut SplitMix64, world: &World, from: usize) -> (usize, SacCall, Tok, i64) {
    let to = other_user(rng, world, from);
    let amount = some_of(rng, world, from, Tok::Native);
    let call = SacCall::Transfer {
        from,
        to,
        mux: None,
    };
    (from, call, Tok::Native, amount)
}

/// Plans a Soroban transaction calling a Stellar Asset Contract: transfer (XLM or an issued
/// asset, between accounts), mint (by the issuer, the SAC admin) or burn.
pub fn soroban_tx(rng: &mut SplitMix64, world: &mut World) -> TxPlan {
    let roll = rng.below(100);
    let (source, call, tok, amount) = if roll < 55 {
        let from = user(rng, world);
        let tok = held_token(rng, world, from);
        let to = payee(rng, world, from, tok).unwrap_or_else(|| other_user(rng, world, from));
        let tok = if world.can_hold(to, tok) && !world.is_issuer(to, tok) {
            tok
        } else {
            Tok::Native
        };
        let amount = some_of(rng, world, from, tok);
        let mux = rng.chance(100).then(|| rng.below(1 << 40));
        (from, SacCall::Transfer { from, to, mux }, tok, amount)
    } else if roll < 80 {
        let a = rng.index(world.assets.len());
        let issuer = world.assets[a].issuer;
        match payee(rng, world, issuer, Tok::Issued(a)) {
            Some(to) => (
                issuer,
                SacCall::Mint { to },
                Tok::Issued(a),
                rng.range(1, 10_000_000_000),
            ),
            None => {
                let from = user(rng, world);
                native_transfer(rng, world, from)
            }
        }
    } else {
        let from = user(rng, world);
        match held_token(rng, world, from) {
            Tok::Issued(a) => {
                let amount = some_of(rng, world, from, Tok::Issued(a));
                (from, SacCall::Burn { from }, Tok::Issued(a), amount)
            }
            Tok::Native => native_transfer(rng, world, from),
        }
    };
    let resource_fee = rng.range(40_000, 400_000);
    // Most Soroban transactions get part of their refundable fee back; some use it all.
    let refund = if rng.chance(150) {
        0
    } else {
        rng.range(1, resource_fee / 2)
    };
    let seq = take_seq(world, source);
    // Fee-bumped Soroban transactions are common (wallets sponsoring fees).
    let fee_source = rng.chance(150).then(|| other_user(rng, world, source));
    TxPlan {
        source,
        source_mux: None,
        fee_source,
        seq,
        max_fee: (resource_fee + rng.range(100, 5_000)) as u32,
        memo: MemoPlan::None,
        ops: vec![OpPlan::Sac { call, tok, amount }],
        soroban: Some(SorobanFee {
            resource_fee,
            refund,
        }),
    }
}
