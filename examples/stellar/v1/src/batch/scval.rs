//! Soroban values (`ScVal`) as JSON for the `*_json` columns of the batch rows: each value is an
//! object with one key naming its type (stellar-xdr's names, snake case) and its value, so
//! nothing is lost and a reader can tell `u32` 5 from `i128` 5. Integers that do not fit a
//! JSON number exactly (64 bits and more) are decimal strings; 256-bit integers are `0x` hex;
//! bytes are hex; symbols and strings are text (invalid UTF-8 replaced); addresses are strkeys.
//!
//! `{"symbol":"transfer"}`, `{"address":"GA..."}`, `{"i128":"-5"}`, `{"vec":[...]}`,
//! `{"map":[{"key":...,"val":...}]}`, `{"void":null}`.

use serde_json::{json, Value};
use stellar_ttp::events::{hex, sc_address_strkey};
use stellar_xdr::{ContractExecutable, ScVal};

/// The JSON of one value.
pub fn to_json(value: &ScVal) -> Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match value {
        ScVal::Bool(b) => json!({ "bool": b }),
        ScVal::Void => json!({ "void": null }),
        ScVal::Error(e) => json!({ "error": format!("{}", e.name()) }),
        ScVal::U32(n) => json!({ "u32": n }),
        ScVal::I32(n) => json!({ "i32": n }),
        ScVal::U64(n) => json!({ "u64": n.to_string() }),
        ScVal::I64(n) => json!({ "i64": n.to_string() }),
        ScVal::Timepoint(t) => json!({ "timepoint": t.0.to_string() }),
        ScVal::Duration(d) => json!({ "duration": d.0.to_string() }),
        ScVal::U128(p) => {
            json!({ "u128": ((u128::from(p.hi) << 64) | u128::from(p.lo)).to_string() })
        }
        ScVal::I128(p) => {
            json!({ "i128": ((i128::from(p.hi) << 64) | i128::from(p.lo)).to_string() })
        }
        ScVal::U256(p) => json!({
            "u256": format!("0x{:016x}{:016x}{:016x}{:016x}", p.hi_hi, p.hi_lo, p.lo_hi, p.lo_lo)
        }),
        ScVal::I256(p) => json!({
            "i256": format!("0x{:016x}{:016x}{:016x}{:016x}", p.hi_hi, p.hi_lo, p.lo_hi, p.lo_lo)
        }),
        ScVal::Bytes(b) => json!({ "bytes": hex(b.as_slice()) }),
        ScVal::String(s) => json!({ "string": text(s.as_slice()) }),
        ScVal::Symbol(s) => json!({ "symbol": text(s.as_slice()) }),
        ScVal::Vec(None) => json!({ "vec": null }),
        ScVal::Vec(Some(items)) => json!({ "vec": items.iter().map(to_json).collect::<Vec<_>>() }),
        ScVal::Map(None) => json!({ "map": null }),
        ScVal::Map(Some(map)) => json!({
            "map": map
                .iter()
                .map(|entry| json!({ "key": to_json(&entry.key), "val": to_json(&entry.val) }))
                .collect::<Vec<_>>()
        }),
        ScVal::Address(a) => json!({ "address": sc_address_strkey(a) }),
        ScVal::ContractInstance(instance) => {
            let executable = match &instance.executable {
                ContractExecutable::Wasm(hash) => json!({ "wasm": hex(&hash.0) }),
                ContractExecutable::StellarAsset => json!("stellar_asset"),
                other => json!(other.name()),
            };
            json!({ "contract_instance": { "executable": executable } })
        }
        ScVal::LedgerKeyContractInstance => json!({ "ledger_key_contract_instance": null }),
        ScVal::LedgerKeyNonce(nonce) => json!({ "ledger_key_nonce": nonce.nonce.to_string() }),
        ScVal::ExecutableTag(tag) => json!({ "executable_tag": text(tag.as_slice()) }),
    }
}

/// A list of values (topics, arguments) as a JSON array, as text.
pub fn list_json(values: &[ScVal]) -> String {
    Value::Array(values.iter().map(to_json).collect()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{Int128Parts, ScSymbol, ScVec};

    #[test]
    fn values_name_their_type_and_wide_integers_are_strings() {
        let vec: ScVec = vec![
            ScVal::Symbol(ScSymbol("transfer".try_into().unwrap())),
            ScVal::I128(Int128Parts {
                hi: -1,
                lo: u64::MAX - 4,
            }),
            ScVal::U32(7),
            ScVal::Void,
        ]
        .try_into()
        .unwrap();
        assert_eq!(
            list_json(&vec),
            r#"[{"symbol":"transfer"},{"i128":"-5"},{"u32":7},{"void":null}]"#
        );
        assert_eq!(
            to_json(&ScVal::I128(Int128Parts { hi: 1, lo: 0 })).to_string(),
            r#"{"i128":"18446744073709551616"}"#
        );
    }
}
