//! The token transfer events a correct processor must produce for the generated ledgers, built
//! from the generation model (what each generated transaction *means*) by the rules of the
//! upstream stellar/go `processors/token_transfer`, and written as JSON lines in the shape of
//! `examples/ledgers/testnet-997-999/expected-events-997-998.jsonl`.

use std::fmt::Write as _;

/// An asset as the events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAsset {
    Native,
    Issued { code: String, issuer: String },
}

/// The destination's mux id or the transaction memo (`EventMeta.to_muxed_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxedInfo {
    Text(String),
    Id(u64),
}

/// What happened, with the fields of the proto message of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Transfer { from: String, to: String },
    Mint { to: String },
    Burn { from: String },
    Clawback { from: String },
    Fee { from: String },
}

impl Kind {
    /// The proto oneof field name of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Transfer { .. } => "transfer",
            Kind::Mint { .. } => "mint",
            Kind::Burn { .. } => "burn",
            Kind::Clawback { .. } => "clawback",
            Kind::Fee { .. } => "fee",
        }
    }
}

/// One expected event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub ledger: u32,
    pub closed_at: u64,
    pub tx_hash: [u8; 32],
    /// 1-based position of the transaction in the ledger's apply order.
    pub tx_index: u32,
    /// 1-based operation index; `None` for fee events.
    pub op_index: Option<u32>,
    /// The asset's Stellar Asset Contract (C… strkey).
    pub contract: String,
    pub muxed: Option<MuxedInfo>,
    pub kind: Kind,
    pub asset: EventAsset,
    /// Signed stroops (a fee refund is negative).
    pub amount: i64,
}

impl Event {
    /// The event as one JSON line (no newline): proto field names in field order, unset fields
    /// omitted, `", "`/`": "` separators like the upstream sample.
    pub fn to_json_line(&self) -> String {
        let mut out = String::with_capacity(480);
        out.push_str("{\"meta\": {\"ledger_sequence\": ");
        let _ = write!(out, "{}", self.ledger);
        out.push_str(", \"closed_at\": ");
        json_str(&mut out, &rfc3339(self.closed_at));
        out.push_str(", \"tx_hash\": ");
        json_str(&mut out, &hex(&self.tx_hash));
        let _ = write!(out, ", \"transaction_index\": {}", self.tx_index);
        if let Some(op) = self.op_index {
            let _ = write!(out, ", \"operation_index\": {op}");
        }
        out.push_str(", \"contract_address\": ");
        json_str(&mut out, &self.contract);
        match &self.muxed {
            Some(MuxedInfo::Text(text)) => {
                out.push_str(", \"to_muxed_info\": {\"text\": ");
                json_str(&mut out, text);
                out.push('}');
            }
            // uint64 is a string in the protobuf JSON mapping.
            Some(MuxedInfo::Id(id)) => {
                let _ = write!(out, ", \"to_muxed_info\": {{\"id\": \"{id}\"}}");
            }
            None => {}
        }
        let _ = write!(out, "}}, \"{}\": {{", self.kind.name());
        match &self.kind {
            Kind::Transfer { from, to } => {
                out.push_str("\"from\": ");
                json_str(&mut out, from);
                out.push_str(", \"to\": ");
                json_str(&mut out, to);
            }
            Kind::Mint { to } => {
                out.push_str("\"to\": ");
                json_str(&mut out, to);
            }
            Kind::Burn { from } | Kind::Clawback { from } | Kind::Fee { from } => {
                out.push_str("\"from\": ");
                json_str(&mut out, from);
            }
        }
        out.push_str(", \"asset\": ");
        match &self.asset {
            EventAsset::Native => out.push_str("{\"native\": true}"),
            EventAsset::Issued { code, issuer } => {
                out.push_str("{\"issued_asset\": {\"asset_code\": ");
                json_str(&mut out, code);
                out.push_str(", \"issuer\": ");
                json_str(&mut out, issuer);
                out.push_str("}}");
            }
        }
        let _ = write!(out, ", \"amount\": \"{}\"}}}}", self.amount);
        out
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A JSON string literal. Generated text is ASCII, but escape what JSON requires anyway.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Unix seconds as RFC 3339 UTC with `Z` (whole seconds, as ledger close times are).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        // closed_at of testnet ledger 997 in the upstream sample.
        assert_eq!(rfc3339(1_707_246_039), "2024-02-06T19:00:39Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_line_has_the_upstream_shape() {
        let line = Event {
            ledger: 997,
            closed_at: 1_707_246_039,
            tx_hash: [0xab; 32],
            tx_index: 1,
            op_index: None,
            contract: "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC".into(),
            muxed: None,
            kind: Kind::Fee {
                from: "GDB6H4XQL3PJ6PKD754FTXCDD2L3HQPWZ4PL7HENIVFV2N7VFUTOE2DF".into(),
            },
            asset: EventAsset::Native,
            amount: 100,
        }
        .to_json_line();
        let expected = format!(
            "{{\"meta\": {{\"ledger_sequence\": 997, \"closed_at\": \"2024-02-06T19:00:39Z\", \
             \"tx_hash\": \"{}\", \"transaction_index\": 1, \"contract_address\": \
             \"CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC\"}}, \"fee\": {{\"from\": \
             \"GDB6H4XQL3PJ6PKD754FTXCDD2L3HQPWZ4PL7HENIVFV2N7VFUTOE2DF\", \"asset\": \
             {{\"native\": true}}, \"amount\": \"100\"}}}}",
            "ab".repeat(32)
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn muxed_info_and_issued_assets_render_as_protobuf_json() {
        let line = Event {
            ledger: 5,
            closed_at: 0,
            tx_hash: [0; 32],
            tx_index: 2,
            op_index: Some(3),
            contract: "C".into(),
            muxed: Some(MuxedInfo::Id(42)),
            kind: Kind::Transfer {
                from: "GA".into(),
                to: "GB".into(),
            },
            asset: EventAsset::Issued {
                code: "USDC".into(),
                issuer: "GI".into(),
            },
            amount: 7,
        }
        .to_json_line();
        assert!(line.contains(
            "\"operation_index\": 3, \"contract_address\": \"C\", \"to_muxed_info\": {\"id\": \"42\"}}"
        ));
        assert!(line.ends_with(
            "\"transfer\": {\"from\": \"GA\", \"to\": \"GB\", \"asset\": {\"issued_asset\": \
             {\"asset_code\": \"USDC\", \"issuer\": \"GI\"}}, \"amount\": \"7\"}}"
        ));
    }
}
