//! Token transfer events as JSON, in the shape of the upstream output
//! (`examples/ledgers/testnet-997-999/expected-events-997-998.jsonl`): proto field names, fields
//! in field-number order, unset fields omitted, 64-bit integers and amounts as strings,
//! timestamps in RFC 3339 UTC, bytes in base64 (the protobuf JSON mapping).

use base64::Engine;
use flowctl_proto::asset::{asset::AssetType, Asset};
use flowctl_proto::token_transfer::{
    muxed_info::Content, token_transfer_event::Event, EventMeta, MuxedInfo, TokenTransferEvent,
};
use serde_json::{Map, Value};

/// The JSON object of one event, keys in the upstream order.
pub fn event_to_json(event: &TokenTransferEvent) -> Value {
    let mut object = Map::new();
    if let Some(meta) = &event.meta {
        object.insert("meta".into(), meta_json(meta));
    }
    if let Some(e) = &event.event {
        let (name, fields) = event_fields(e);
        let mut inner = Map::new();
        for (key, value) in fields {
            match value {
                Field::Str(s) if !s.is_empty() => {
                    inner.insert(key.into(), Value::String(s.to_string()));
                }
                Field::Asset(Some(asset)) => {
                    inner.insert(key.into(), asset_json(asset));
                }
                _ => {}
            }
        }
        object.insert(name.into(), Value::Object(inner));
    }
    Value::Object(object)
}

/// One event as a JSON line (no newline), formatted like the upstream expected-events file
/// (`", "` and `": "` separators), so outputs can be compared with `diff`. Same content and key
/// order as [`event_to_json`], without building a `Value` (this is the hot path of the offline
/// command).
pub fn event_to_json_line(event: &TokenTransferEvent) -> String {
    let mut out = String::with_capacity(512);
    write_event_json(event, &mut out);
    out
}

/// Appends [`event_to_json_line`] to `out`.
pub fn write_event_json(event: &TokenTransferEvent, out: &mut String) {
    out.push('{');
    let mut first = true;
    if let Some(meta) = &event.meta {
        key(out, &mut first, "meta");
        write_meta(meta, out);
    }
    if let Some(e) = &event.event {
        let (name, fields) = event_fields(e);
        key(out, &mut first, name);
        out.push('{');
        let mut first_field = true;
        for (name, value) in fields {
            match value {
                Field::Str(s) if !s.is_empty() => {
                    key(out, &mut first_field, name);
                    string(out, s);
                }
                Field::Asset(Some(asset)) => {
                    key(out, &mut first_field, name);
                    write_asset(asset, out);
                }
                _ => {}
            }
        }
        out.push('}');
    }
    out.push('}');
}

enum Field<'a> {
    Str(&'a str),
    Asset(Option<&'a Asset>),
}

fn event_fields(event: &Event) -> (&'static str, Vec<(&'static str, Field<'_>)>) {
    match event {
        Event::Transfer(e) => (
            "transfer",
            vec![
                ("from", Field::Str(&e.from)),
                ("to", Field::Str(&e.to)),
                ("asset", Field::Asset(e.asset.as_ref())),
                ("amount", Field::Str(&e.amount)),
            ],
        ),
        Event::Mint(e) => (
            "mint",
            vec![
                ("to", Field::Str(&e.to)),
                ("asset", Field::Asset(e.asset.as_ref())),
                ("amount", Field::Str(&e.amount)),
            ],
        ),
        Event::Burn(e) => (
            "burn",
            from_asset_amount(&e.from, e.asset.as_ref(), &e.amount),
        ),
        Event::Clawback(e) => (
            "clawback",
            from_asset_amount(&e.from, e.asset.as_ref(), &e.amount),
        ),
        Event::Fee(e) => (
            "fee",
            from_asset_amount(&e.from, e.asset.as_ref(), &e.amount),
        ),
    }
}

fn from_asset_amount<'a>(
    from: &'a str,
    asset: Option<&'a Asset>,
    amount: &'a str,
) -> Vec<(&'static str, Field<'a>)> {
    vec![
        ("from", Field::Str(from)),
        ("asset", Field::Asset(asset)),
        ("amount", Field::Str(amount)),
    ]
}

fn meta_json(meta: &EventMeta) -> Value {
    let mut m = Map::new();
    if meta.ledger_sequence != 0 {
        m.insert("ledger_sequence".into(), meta.ledger_sequence.into());
    }
    if let Some(ts) = &meta.closed_at {
        m.insert(
            "closed_at".into(),
            Value::String(rfc3339(ts.seconds, ts.nanos)),
        );
    }
    if !meta.tx_hash.is_empty() {
        m.insert("tx_hash".into(), Value::String(meta.tx_hash.clone()));
    }
    if meta.transaction_index != 0 {
        m.insert("transaction_index".into(), meta.transaction_index.into());
    }
    if let Some(op) = meta.operation_index {
        m.insert("operation_index".into(), op.into());
    }
    if !meta.contract_address.is_empty() {
        m.insert(
            "contract_address".into(),
            Value::String(meta.contract_address.clone()),
        );
    }
    if let Some(muxed) = &meta.to_muxed_info {
        let mut inner = Map::new();
        match &muxed.content {
            Some(Content::Text(t)) => {
                inner.insert("text".into(), Value::String(t.clone()));
            }
            Some(Content::Id(id)) => {
                inner.insert("id".into(), Value::String(id.to_string()));
            }
            Some(Content::Hash(h)) => {
                inner.insert(
                    "hash".into(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(h)),
                );
            }
            None => {}
        }
        m.insert("to_muxed_info".into(), Value::Object(inner));
    }
    Value::Object(m)
}

fn asset_json(asset: &Asset) -> Value {
    let mut m = Map::new();
    match &asset.asset_type {
        Some(AssetType::Native(native)) => {
            m.insert("native".into(), Value::Bool(*native));
        }
        Some(AssetType::IssuedAsset(issued)) => {
            let mut inner = Map::new();
            if !issued.asset_code.is_empty() {
                inner.insert(
                    "asset_code".into(),
                    Value::String(issued.asset_code.clone()),
                );
            }
            if !issued.issuer.is_empty() {
                inner.insert("issuer".into(), Value::String(issued.issuer.clone()));
            }
            m.insert("issued_asset".into(), Value::Object(inner));
        }
        None => {}
    }
    Value::Object(m)
}

fn key(out: &mut String, first: &mut bool, name: &str) {
    if !*first {
        out.push_str(", ");
    }
    *first = false;
    out.push('"');
    out.push_str(name);
    out.push_str("\": ");
}

fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_meta(meta: &EventMeta, out: &mut String) {
    use std::fmt::Write;
    out.push('{');
    let mut first = true;
    if meta.ledger_sequence != 0 {
        key(out, &mut first, "ledger_sequence");
        let _ = write!(out, "{}", meta.ledger_sequence);
    }
    if let Some(ts) = &meta.closed_at {
        key(out, &mut first, "closed_at");
        string(out, &rfc3339(ts.seconds, ts.nanos));
    }
    if !meta.tx_hash.is_empty() {
        key(out, &mut first, "tx_hash");
        string(out, &meta.tx_hash);
    }
    if meta.transaction_index != 0 {
        key(out, &mut first, "transaction_index");
        let _ = write!(out, "{}", meta.transaction_index);
    }
    if let Some(op) = meta.operation_index {
        key(out, &mut first, "operation_index");
        let _ = write!(out, "{op}");
    }
    if !meta.contract_address.is_empty() {
        key(out, &mut first, "contract_address");
        string(out, &meta.contract_address);
    }
    if let Some(muxed) = &meta.to_muxed_info {
        key(out, &mut first, "to_muxed_info");
        write_muxed(muxed, out);
    }
    out.push('}');
}

fn write_muxed(muxed: &MuxedInfo, out: &mut String) {
    out.push('{');
    let mut first = true;
    match &muxed.content {
        Some(Content::Text(t)) => {
            key(out, &mut first, "text");
            string(out, t);
        }
        Some(Content::Id(id)) => {
            key(out, &mut first, "id");
            string(out, &id.to_string());
        }
        Some(Content::Hash(h)) => {
            key(out, &mut first, "hash");
            string(out, &base64::engine::general_purpose::STANDARD.encode(h));
        }
        None => {}
    }
    out.push('}');
}

fn write_asset(asset: &Asset, out: &mut String) {
    out.push('{');
    let mut first = true;
    match &asset.asset_type {
        Some(AssetType::Native(native)) => {
            key(out, &mut first, "native");
            out.push_str(if *native { "true" } else { "false" });
        }
        Some(AssetType::IssuedAsset(issued)) => {
            key(out, &mut first, "issued_asset");
            out.push('{');
            let mut first_inner = true;
            if !issued.asset_code.is_empty() {
                key(out, &mut first_inner, "asset_code");
                string(out, &issued.asset_code);
            }
            if !issued.issuer.is_empty() {
                key(out, &mut first_inner, "issuer");
                string(out, &issued.issuer);
            }
            out.push('}');
        }
        None => {}
    }
    out.push('}');
}

/// RFC 3339 in UTC with a `Z`, fractional seconds only when non-zero (3, 6 or 9 digits), as the
/// protobuf JSON mapping of `Timestamp`.
pub fn rfc3339(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if nanos > 0 {
        if nanos % 1_000_000 == 0 {
            out.push_str(&format!(".{:03}", nanos / 1_000_000));
        } else if nanos % 1_000 == 0 {
            out.push_str(&format!(".{:06}", nanos / 1_000));
        } else {
            out.push_str(&format!(".{nanos:09}"));
        }
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm). Also
/// used by the components' log timestamps.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_707_246_039, 0), "2024-02-06T19:00:39Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399, 0), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(1, 500_000_000), "1970-01-01T00:00:01.500Z");
        assert_eq!(rfc3339(1, 1_000), "1970-01-01T00:00:01.000001Z");
        assert_eq!(rfc3339(1, 7), "1970-01-01T00:00:01.000000007Z");
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
        let parsed: String = serde_json::from_str(&out).expect("valid JSON string");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
