//! Events of Soroban invocations, from SEP-41 contract events (meta v3 and CAP-67 meta v4).

use anyhow::Result;
use flowctl_proto::token_transfer::{
    muxed_info, token_transfer_event::Event, MuxedInfo, TokenTransferEvent,
};
use stellar_xdr::{ContractEvent, ContractEventBody, ContractEventType, Int128Parts, ScMap, ScVal};

use super::address::{
    asset_contract_id, contract_strkey, parse_sep11_asset, proto_asset, sc_address_strkey,
};
use super::operations::as_transfer;
use super::{burn, clawback, event_meta, mint, transfer, Extractor, LedgerTx};

/// The token events of operation `i`: each contract event that parses as SEP-41; others are
/// skipped, never an error (most contract events are not token events).
pub fn contract_events(
    x: &mut Extractor,
    tx: &LedgerTx<'_>,
    i: usize,
) -> Result<Vec<TokenTransferEvent>> {
    let mut out = Vec::new();
    for event in tx.contract_events(i) {
        if let Some(e) = parse_event(x, tx, i, event)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn i128_string(parts: &Int128Parts) -> String {
    (((parts.hi as i128) << 64) | parts.lo as i128).to_string()
}

fn address(value: &ScVal) -> Option<String> {
    match value {
        ScVal::Address(a) => Some(sc_address_strkey(a)),
        _ => None,
    }
}

/// Upstream's `parseEvent`: a SEP-41 event (`transfer`, `mint`, `burn`, `clawback` with the
/// topic layout of the meta version) becomes an event without asset; when it also has exactly
/// the Stellar Asset Contract's topics and its last topic names an asset whose SAC id is the
/// emitting contract, the asset is set (and, in meta v3, where SAC mints and burns looked like
/// transfers, the issuer rule is applied).
fn parse_event(
    x: &mut Extractor,
    tx: &LedgerTx<'_>,
    i: usize,
    event: &ContractEvent,
) -> Result<Option<TokenTransferEvent>> {
    if event.type_ != ContractEventType::Contract {
        return Ok(None);
    }
    let Some(contract_id) = &event.contract_id else {
        return Ok(None);
    };
    let ContractEventBody::V0(body) = &event.body;
    let topics = body.topics.as_slice();
    if topics.len() < 2 {
        return Ok(None);
    }
    let ScVal::Symbol(name) = &topics[0] else {
        return Ok(None);
    };
    let name = String::from_utf8_lossy(name.as_slice()).into_owned();
    let version = tx.meta_version();
    let contract = contract_strkey(&contract_id.0 .0);
    let parsed = match version {
        3 => parse_v3(tx, i, &name, topics, &body.data, contract),
        4 => parse_v4(tx, i, &name, topics, &body.data, contract),
        _ => None,
    };
    let Some(mut parsed) = parsed else {
        return Ok(None);
    };

    let expected_topics = match (version, name.as_str()) {
        (3, "burn") => 3,
        (3, _) => 4,
        (4, "transfer") => 4,
        _ => 3,
    };
    if topics.len() != expected_topics {
        return Ok(Some(parsed));
    }
    let ScVal::String(last) = &topics[topics.len() - 1] else {
        return Ok(Some(parsed));
    };
    if last.is_empty() {
        return Ok(Some(parsed));
    }
    let Some(asset) = parse_sep11_asset(&String::from_utf8_lossy(last.as_slice())) else {
        return Ok(Some(parsed));
    };
    if asset_contract_id(&x.network_id(), &asset) != contract_id.0 .0 {
        return Ok(Some(parsed));
    }
    set_asset(&mut parsed, proto_asset(&asset));
    if version == 4 {
        return Ok(Some(parsed));
    }
    if let Some(t) = as_transfer(&parsed) {
        let (from, to, amount) = (t.from.clone(), t.to.clone(), t.amount.clone());
        // Soroban transactions before protocol 23 carry no muxed information.
        return x
            .mint_burn_or_transfer(tx, Some(i), &asset, &from, &to, amount, false)
            .map(Some);
    }
    Ok(Some(parsed))
}

fn set_asset(event: &mut TokenTransferEvent, asset: flowctl_proto::asset::Asset) {
    let slot = match event.event.as_mut() {
        Some(Event::Transfer(e)) => &mut e.asset,
        Some(Event::Mint(e)) => &mut e.asset,
        Some(Event::Burn(e)) => &mut e.asset,
        Some(Event::Clawback(e)) => &mut e.asset,
        Some(Event::Fee(e)) => &mut e.asset,
        None => return,
    };
    *slot = Some(asset);
}

/// Meta v3 (protocols 20–22): data is the i128 amount; mint and clawback name an admin first.
fn parse_v3(
    tx: &LedgerTx<'_>,
    i: usize,
    name: &str,
    topics: &[ScVal],
    data: &ScVal,
    contract: String,
) -> Option<TokenTransferEvent> {
    let ScVal::I128(amount) = data else {
        return None;
    };
    let amount = i128_string(amount);
    let meta = event_meta(tx, Some(i), contract);
    match name {
        "transfer" if topics.len() >= 3 => Some(transfer(
            meta,
            address(&topics[1])?,
            address(&topics[2])?,
            amount,
            None,
        )),
        "mint" if topics.len() >= 3 => {
            address(&topics[1])?;
            Some(mint(meta, address(&topics[2])?, amount, None))
        }
        "clawback" if topics.len() >= 3 => {
            address(&topics[1])?;
            Some(clawback(meta, address(&topics[2])?, amount, None))
        }
        "burn" => Some(burn(meta, address(&topics[1])?, amount, None)),
        _ => None,
    }
}

/// Meta v4 (CAP-67, protocol 23+): no admin topics; data is the i128 amount or a map with
/// `amount` and an optional `to_muxed_id` that becomes `to_muxed_info`.
fn parse_v4(
    tx: &LedgerTx<'_>,
    i: usize,
    name: &str,
    topics: &[ScVal],
    data: &ScVal,
    contract: String,
) -> Option<TokenTransferEvent> {
    let (amount, muxed) = match data {
        ScVal::Map(Some(map)) => parse_v4_map(map)?,
        ScVal::Map(None) => return None,
        ScVal::I128(amount) => (i128_string(amount), None),
        _ => return None,
    };
    let mut meta = event_meta(tx, Some(i), contract);
    if muxed.is_some() {
        meta.to_muxed_info = muxed;
    }
    match name {
        "transfer" if topics.len() >= 3 => Some(transfer(
            meta,
            address(&topics[1])?,
            address(&topics[2])?,
            amount,
            None,
        )),
        "mint" => Some(mint(meta, address(&topics[1])?, amount, None)),
        "clawback" => Some(clawback(meta, address(&topics[1])?, amount, None)),
        "burn" => Some(burn(meta, address(&topics[1])?, amount, None)),
        _ => None,
    }
}

/// Upstream's `parseV4MapDataForTokenEvents`: symbol keys only; `amount` must be i128;
/// `to_muxed_id` may be u64, bytes or string; other keys are ignored.
fn parse_v4_map(map: &ScMap) -> Option<(String, Option<MuxedInfo>)> {
    let mut amount = None;
    let mut muxed = None;
    for entry in map.iter() {
        let ScVal::Symbol(key) = &entry.key else {
            return None;
        };
        match key.as_slice() {
            b"amount" => match &entry.val {
                ScVal::I128(a) => amount = Some(i128_string(a)),
                _ => return None,
            },
            b"to_muxed_id" => {
                let content = match &entry.val {
                    ScVal::U64(id) => muxed_info::Content::Id(*id),
                    ScVal::Bytes(b) => {
                        let mut hash = vec![0u8; 32];
                        let n = b.len().min(32);
                        hash[..n].copy_from_slice(&b.as_slice()[..n]);
                        muxed_info::Content::Hash(hash)
                    }
                    ScVal::String(s) => muxed_info::Content::Text(
                        String::from_utf8_lossy(s.as_slice()).into_owned(),
                    ),
                    _ => return None,
                };
                muxed = Some(MuxedInfo {
                    content: Some(content),
                });
            }
            _ => {}
        }
    }
    Some((amount?, muxed))
}
