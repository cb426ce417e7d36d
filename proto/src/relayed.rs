//! `flowctl.v1.Event`s as flowctl's relay carries them: the message's encoded bytes, passed on
//! untouched, and only what the relay reads of them (the event's `type`, to filter, and its
//! `stellar_cursor`). Decoding every event into an [`Event`](crate::flowctl::v1::Event) and
//! encoding it again per edge cost the relay most of its CPU; this codec costs a scan of each
//! message's field keys (the payload is skipped, not read) and no copy of its bytes.
//!
//! Invariant: what [`RawEventCodec`] decodes is exactly what it encodes again, byte for byte.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::flowctl::v1::StellarCursor;

/// The fields of `flowctl.v1.Event` the relay reads; decoding skips every other field.
#[derive(Clone, PartialEq, Message)]
pub struct EventHead {
    /// `Event.type` (field 2), as bytes: a slice of the message, neither copied nor checked
    /// as UTF-8 (the relay only compares it).
    #[prost(bytes = "bytes", tag = "2")]
    pub r#type: Bytes,
    /// `Event.stellar_cursor` (field 8).
    #[prost(message, optional, tag = "8")]
    pub stellar_cursor: Option<StellarCursor>,
}

/// One message as received: its bytes and, for an event, its head.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub bytes: Bytes,
    pub head: EventHead,
}

impl RawEvent {
    /// The message decoded as `M` (for a call's answer, e.g. `ConsumeResponse`).
    pub fn decode_as<M: Message + Default>(&self) -> Result<M, Status> {
        M::decode(self.bytes.clone()).map_err(|e| Status::internal(e.to_string()))
    }
}

/// `message` encoded, to be sent through [`RawEventCodec`] (e.g. a `StreamRequest`).
pub fn encoded<M: Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// A gRPC codec sending encoded messages as they are and receiving [`RawEvent`]s.
#[derive(Debug, Clone, Copy)]
pub struct RawEventCodec {
    read_heads: bool,
}

impl RawEventCodec {
    /// For calls answering events: each one's head is read.
    pub fn events() -> RawEventCodec {
        RawEventCodec { read_heads: true }
    }

    /// For calls answering something else (`ConsumeResponse`): heads are left empty.
    pub fn answer() -> RawEventCodec {
        RawEventCodec { read_heads: false }
    }
}

impl Codec for RawEventCodec {
    type Encode = Bytes;
    type Decode = RawEvent;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder {
            read_heads: self.read_heads,
        }
    }
}

/// Writes a message's bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        stream_buffers()
    }
}

/// The largest HTTP/2 frame taken on a relayed stream, by flowctl and by our v1 components. A
/// sender writes each DATA frame with a system call of its own, so the 16 KiB default costs 64
/// calls per MiB.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Codec buffers of relayed streams, larger than tonic's defaults (8 KiB, and a write every
/// 32 KiB of ready messages): a stream of small events is written in 256 KiB pieces.
pub fn stream_buffers() -> BufferSettings {
    BufferSettings::new(64 << 10, 256 << 10)
}

/// Takes a message's bytes (no copy) and reads its [`EventHead`] if asked.
#[derive(Debug, Clone, Copy)]
pub struct RawDecoder {
    read_heads: bool,
}

impl Decoder for RawDecoder {
    type Item = RawEvent;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawEvent>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        let head = if self.read_heads {
            EventHead::decode(bytes.clone())
                .map_err(|e| Status::internal(format!("not a flowctl.v1.Event: {e}")))?
        } else {
            EventHead::default()
        };
        Ok(Some(RawEvent { bytes, head }))
    }

    fn buffer_settings(&self) -> BufferSettings {
        stream_buffers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowctl::v1::{ConsumeResponse, Event};
    use std::collections::HashMap;

    #[test]
    fn the_head_is_read_and_the_bytes_are_passed_on_untouched() {
        let event = Event {
            id: "e-1".into(),
            r#type: "stellar.ledger.v1".into(),
            payload: vec![9; 300],
            metadata: HashMap::from([("k".into(), "v".into())]),
            stellar_cursor: Some(StellarCursor {
                ledger_sequence: 997,
                index_in_ledger: 3,
            }),
            content_type: "application/protobuf".into(),
            ..Default::default()
        };
        let bytes = encoded(&event);
        let head = EventHead::decode(bytes.clone()).unwrap();
        assert_eq!(head.r#type, "stellar.ledger.v1".as_bytes());
        assert_eq!(
            head.stellar_cursor,
            Some(StellarCursor {
                ledger_sequence: 997,
                index_in_ledger: 3
            })
        );
        let raw = RawEvent { bytes, head };
        assert_eq!(raw.decode_as::<Event>().unwrap(), event);
        let answer = ConsumeResponse {
            events_consumed: 5,
            ..Default::default()
        };
        let raw = RawEvent {
            bytes: encoded(&answer),
            head: EventHead::default(),
        };
        assert_eq!(raw.decode_as::<ConsumeResponse>().unwrap(), answer);
    }
}
