//! Our events against the upstream processor's own output for mainnet ledgers with mints, burns
//! and the pre-protocol-8 XLM reconciliation (fixtures in `tests/upstream/`, see its README).

use std::path::Path;

use serde_json::{Map, Value};
use stellar_ttp::events::balances::verify_ledger;
use stellar_ttp::events::{event_kind, Extractor, LedgerInfo};
use stellar_ttp::json::event_to_json;
use stellar_ttp::offline::{read_base64_ledgers, MAINNET_PASSPHRASE};

/// `ledgerSequence` → `ledger_sequence` (the protobuf JSON mapping's two spellings).
fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn to_snake(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (snake(&k), to_snake(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

/// The events of an upstream `-events` file: blocks between `### Event Type: <kind>` and `###`.
fn upstream_events(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("### Event Type:") {
            block = Some(String::new());
        } else if line == "###" {
            if let Some(json) = block.take() {
                events.push(to_snake(
                    serde_json::from_str(&json).expect("upstream JSON"),
                ));
            }
        } else if let Some(json) = block.as_mut() {
            json.push_str(line);
            json.push('\n');
        }
    }
    events
}

/// The `to_muxed_info` today's rules give an event: the memo of its transaction for the
/// destination of a payment-like operation (these fixtures have no `M…` destinations).
fn memo_of(
    meta: &stellar_xdr::LedgerCloseMeta,
    event: &flowctl_proto::token_transfer::TokenTransferEvent,
) -> Option<Value> {
    let m = event.meta.as_ref()?;
    m.operation_index?;
    let kind = event_kind(event);
    if kind != "mint" && kind != "transfer" {
        return None;
    }
    let network = stellar_ttp::events::network_id(MAINNET_PASSPHRASE);
    let txs = stellar_ttp::events::ledger_transactions(meta, &network).ok()?;
    let tx = txs.iter().find(|t| t.index == m.transaction_index)?;
    match tx.memo() {
        stellar_xdr::Memo::None => None,
        stellar_xdr::Memo::Text(t) => {
            Some(serde_json::json!({"text": String::from_utf8_lossy(t.as_slice())}))
        }
        stellar_xdr::Memo::Id(id) => Some(serde_json::json!({"id": id.to_string()})),
        other => panic!("no fixture has a {other:?} memo"),
    }
}

fn check(name: &str, expected_kinds: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream");
    let metas = read_base64_ledgers(&dir.join(name)).expect("fixture ledger");
    assert_eq!(metas.len(), 1);
    let meta = &metas[0];
    assert!(LedgerInfo::of(meta).protocol < 8, "a pre-protocol-8 ledger");
    let ours = Extractor::new(MAINNET_PASSPHRASE)
        .ledger_events(meta)
        .expect("extract");
    let text = std::fs::read_to_string(dir.join(format!("{name}-events"))).expect("fixture events");
    let theirs = upstream_events(&text);
    // Upstream printed each fee right before its transaction's events; today fees come first.
    let (fees, ops): (Vec<Value>, Vec<Value>) =
        theirs.into_iter().partition(|e| e.get("fee").is_some());
    let theirs: Vec<Value> = fees.into_iter().chain(ops).collect();
    let mut ours_json: Vec<Value> = ours.iter().map(event_to_json).collect();
    // That printer also predates memos in `to_muxed_info`; today's rules put a transaction's
    // memo on the destination's event (upstream test "G (issuer account) to G account with Tx
    // Memo - USDC mint"). Check ours has exactly the memo, then compare the rest.
    for (event, memo) in ours_json
        .iter_mut()
        .zip(ours.iter().map(|e| memo_of(meta, e)))
    {
        let found = event["meta"]
            .as_object_mut()
            .and_then(|m| m.remove("to_muxed_info"));
        assert_eq!(found, memo, "{name}: to_muxed_info is the transaction memo");
    }
    assert_eq!(ours_json, theirs, "{name}");
    assert_eq!(
        ours.iter().map(event_kind).collect::<Vec<_>>(),
        expected_kinds,
        "{name}"
    );
    // Upstream's printer also reported "verification: success".
    verify_ledger(meta, MAINNET_PASSPHRASE).expect("balance verification");
}

#[test]
fn payment_from_an_issuer_is_a_mint() {
    check("mint-ledger-7320888", &["fee", "mint"]);
}

#[test]
fn payment_to_an_issuer_is_a_burn() {
    check("burn-ledger-7762802", &["fee", "burn"]);
}

#[test]
fn merging_an_already_merged_account_mints_the_xlm_it_creates() {
    check(
        "xlm-mint-bug-ledger-9652679",
        &[
            "fee", "fee", "transfer", "transfer", "mint", "transfer", "mint", "transfer",
            "transfer",
        ],
    );
    check(
        "xlm-mint-bug-ledger-9710976",
        &["fee", "transfer", "transfer", "mint", "transfer"],
    );
}

#[test]
fn a_self_payment_that_lost_xlm_is_followed_by_a_burn() {
    check(
        "xlm-burn-bug-ledger-9722383",
        &["fee", "fee", "transfer", "burn"],
    );
}
