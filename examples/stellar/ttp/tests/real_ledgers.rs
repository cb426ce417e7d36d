//! Extraction on every real ledger folder of `examples/ledgers`: event counts per kind (checked
//! against an independent census of the XDR), upstream's balance verification for every
//! transaction, and an exact match with the upstream output for testnet 997–998.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flowctl_proto::token_transfer::TokenTransferEvent;
use stellar_ttp::events::balances::verify_ledger;
use stellar_ttp::events::{event_kind, ledger_transactions, Extractor, LedgerInfo};
use stellar_ttp::json::{event_to_json, event_to_json_line};
use stellar_ttp::offline::{
    count_datalake_range, extract_base64_file, extract_datalake_range, for_each_ledger,
    open_datalake, read_base64_ledgers, MAINNET_PASSPHRASE,
};
use stellar_xdr::{
    ClaimAtom, ContractEventType, LedgerCloseMeta, ManageBuyOfferResult, ManageSellOfferResult,
    OperationBody, OperationResult, OperationResultTr, PathPaymentStrictReceiveResult,
    PathPaymentStrictSendResult, ScVal, TransactionMeta,
};

fn ledgers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ledgers")
}

fn lake_metas(folder: &str, start: u32, end: u32) -> (Vec<LedgerCloseMeta>, String, Vec<u32>) {
    let (lake, passphrase) = open_datalake(&ledgers_dir().join(folder), None).expect("open lake");
    let mut metas = Vec::new();
    let mut missing = Vec::new();
    for_each_ledger(&lake, start, end, &mut missing, |m| {
        metas.push(m.clone());
        Ok(())
    })
    .expect("read lake");
    (metas, passphrase, missing)
}

fn base64_metas() -> Vec<LedgerCloseMeta> {
    read_base64_ledgers(&ledgers_dir().join("pubnet-ttp-example/ledgers-base64.txt"))
        .expect("read base64 file")
}

fn extract(metas: &[LedgerCloseMeta], passphrase: &str) -> Vec<TokenTransferEvent> {
    let mut x = Extractor::new(passphrase);
    metas
        .iter()
        .flat_map(|m| x.ledger_events(m).expect("extract"))
        .collect()
}

fn kinds(events: &[TokenTransferEvent]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(event_kind(e)).or_insert(0) += 1;
    }
    out
}

fn counts(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

/// What the upstream rules predict from the XDR alone, computed without the extractor: one fee
/// event per transaction plus one per Soroban refund; for successful transactions one transfer
/// per create account / payment / merge / claimable balance create or claim, two per claim
/// atom of offers and path payments plus one for a path payment's delivery, and one per
/// `transfer` contract event of a Stellar Asset Contract. (None of these folders has an issuer
/// on either side of a movement, so no mints or burns are expected.)
#[derive(Debug, Default, PartialEq, Eq)]
struct Census {
    transactions: usize,
    failed: usize,
    soroban_refunds: usize,
    transfers: usize,
    /// Trades against liquidity pools / against pre-protocol-18 `V0` offers, among the claims.
    pool_claims: usize,
    v0_claims: usize,
}

fn census(metas: &[LedgerCloseMeta], passphrase: &str) -> Census {
    let network = stellar_ttp::events::network_id(passphrase);
    let mut c = Census::default();
    for meta in metas {
        for tx in ledger_transactions(meta, &network).expect("transactions") {
            c.transactions += 1;
            if tx.is_soroban() && refund_of(&tx) > 0 {
                c.soroban_refunds += 1;
            }
            if !tx.successful() {
                c.failed += 1;
                continue;
            }
            let results = tx.operation_results();
            for (i, op) in tx.operations().iter().enumerate() {
                let OperationResult::OpInner(tr) = &results[i] else {
                    panic!("failed op in a successful tx")
                };
                let mut claims = |atoms: &[ClaimAtom]| {
                    for atom in atoms {
                        match atom {
                            ClaimAtom::LiquidityPool(_) => c.pool_claims += 1,
                            ClaimAtom::V0(_) => c.v0_claims += 1,
                            ClaimAtom::OrderBook(_) => {}
                        }
                    }
                    2 * atoms.len()
                };
                c.transfers += match (&op.body, tr) {
                    (OperationBody::CreateAccount(_), _)
                    | (OperationBody::Payment(_), _)
                    | (OperationBody::AccountMerge(_), _)
                    | (OperationBody::CreateClaimableBalance(_), _)
                    | (OperationBody::ClaimClaimableBalance(_), _) => 1,
                    (_, OperationResultTr::ManageBuyOffer(ManageBuyOfferResult::Success(s)))
                    | (_, OperationResultTr::ManageSellOffer(ManageSellOfferResult::Success(s))) => {
                        claims(&s.offers_claimed)
                    }
                    (
                        _,
                        OperationResultTr::PathPaymentStrictSend(
                            PathPaymentStrictSendResult::Success(s),
                        ),
                    ) => claims(&s.offers) + 1,
                    (
                        _,
                        OperationResultTr::PathPaymentStrictReceive(
                            PathPaymentStrictReceiveResult::Success(s),
                        ),
                    ) => claims(&s.offers) + 1,
                    (OperationBody::InvokeHostFunction(_), _) => sac_transfer_events(&tx, i),
                    _ => 0,
                };
            }
        }
    }
    c
}

/// What the fee account regained after the operations (the Soroban refund).
fn refund_of(tx: &stellar_ttp::events::LedgerTx<'_>) -> i64 {
    let account = tx.fee_account().account_id();
    let changes = tx
        .tx_changes_after()
        .iter()
        .chain(tx.post_apply_fee_changes.map_or(&[][..], |c| c.as_slice()));
    let (mut before, mut after) = (0, 0);
    for change in changes {
        match change {
            stellar_xdr::LedgerEntryChange::State(e) => {
                if let stellar_xdr::LedgerEntryData::Account(a) = &e.data {
                    if a.account_id == account {
                        before = a.balance;
                    }
                }
            }
            stellar_xdr::LedgerEntryChange::Updated(e) => {
                if let stellar_xdr::LedgerEntryData::Account(a) = &e.data {
                    if a.account_id == account {
                        after = a.balance;
                    }
                }
            }
            _ => {}
        }
    }
    after - before
}

/// `transfer` events of a contract whose last topic is an asset string (the SAC's layout).
fn sac_transfer_events(tx: &stellar_ttp::events::LedgerTx<'_>, i: usize) -> usize {
    let events = match tx.meta {
        TransactionMeta::V3(m) => m
            .soroban_meta
            .as_ref()
            .map(|s| s.events.to_vec())
            .unwrap_or_default(),
        TransactionMeta::V4(m) => m.operations[i].events.to_vec(),
        _ => Vec::new(),
    };
    events
        .iter()
        .filter(|e| e.type_ == ContractEventType::Contract)
        .filter(|e| {
            let stellar_xdr::ContractEventBody::V0(b) = &e.body;
            matches!(b.topics.first(), Some(ScVal::Symbol(s)) if s.as_slice() == b"transfer")
                && b.topics.len() == 4
                && matches!(b.topics.last(), Some(ScVal::String(_)))
        })
        .count()
}

/// Operation events per operation type (`CreateAccount: 5`), from our events and the XDR.
fn events_by_operation(metas: &[LedgerCloseMeta], passphrase: &str) -> BTreeMap<String, usize> {
    let network = stellar_ttp::events::network_id(passphrase);
    let mut x = Extractor::new(passphrase);
    let mut out = BTreeMap::new();
    for meta in metas {
        for tx in ledger_transactions(meta, &network).expect("transactions") {
            let events = x.transaction_events(&tx).expect("events");
            for e in &events.operations {
                let i = e
                    .meta
                    .as_ref()
                    .and_then(|m| m.operation_index)
                    .expect("operation index");
                let name = tx.operations()[i as usize - 1].body.name().to_string();
                *out.entry(name).or_insert(0) += 1;
            }
        }
    }
    out
}

fn by_op(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn check_folder(
    metas: &[LedgerCloseMeta],
    passphrase: &str,
    expected_census: Census,
    expected_kinds: &[(&'static str, usize)],
) -> Vec<TokenTransferEvent> {
    let c = census(metas, passphrase);
    assert_eq!(c, expected_census, "census of the XDR");
    let events = extract(metas, passphrase);
    let by_kind = kinds(&events);
    assert_eq!(by_kind, counts(expected_kinds), "events per kind");
    // The census predicts the extractor's counts without using it.
    assert_eq!(
        by_kind.get("fee").copied().unwrap_or(0),
        c.transactions + c.soroban_refunds
    );
    assert_eq!(by_kind.get("transfer").copied().unwrap_or(0), c.transfers);
    for meta in metas {
        verify_ledger(meta, passphrase).expect("events account for every balance change");
    }
    check_invariants(metas, &events, passphrase);
    events
}

/// Properties every event stream has: fee events first in each ledger (refunds after the
/// operation events), fee events without operation index, operation events with one, indexes
/// from 1, lower-case hashes, XLM SAC address on fee events, JSON line == JSON value.
fn check_invariants(metas: &[LedgerCloseMeta], events: &[TokenTransferEvent], passphrase: &str) {
    let xlm_sac = stellar_ttp::events::contract_strkey(&stellar_ttp::events::asset_contract_id(
        &stellar_ttp::events::network_id(passphrase),
        &stellar_xdr::Asset::Native,
    ));
    let mut by_ledger: BTreeMap<u32, Vec<&TokenTransferEvent>> = BTreeMap::new();
    for e in events {
        by_ledger
            .entry(e.meta.as_ref().expect("meta").ledger_sequence)
            .or_default()
            .push(e);
    }
    for meta in metas {
        let info = LedgerInfo::of(meta);
        let Some(ledger_events) = by_ledger.get(&info.sequence) else {
            continue;
        };
        let tx_count = ledger_transactions(meta, &stellar_ttp::events::network_id(passphrase))
            .expect("txs")
            .len();
        // The first tx_count events are the fee charged by each transaction, in order.
        for (i, e) in ledger_events.iter().take(tx_count).enumerate() {
            assert_eq!(event_kind(e), "fee");
            let m = e.meta.as_ref().expect("meta");
            assert_eq!(m.transaction_index as usize, i + 1);
        }
        for e in ledger_events {
            let m = e.meta.as_ref().expect("meta");
            assert!(m.transaction_index >= 1);
            assert_eq!(m.tx_hash.len(), 64);
            assert!(m
                .tx_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(m.contract_address.starts_with('C') && m.contract_address.len() == 56);
            if event_kind(e) == "fee" {
                assert_eq!(m.operation_index, None);
                assert_eq!(m.contract_address, xlm_sac);
            } else {
                assert!(m.operation_index.is_some_and(|i| i >= 1));
            }
            let line = event_to_json_line(e);
            let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON line");
            assert_eq!(
                serde_json::to_string(&parsed).ok(),
                serde_json::to_string(&event_to_json(e)).ok()
            );
        }
    }
}

#[test]
fn testnet_997_999_counts() {
    let (metas, passphrase, missing) = lake_metas("testnet-997-999", 997, 999);
    assert_eq!(passphrase, "Test SDF Network ; September 2015");
    assert!(missing.is_empty());
    // 17 txs, 8 failed (all failed payments); 9 succeeded: 5 create account, 1 account merge
    // (6 transfers), 6 change trust and 1 set options (no events).
    check_folder(
        &metas,
        &passphrase,
        Census {
            transactions: 17,
            failed: 8,
            soroban_refunds: 0,
            transfers: 6,
            pool_claims: 0,
            v0_claims: 0,
        },
        &[("fee", 17), ("transfer", 6)],
    );
    assert_eq!(
        events_by_operation(&metas, &passphrase),
        by_op(&[("AccountMerge", 1), ("CreateAccount", 5)])
    );
}

#[test]
fn testnet_997_998_matches_upstream_output_exactly() {
    let dir = ledgers_dir().join("testnet-997-999");
    let expected =
        std::fs::read_to_string(dir.join("expected-events-997-998.jsonl")).expect("expected file");
    let mut lines = Vec::new();
    extract_datalake_range(&dir, 997, 998, None, |events| {
        lines.extend(events.iter().map(event_to_json_line));
        Ok(())
    })
    .expect("extract");
    let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), expected.len(), "number of events");
    for (n, (ours, theirs)) in lines.iter().zip(&expected).enumerate() {
        let ours_value: serde_json::Value = serde_json::from_str(ours).expect("our JSON");
        let theirs_value: serde_json::Value = serde_json::from_str(theirs).expect("upstream JSON");
        assert_eq!(ours_value, theirs_value, "line {}", n + 1);
        // Same keys in the same order, and byte-identical in the file's formatting.
        assert_eq!(
            serde_json::to_string(&ours_value).ok(),
            serde_json::to_string(&theirs_value).ok(),
            "line {}",
            n + 1
        );
        assert_eq!(ours, theirs, "line {} byte for byte", n + 1);
    }
}

#[test]
fn pubnet_53312000_counts() {
    let (metas, passphrase, _) = lake_metas("pubnet-53312000", 53_312_000, 53_312_000);
    assert_eq!(passphrase, MAINNET_PASSPHRASE);
    // 163 txs (62 failed); one Soroban invocation with a refund (164 fees). Transfers: 54
    // claimable balances created, 3 claimed, 9 payments, 4 path payments strict receive with
    // 19 claim atoms (42), 4 strict send with 8 claim atoms (20), manage buy offers that
    // crossed 2 offers (4); the 40 successful manage sell offers crossed nothing. 18 of the
    // 29 claim atoms are trades against liquidity pools.
    let events = check_folder(
        &metas,
        &passphrase,
        Census {
            transactions: 163,
            failed: 62,
            soroban_refunds: 1,
            transfers: 132,
            pool_claims: 18,
            v0_claims: 0,
        },
        &[("fee", 164), ("transfer", 132)],
    );
    assert_eq!(
        events_by_operation(&metas, &passphrase),
        by_op(&[
            ("ClaimClaimableBalance", 3),
            ("CreateClaimableBalance", 54),
            ("ManageBuyOffer", 4),
            ("PathPaymentStrictReceive", 42),
            ("PathPaymentStrictSend", 20),
            ("Payment", 9),
        ])
    );
    // Payments in transactions with a memo carry it as to_muxed_info (4 of them here).
    let with_memo = events
        .iter()
        .filter(|e| e.meta.as_ref().is_some_and(|m| m.to_muxed_info.is_some()))
        .count();
    assert_eq!(with_memo, 4);
    // Fee-bump transactions (3 here) pay from the fee source, not the inner source.
    let network = stellar_ttp::events::network_id(&passphrase);
    let mut fee_bumps = 0;
    for tx in ledger_transactions(&metas[0], &network).expect("transactions") {
        if let stellar_xdr::TransactionEnvelope::TxFeeBump(e) = tx.envelope {
            fee_bumps += 1;
            let fee = events
                .iter()
                .find(|ev| {
                    let m = ev.meta.as_ref().expect("meta");
                    m.transaction_index == tx.index && event_kind(ev) == "fee"
                })
                .expect("fee event");
            let Some(flowctl_proto::token_transfer::token_transfer_event::Event::Fee(f)) =
                &fee.event
            else {
                panic!("fee expected")
            };
            assert_eq!(f.from, e.tx.fee_source.clone().account_id().to_string());
        }
    }
    assert_eq!(fee_bumps, 3);
    // 18 of the 29 trades crossed liquidity pools: 36 transfers to or from an L… pool.
    let pool_transfers = events
        .iter()
        .filter(|e| {
            matches!(&e.event, Some(flowctl_proto::token_transfer::token_transfer_event::Event::Transfer(t))
                if t.from.starts_with('L') || t.to.starts_with('L'))
        })
        .count();
    assert_eq!(pool_transfers, 36);
    // Claimable balances appear by their B… strkey.
    assert!(events.iter().any(|e| matches!(&e.event,
        Some(flowctl_proto::token_transfer::token_transfer_event::Event::Transfer(t)) if t.to.starts_with('B'))));
}

#[test]
fn standalone_p23_sac_counts() {
    // Ledgers 86 and 87 are not in this lake: reading 84–88 reports them missing.
    let (metas, passphrase, missing) = lake_metas("standalone-p23-sac", 84, 88);
    assert_eq!(passphrase, "Standalone Network ; February 2017");
    assert_eq!(missing, vec![86, 87]);
    assert_eq!(
        metas
            .iter()
            .map(|m| LedgerInfo::of(m).sequence)
            .collect::<Vec<_>>(),
        vec![84, 85, 88]
    );
    // 200 Soroban txs (ledger 84 has none), each refunded (200 negative fee events) and each
    // emitting 10 SAC `transfer` events in meta v4.
    let events = check_folder(
        &metas,
        &passphrase,
        Census {
            transactions: 200,
            failed: 0,
            soroban_refunds: 200,
            transfers: 2000,
            pool_claims: 0,
            v0_claims: 0,
        },
        &[("fee", 400), ("transfer", 2000)],
    );
    assert_eq!(
        events_by_operation(&metas, &passphrase),
        by_op(&[("InvokeHostFunction", 2000)])
    );
    // Protocol 23: refunds come after every operation event of the ledger, negative.
    for meta in &metas {
        let seq = LedgerInfo::of(meta).sequence;
        let ledger: Vec<_> = events
            .iter()
            .filter(|e| e.meta.as_ref().map(|m| m.ledger_sequence) == Some(seq))
            .collect();
        let n = ledger.len() / 12; // per tx: fee + 10 transfers + refund
        assert!(ledger[ledger.len() - n..]
            .iter()
            .all(|e| event_kind(e) == "fee"));
        assert!(ledger[ledger.len() - n..].iter().all(|e| match &e.event {
            Some(flowctl_proto::token_transfer::token_transfer_event::Event::Fee(f)) =>
                f.amount.starts_with('-'),
            _ => false,
        }));
    }
}

#[test]
fn standalone_p25_counts() {
    let (metas, passphrase, missing) = lake_metas("standalone-p25-10048-10077", 10_048, 10_077);
    assert!(missing.is_empty());
    assert_eq!(metas.len(), 30);
    // 7,740 txs: 300 classic payments (300 transfers) and 7,440 Soroban invocations, all
    // refunded, whose contract events are not token events (no events, none invented).
    check_folder(
        &metas,
        &passphrase,
        Census {
            transactions: 7740,
            failed: 0,
            soroban_refunds: 7440,
            transfers: 300,
            pool_claims: 0,
            v0_claims: 0,
        },
        &[("fee", 15_180), ("transfer", 300)],
    );
    assert_eq!(
        events_by_operation(&metas, &passphrase),
        by_op(&[("Payment", 300)])
    );
}

#[test]
fn pubnet_ttp_example_counts() {
    let metas = base64_metas();
    let seqs: Vec<u32> = metas.iter().map(|m| LedgerInfo::of(m).sequence).collect();
    assert_eq!(
        seqs,
        vec![6_154_623, 16_154_623, 26_154_623, 46_154_623, 36_154_623]
    );
    // 423 txs (104 failed). The allow trust, clawback and create account operations are all
    // in failed transactions. Transfers: 102 claimable balances created, 6 claimed, 10
    // payments, 1 path payment strict send with 2 claim atoms (5), manage buy offers crossing
    // 42 offers (84) and manage sell offers crossing 296 (592); 3 claim atoms are the legacy
    // V0 kind (seller as a bare ed25519 key).
    let events = check_folder(
        &metas,
        MAINNET_PASSPHRASE,
        Census {
            transactions: 423,
            failed: 104,
            soroban_refunds: 0,
            transfers: 799,
            pool_claims: 0,
            v0_claims: 3,
        },
        &[("fee", 423), ("transfer", 799)],
    );
    assert_eq!(
        events_by_operation(&metas, MAINNET_PASSPHRASE),
        by_op(&[
            ("ClaimClaimableBalance", 6),
            ("CreateClaimableBalance", 102),
            ("ManageBuyOffer", 84),
            ("ManageSellOffer", 592),
            ("PathPaymentStrictSend", 5),
            ("Payment", 10),
        ])
    );
    let with_memo = events
        .iter()
        .filter(|e| e.meta.as_ref().is_some_and(|m| m.to_muxed_info.is_some()))
        .count();
    assert_eq!(with_memo, 10);
}

#[test]
fn offline_runs_report_counts_and_gaps() {
    let counts = count_datalake_range(&ledgers_dir().join("standalone-p23-sac"), 84, 88, None)
        .expect("count");
    assert_eq!(counts.ledgers, 3);
    assert_eq!(counts.missing_ledgers, vec![86, 87]);
    assert_eq!(counts.transactions, 200);
    assert_eq!(counts.events, 2400);
    let counts = extract_base64_file(
        &ledgers_dir().join("pubnet-ttp-example/ledgers-base64.txt"),
        MAINNET_PASSPHRASE,
        |_| Ok(()),
    )
    .expect("extract");
    assert_eq!(
        (counts.ledgers, counts.transactions, counts.events),
        (5, 423, 1222)
    );
}

#[test]
fn a_wrong_passphrase_is_an_error_not_silence() {
    // Hashes are network-specific: with another network's passphrase no result matches the
    // transaction set, and that must be reported.
    let (metas, _, _) = lake_metas("testnet-997-999", 997, 997);
    let err = Extractor::new(MAINNET_PASSPHRASE)
        .ledger_events(&metas[0])
        .expect_err("wrong network");
    assert!(format!("{err:#}").contains("passphrase"));
}

#[test]
fn verification_is_opt_in_and_covers_every_transaction() {
    let file = ledgers_dir().join("pubnet-ttp-example/ledgers-base64.txt");
    let plain = extract_base64_file(&file, MAINNET_PASSPHRASE, |_| Ok(())).expect("extract");
    assert_eq!(plain.verified_transactions, 0);
    let verified =
        stellar_ttp::offline::extract_base64_file_with(&file, MAINNET_PASSPHRASE, true, |_| Ok(()))
            .expect("verified extraction");
    assert_eq!(verified.verified_transactions, 423);
    let lake = stellar_ttp::offline::extract_datalake_range_with(
        &ledgers_dir().join("standalone-p23-sac"),
        84,
        88,
        None,
        true,
        |_| Ok(()),
    )
    .expect("verified extraction");
    assert_eq!(lake.verified_transactions, 200);
}
