//! The generator end to end: determinism, the galexie layout, ledgers that decode and hang
//! together, and expected events that agree with the ledgers they describe.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stellar_datagen::{generate, Config, Profile, Summary, STANDALONE_PASSPHRASE};
use stellar_ttp::datalake::{DataLake, Layout, Manifest};
use stellar_xdr::{
    LedgerCloseMeta, LedgerEntryChange, LedgerEntryData, Limits, TransactionEnvelope,
    TransactionMeta, TransactionPhase, TransactionResultResult, TxSetComponent, WriteXdr,
};

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("datagen-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, start: u32, ledgers: u32, layout: Layout, seed: u64) -> Config {
    Config {
        out: dir.join("lake"),
        start,
        ledgers,
        profile: Profile::Small,
        seed,
        layout,
        passphrase: STANDALONE_PASSPHRASE.into(),
        expected: Some(dir.join("expected.jsonl")),
    }
}

/// Every file under `root` (relative path, bytes), sorted.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn read_ledgers(dir: &Path, start: u32, count: u32) -> Vec<LedgerCloseMeta> {
    let root = dir.join("lake");
    let manifest = Manifest::read(&root).unwrap().expect("a .config.json");
    let lake = DataLake::new(&root, manifest.layout_or(Layout::default())).unwrap();
    let mut out = Vec::new();
    let mut seq = start;
    while seq < start + count {
        let batch = lake.read_batch(seq).unwrap().expect("file of the ledger");
        assert_eq!(
            batch.start_sequence, seq,
            "a batch starts where the last ended"
        );
        out.extend(batch.ledger_close_metas.iter().cloned());
        seq = batch.end_sequence + 1;
    }
    out
}

const SMALL_FILES: Layout = Layout {
    ledgers_per_file: 4,
    files_per_partition: 2,
};

#[test]
fn same_arguments_give_identical_bytes_and_another_seed_does_not() {
    let (a, b, c) = (
        Scratch::new("det-a"),
        Scratch::new("det-b"),
        Scratch::new("det-c"),
    );
    generate(&config(&a.0, 8, 10, SMALL_FILES, 7)).unwrap();
    generate(&config(&b.0, 8, 10, SMALL_FILES, 7)).unwrap();
    generate(&config(&c.0, 8, 10, SMALL_FILES, 8)).unwrap();
    let (ta, tb, tc) = (tree(&a.0), tree(&b.0), tree(&c.0));
    assert!(ta.len() > 3, "{:?}", ta.keys());
    assert_eq!(ta, tb);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tc.keys().collect::<Vec<_>>());
    assert_ne!(ta["expected.jsonl"], tc["expected.jsonl"]);
}

#[test]
fn files_follow_the_galexie_key_scheme_and_the_manifest_says_so() {
    let dir = Scratch::new("layout");
    let summary = generate(&config(&dir.0, 8, 10, SMALL_FILES, 1)).unwrap();
    let files: Vec<String> = tree(&dir.0.join("lake")).into_keys().collect();
    // Ledgers 8-17 asked for, in files of 4 ledgers and partitions of 2 files (8 ledgers): the
    // range is rounded up to whole files (8-19), as galexie writes them.
    assert_eq!(
        files,
        [
            ".config.json",
            "FFFFFFEF--16-23/FFFFFFEF--16-19.xdr.zstd",
            "FFFFFFF7--8-15/FFFFFFF3--12-15.xdr.zstd",
            "FFFFFFF7--8-15/FFFFFFF7--8-11.xdr.zstd",
        ]
    );
    assert_eq!(summary.files, 3);
    assert_eq!((summary.first, summary.last), (8, 19));
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.0.join("lake/.config.json")).unwrap()).unwrap();
    assert_eq!(
        manifest,
        serde_json::json!({
            "networkPassphrase": "Standalone Network ; February 2017",
            "version": "1.0",
            "compression": "zstd",
            "ledgersPerBatch": 4,
            "batchesPerPartition": 2
        })
    );
    let last = DataLake::new(dir.0.join("lake"), SMALL_FILES)
        .unwrap()
        .read_batch(17)
        .unwrap()
        .unwrap();
    assert_eq!((last.start_sequence, last.end_sequence), (16, 19));
    assert_eq!(last.ledger_close_metas.len(), 4);
}

#[test]
fn canonical_layout_writes_one_ledger_per_file() {
    let dir = Scratch::new("canonical");
    let layout = Layout {
        ledgers_per_file: 1,
        files_per_partition: 64_000,
    };
    generate(&config(&dir.0, 5000, 2, layout, 1)).unwrap();
    let files: Vec<String> = tree(&dir.0.join("lake")).into_keys().collect();
    assert_eq!(
        files,
        [
            ".config.json",
            "FFFFFFFF--0-63999/FFFFEC76--5001.xdr.zstd",
            "FFFFFFFF--0-63999/FFFFEC77--5000.xdr.zstd",
        ]
    );
}

#[test]
fn bad_ranges_are_refused_with_the_flag_named() {
    let dir = Scratch::new("bad");
    let err = generate(&config(&dir.0, 9, 3, SMALL_FILES, 1)).unwrap_err();
    assert!(format!("{err:#}").contains("--start 9"), "{err:#}");
    let err = generate(&config(&dir.0, 8, 0, SMALL_FILES, 1)).unwrap_err();
    assert!(format!("{err:#}").contains("--ledgers"), "{err:#}");
}

/// Generates `count` small ledgers from 64 in files of 4 and returns them with the expected
/// events and the summary.
fn sample(name: &str, count: u32) -> (Scratch, Vec<LedgerCloseMeta>, Vec<Value>, Summary) {
    let dir = Scratch::new(name);
    let summary = generate(&config(&dir.0, 64, count, SMALL_FILES, 3)).unwrap();
    let ledgers = read_ledgers(&dir.0, 64, count);
    let events = fs::read_to_string(dir.0.join("expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (dir, ledgers, events, summary)
}

fn v2(meta: &LedgerCloseMeta) -> &stellar_xdr::LedgerCloseMetaV2 {
    match meta {
        LedgerCloseMeta::V2(v) => v,
        other => panic!("expected LedgerCloseMeta V2, got {other:?}"),
    }
}

#[test]
fn ledgers_decode_as_protocol_23_with_a_hash_chain_and_matching_hashes() {
    let (_dir, ledgers, _, summary) = sample("decode", 8);
    assert_eq!(ledgers.len(), 8);
    let network_id: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(STANDALONE_PASSPHRASE.as_bytes()).into()
    };
    let mut prev_hash = None;
    let mut txs = 0;
    for (i, meta) in ledgers.iter().enumerate() {
        let v = v2(meta);
        let header = &v.ledger_header.header;
        assert_eq!(header.ledger_seq, 64 + i as u32);
        assert_eq!(header.ledger_version, 23);
        let hash = {
            use sha2::{Digest, Sha256};
            let h: [u8; 32] = Sha256::digest(header.to_xdr(Limits::none()).unwrap()).into();
            h
        };
        assert_eq!(
            v.ledger_header.hash.0, hash,
            "header hash of ledger {}",
            header.ledger_seq
        );
        if let Some(prev) = prev_hash {
            assert_eq!(header.previous_ledger_hash.0, prev, "hash chain");
        }
        prev_hash = Some(hash);
        // Every processed transaction's hash is the hash of an envelope in the tx set.
        let stellar_xdr::GeneralizedTransactionSet::V1(set) = &v.tx_set;
        let mut envelopes: Vec<&TransactionEnvelope> = Vec::new();
        for phase in set.phases.iter() {
            match phase {
                TransactionPhase::V0(components) => {
                    for TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) in components.iter() {
                        envelopes.extend(c.txs.iter());
                    }
                }
                TransactionPhase::V1(parallel) => {
                    for stage in parallel.execution_stages.iter() {
                        for cluster in stage.0.iter() {
                            envelopes.extend(cluster.0.iter());
                        }
                    }
                }
            }
        }
        assert_eq!(envelopes.len(), v.tx_processing.len());
        let hashes: Vec<[u8; 32]> = envelopes
            .iter()
            .map(|e| e.hash(network_id).unwrap())
            .collect();
        for tx in v.tx_processing.iter() {
            assert!(hashes.contains(&tx.result.transaction_hash.0));
            assert!(matches!(tx.tx_apply_processing, TransactionMeta::V4(_)));
        }
        txs += v.tx_processing.len() as u64;
    }
    assert_eq!(txs, summary.stats.transactions);
}

/// Balance of `account` (G strkey) in the last STATE and UPDATED account entries of `changes`.
fn balance_before_after(changes: &[LedgerEntryChange], account: &str) -> (i64, i64) {
    let (mut before, mut after) = (0, 0);
    for change in changes {
        match change {
            LedgerEntryChange::State(e) | LedgerEntryChange::Updated(e) => {
                if let LedgerEntryData::Account(a) = &e.data {
                    if a.account_id.to_string() == account {
                        if matches!(change, LedgerEntryChange::State(_)) {
                            before = a.balance;
                        } else {
                            after = a.balance;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (before, after)
}

/// The account paying each transaction's fee (by transaction hash), read from the envelopes.
fn fee_payers(v: &stellar_xdr::LedgerCloseMetaV2) -> BTreeMap<[u8; 32], String> {
    let network_id: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(STANDALONE_PASSPHRASE.as_bytes()).into()
    };
    let stellar_xdr::GeneralizedTransactionSet::V1(set) = &v.tx_set;
    let mut out = BTreeMap::new();
    for phase in set.phases.iter() {
        let envelopes: Vec<&TransactionEnvelope> = match phase {
            TransactionPhase::V0(components) => components
                .iter()
                .flat_map(|TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c)| c.txs.iter())
                .collect(),
            TransactionPhase::V1(p) => p
                .execution_stages
                .iter()
                .flat_map(|stage| stage.0.iter().flat_map(|cluster| cluster.0.iter()))
                .collect(),
        };
        for e in envelopes {
            let payer = match e {
                TransactionEnvelope::Tx(t) => t.tx.source_account.clone(),
                TransactionEnvelope::TxFeeBump(b) => b.tx.fee_source.clone(),
                TransactionEnvelope::TxV0(_) => panic!("no V0 envelopes at protocol 23"),
            };
            let g = match payer {
                stellar_xdr::MuxedAccount::Ed25519(k) => {
                    stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(k))
                }
                stellar_xdr::MuxedAccount::MuxedEd25519(m) => {
                    stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(m.ed25519))
                }
            };
            out.insert(e.hash(network_id).unwrap(), g.to_string());
        }
    }
    out
}

#[test]
fn expected_events_agree_with_the_ledgers_they_describe() {
    let (_dir, ledgers, events, summary) = sample("consistency", 8);
    let kind = |e: &Value| {
        ["transfer", "mint", "burn", "clawback", "fee"]
            .into_iter()
            .find(|k| e.get(*k).is_some())
            .unwrap()
    };
    // Per-kind counts are what the generator says it generated.
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &events {
        *counts.entry(kind(e)).or_default() += 1;
    }
    assert_eq!(counts, summary.stats.events);
    let ops = &summary.stats.ops;
    assert_eq!(
        counts.get("clawback").copied().unwrap_or(0),
        ops.get("clawback").copied().unwrap_or(0)
    );
    let st = &summary.stats;
    assert!(
        st.failed > 0 && st.soroban > 0 && st.refunds > 0 && st.fee_bumps > 0,
        "{st:?}"
    );
    for kind in [
        "payment",
        "create_account",
        "path_payment_strict_send",
        "sac_transfer",
        "sac_mint",
        "sac_burn",
    ] {
        assert!(
            ops.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {ops:?}"
        );
    }

    for meta in &ledgers {
        let v = v2(meta);
        let seq = v.ledger_header.header.ledger_seq;
        let here: Vec<&Value> = events
            .iter()
            .filter(|e| e["meta"]["ledger_sequence"] == seq)
            .collect();
        let fees: Vec<&Value> = here.iter().copied().filter(|e| kind(e) == "fee").collect();
        let charges: Vec<&Value> = fees
            .iter()
            .copied()
            .filter(|e| !e["fee"]["amount"].as_str().unwrap().starts_with('-'))
            .collect();
        let refunds: Vec<&Value> = fees
            .iter()
            .copied()
            .filter(|e| e["fee"]["amount"].as_str().unwrap().starts_with('-'))
            .collect();
        let v_fee_payers = fee_payers(v);
        // One fee event per transaction, first, in apply order.
        assert_eq!(charges.len(), v.tx_processing.len());
        for (i, (event, tx)) in here.iter().zip(v.tx_processing.iter()).enumerate() {
            assert_eq!(kind(event), "fee");
            assert_eq!(event["meta"]["transaction_index"], i as u64 + 1);
            assert_eq!(
                event["meta"]["tx_hash"],
                stellar_datagen::expected::hex(&tx.result.transaction_hash.0)
            );
            // The fee comes from the fee-bump payer when there is one...
            let from = event["fee"]["from"].as_str().unwrap();
            let tx_set_payer = v_fee_payers[&tx.result.transaction_hash.0].clone();
            assert_eq!(from, tx_set_payer);
            // ...and is what that account lost in fee processing...
            let (before, after) = balance_before_after(&tx.fee_processing, from);
            assert_eq!(event["fee"]["amount"], (before - after).to_string());
            // ...and, without a refund, what the result says was charged.
            if tx.post_tx_apply_fee_processing.is_empty() {
                assert_eq!(tx.result.result.fee_charged, before - after);
            }
        }
        // Refunds close the ledger and match the post-apply balance changes.
        let with_refund: Vec<_> = v
            .tx_processing
            .iter()
            .filter(|t| !t.post_tx_apply_fee_processing.is_empty())
            .collect();
        assert_eq!(refunds.len(), with_refund.len());
        assert!(here.ends_with(&refunds));
        for (event, tx) in refunds.iter().zip(with_refund) {
            let from = event["fee"]["from"].as_str().unwrap();
            let (before, after) = balance_before_after(&tx.post_tx_apply_fee_processing, from);
            assert_eq!(event["fee"]["amount"], (before - after).to_string());
        }
        // Failed transactions yield their fee and nothing else.
        for (i, tx) in v.tx_processing.iter().enumerate() {
            let failed = matches!(
                tx.result.result.result,
                TransactionResultResult::TxFailed(_)
            );
            let op_events = here
                .iter()
                .filter(|e| e["meta"]["transaction_index"] == i as u64 + 1)
                .filter(|e| e["meta"].get("operation_index").is_some())
                .count();
            if failed {
                assert_eq!(op_events, 0, "failed tx {} of ledger {seq}", i + 1);
            }
        }
    }
}

#[test]
fn the_stellar_ttp_extractor_produces_exactly_the_expected_events() {
    // A cross-check, not the source of the expected events: those come from the generation model.
    let (_dir, ledgers, _, _) = sample("extractor", 8);
    let expected = fs::read_to_string(_dir.0.join("expected.jsonl")).unwrap();
    let mut got = String::new();
    for meta in &ledgers {
        for event in stellar_ttp::ledger_events(meta, STANDALONE_PASSPHRASE).unwrap() {
            got.push_str(&stellar_ttp::json::event_to_json_line(&event));
            got.push('\n');
        }
        stellar_ttp::events::balances::verify_ledger(meta, STANDALONE_PASSPHRASE).unwrap();
    }
    assert_eq!(got.lines().count(), expected.lines().count());
    for (i, (g, e)) in got.lines().zip(expected.lines()).enumerate() {
        assert_eq!(g, e, "event {}", i + 1);
    }
}
