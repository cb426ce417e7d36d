//! `stellar-ledger-processor`, under upstream's name and contract: serves
//! `flowctl.v1.ProcessorService`; `Process` takes `stellar.ledger.v1` events and answers one
//! `stellar.ledger.batch.v1` event per ledger, in ledger order, whose payload is the ledger's
//! [`LedgerBatch`](crate::batch::rows::LedgerBatch) (see [`crate::batch`] for the rows).
//!
//! Output events: type `stellar.ledger.batch.v1`, content type `application/protobuf` (as
//! upstream's), id `ledger-batch-<ledger>`, `stellar_cursor` `{ledger_sequence, 0}`, the ledger's
//! close time as `timestamp`, metadata: the input event's plus `ledger_sequence`. Settings as
//! `ttp-processor-v1` (`NETWORK_PASSPHRASE`, `WORKERS`, `PORT`, `HEALTH_PORT`, registration).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use flowctl_proto::flowctl::v1::{ComponentType, StellarCursor};
use prost::bytes::BytesMut;
use prost::Message as _;
use stellar_ttp::events::Extractor;
use stellar_xdr::LedgerCloseMeta;
use tonic::Status;

use crate::batch::ledger_batch;
use crate::component::V1Identity;
use crate::processor::{carried_metadata, ledger_processor_main, with_extractor, LedgerTransform};
use crate::wire::{put_event, Encoded, EventFields, LedgerEventIn};
use crate::{content_types, event_types};

/// How the processor describes itself (upstream's name and event types).
pub const IDENTITY: V1Identity = V1Identity {
    name: "stellar-ledger-processor",
    description: "One stellar.ledger.batch.v1 event per stellar.ledger.v1 ledger: its ledger, \
                  transactions, operations, contract events, invocations and token transfers",
    component_type: ComponentType::Processor,
    input_event_types: &[event_types::STELLAR_LEDGER],
    output_event_types: &[event_types::LEDGER_BATCH],
    metric_keys: stellar_components::processor::IDENTITY.metric_keys,
    port_variables: &["PORT"],
    default_port: stellar_components::processor::DEFAULT_LISTEN,
};

/// The transform: one batch event per ledger.
struct LedgerBatches {
    network_passphrase: String,
    component_id: String,
    extractors: Mutex<Vec<Extractor>>,
}

impl LedgerTransform for LedgerBatches {
    fn transform(
        &self,
        event: &LedgerEventIn,
        sequence: u32,
        meta: &LedgerCloseMeta,
    ) -> Result<Vec<Encoded>, Status> {
        let batch = with_extractor(&self.extractors, &self.network_passphrase, |x| {
            ledger_batch(meta, &self.network_passphrase, x)
        })
        .map_err(|e| Status::internal(format!("event {:?}: ledger {sequence}: {e:#}", event.id)))?;
        log::debug!(
            "ledger {sequence}: {} transactions, {} operations, {} token transfers",
            batch.transactions.len(),
            batch.operations.len(),
            batch.token_transfers.len()
        );
        let sequence_text = sequence.to_string();
        let mut metadata = carried_metadata(event, &["ledger_sequence"]);
        metadata.push(("ledger_sequence", &sequence_text));
        let id = format!("ledger-batch-{sequence}");
        let fields = EventFields {
            id: &id,
            r#type: event_types::LEDGER_BATCH,
            metadata: &metadata,
            timestamp: Some((batch.closed_at_unix, 0)),
            source_component_id: &self.component_id,
            content_type: content_types::LEDGER_BATCH,
            stellar_cursor: Some(StellarCursor {
                ledger_sequence: u64::from(sequence),
                index_in_ledger: 0,
            }),
        };
        let mut buf = BytesMut::with_capacity(batch.encoded_len() + 256);
        put_event(&mut buf, &fields, &batch);
        Ok(vec![Encoded(buf.freeze())])
    }
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    ledger_processor_main(&IDENTITY, args, |config, component_id| {
        Arc::new(LedgerBatches {
            network_passphrase: config.network_passphrase.clone(),
            component_id: component_id.to_string(),
            extractors: Mutex::default(),
        })
    })
}
