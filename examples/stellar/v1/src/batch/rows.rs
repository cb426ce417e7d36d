//! `stellar.components.v1.LedgerBatch`, the payload of `stellar.ledger.batch.v1` events, as
//! upstream's `proto/stellar/components/v1/ledger_batch.proto` (obsrvr-stellar-components)
//! defines it: same messages, field names and numbers, so upstream's sinks read what
//! `stellar-ledger-processor` writes here and ours read upstream's.
//!
//! Each message also serializes as protobuf JSON the way upstream's `jsonl-sink` writes it
//! (`protojson` with `EmitUnpopulated`): lowerCamelCase names in field order, every field present,
//! 64-bit integers as strings.

use serde::{Serialize, Serializer};

fn int64_string<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// One ledger's rows (`LedgerBatch`).
#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerBatch {
    #[prost(string, tag = "1")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "2")]
    pub ledger_sequence: u32,
    #[prost(int64, tag = "3")]
    #[serde(serialize_with = "int64_string")]
    pub closed_at_unix: i64,
    #[prost(string, tag = "4")]
    pub schema_version: String,
    #[prost(string, tag = "5")]
    pub extraction_version: String,
    #[prost(message, repeated, tag = "10")]
    pub ledgers: Vec<LedgerRow>,
    #[prost(message, repeated, tag = "11")]
    pub transactions: Vec<TransactionRow>,
    #[prost(message, repeated, tag = "12")]
    pub operations: Vec<OperationRow>,
    #[prost(message, repeated, tag = "13")]
    pub contract_events: Vec<ContractEventRow>,
    #[prost(message, repeated, tag = "14")]
    pub contract_invocations: Vec<ContractInvocationRow>,
    #[prost(message, repeated, tag = "15")]
    pub token_transfers: Vec<TokenTransferRow>,
    #[prost(message, repeated, tag = "16")]
    pub account_effects: Vec<AccountEffectRow>,
    /// Upstream's JSON rows of its bronze tables; this processor writes none.
    #[prost(message, repeated, tag = "100")]
    pub bronze_rows: Vec<BronzeRow>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "3")]
    pub ledger_sequence: u32,
    #[prost(int64, tag = "4")]
    #[serde(serialize_with = "int64_string")]
    pub closed_at_unix: i64,
    #[prost(string, tag = "5")]
    pub ledger_hash: String,
    #[prost(string, tag = "6")]
    pub previous_ledger_hash: String,
    #[prost(uint32, tag = "7")]
    pub protocol_version: u32,
    #[prost(uint32, tag = "8")]
    pub transaction_count: u32,
    #[prost(string, tag = "9")]
    pub schema_version: String,
    #[prost(string, tag = "10")]
    pub extraction_version: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "3")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "4")]
    pub transaction_index: u32,
    #[prost(string, tag = "5")]
    pub transaction_hash: String,
    #[prost(bool, tag = "6")]
    pub successful: bool,
    #[prost(string, tag = "7")]
    pub envelope_xdr: String,
    #[prost(string, tag = "8")]
    pub result_xdr: String,
    #[prost(string, tag = "9")]
    pub meta_xdr: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub transaction_id: String,
    #[prost(string, tag = "3")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "4")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "5")]
    pub transaction_index: u32,
    #[prost(uint32, tag = "6")]
    pub operation_index: u32,
    #[prost(string, tag = "7")]
    pub operation_type: String,
    #[prost(string, tag = "8")]
    pub operation_xdr: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractEventRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub transaction_id: String,
    #[prost(string, tag = "3")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "4")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "5")]
    pub transaction_index: u32,
    #[prost(uint32, tag = "6")]
    pub event_index: u32,
    #[prost(string, tag = "7")]
    pub contract_id: String,
    #[prost(string, tag = "8")]
    pub topic_json: String,
    #[prost(string, tag = "9")]
    pub value_json: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractInvocationRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub transaction_id: String,
    #[prost(string, tag = "3")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "4")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "5")]
    pub transaction_index: u32,
    #[prost(uint32, tag = "6")]
    pub invocation_index: u32,
    #[prost(string, tag = "7")]
    pub contract_id: String,
    #[prost(string, tag = "8")]
    pub function_name: String,
    #[prost(string, tag = "9")]
    pub arguments_json: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTransferRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub transaction_id: String,
    #[prost(string, tag = "3")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "4")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "5")]
    pub transaction_index: u32,
    #[prost(uint32, tag = "6")]
    pub operation_index: u32,
    #[prost(string, tag = "7")]
    pub asset_code: String,
    #[prost(string, tag = "8")]
    pub asset_issuer: String,
    #[prost(string, tag = "9")]
    pub from_account: String,
    #[prost(string, tag = "10")]
    pub to_account: String,
    #[prost(string, tag = "11")]
    pub amount: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountEffectRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub transaction_id: String,
    #[prost(string, tag = "3")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "4")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "5")]
    pub transaction_index: u32,
    #[prost(uint32, tag = "6")]
    pub operation_index: u32,
    #[prost(string, tag = "7")]
    pub account_id: String,
    #[prost(string, tag = "8")]
    pub effect_type: String,
    #[prost(string, tag = "9")]
    pub effect_json: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BronzeRow {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub table_name: String,
    #[prost(string, tag = "3")]
    pub network_passphrase: String,
    #[prost(uint32, tag = "4")]
    pub ledger_sequence: u32,
    #[prost(uint32, tag = "5")]
    pub ledger_range: u32,
    #[prost(string, tag = "6")]
    pub row_json: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn json_is_protojson_with_every_field_and_int64_as_strings() {
        let batch = LedgerBatch {
            network_passphrase: "n".into(),
            ledger_sequence: 7,
            closed_at_unix: 1_700_000_000,
            ledgers: vec![LedgerRow::default()],
            ..LedgerBatch::default()
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(
            json.starts_with(
                r#"{"networkPassphrase":"n","ledgerSequence":7,"closedAtUnix":"1700000000","schemaVersion":"","extractionVersion":"","ledgers":[{"id":"","#
            ),
            "{json}"
        );
        assert!(
            json.ends_with(r#""accountEffects":[],"bronzeRows":[]}"#),
            "{json}"
        );
    }

    #[test]
    fn field_numbers_are_upstreams() {
        // LedgerBatch.ledger_sequence = 2 (varint), transactions = 11 (length-delimited).
        let batch = LedgerBatch {
            ledger_sequence: 5,
            transactions: vec![TransactionRow {
                successful: true,
                ..TransactionRow::default()
            }],
            ..LedgerBatch::default()
        };
        assert_eq!(batch.encode_to_vec(), [0x10, 5, 0x5a, 2, 0x30, 1]);
    }
}
