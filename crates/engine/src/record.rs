//! Record framing and the event record encoding (see `docs/storage-format.md`).
//!
//! A frame is `len:u32 | crc:u32 | payload[len] | len:u32`, little-endian, where `crc` is the
//! CRC32 (IEEE) of the payload. The trailing length lets readers walk the log backwards.

use bytes::Bytes;
use uuid::Uuid;

use crate::types::{ContentType, RecordedEvent};

/// Bytes a frame adds around its payload.
pub const FRAME_OVERHEAD: usize = 12;
/// Size of the fixed part of an event payload.
pub const EVENT_FIXED: usize = 48;
/// Upper bound on one payload; anything larger is treated as corruption when reading.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

pub const KIND_EVENT: u8 = 1;
/// Set on the last record of an append: the append is complete once this record is present.
pub const FLAG_COMMIT: u8 = 0b01;
/// Set when the event's content type is binary (clear: JSON).
pub const FLAG_BINARY: u8 = 0b10;

/// What a frame check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the frame needs: at the end of the log this is a torn write.
    Truncated,
    /// Length fields, CRC or payload layout disagree.
    Invalid(String),
}

/// Encoded size of an event record, frame included.
pub fn framed_len(stream: &str, event_type: &str, data_len: usize, meta_len: usize) -> usize {
    FRAME_OVERHEAD + EVENT_FIXED + stream.len() + event_type.len() + data_len + meta_len
}

/// Fields of an event record to encode.
pub struct EventRecord<'a> {
    pub commit: bool,
    pub content_type: ContentType,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub revision: u64,
    pub timestamp_ns: i64,
    pub event_id: Uuid,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

/// Appends the framed record to `out`.
pub fn encode_event(out: &mut Vec<u8>, r: &EventRecord<'_>) {
    let payload_len =
        EVENT_FIXED + r.stream.len() + r.event_type.len() + r.data.len() + r.metadata.len();
    out.reserve(payload_len + FRAME_OVERHEAD);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    let mut flags = 0;
    if r.commit {
        flags |= FLAG_COMMIT;
    }
    if r.content_type == ContentType::Binary {
        flags |= FLAG_BINARY;
    }
    out.push(KIND_EVENT);
    out.push(flags);
    out.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
    out.extend_from_slice(&(r.event_type.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&r.revision.to_le_bytes());
    out.extend_from_slice(&r.timestamp_ns.to_le_bytes());
    out.extend_from_slice(r.event_id.as_bytes());
    out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(r.metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(r.stream.as_bytes());
    out.extend_from_slice(r.event_type.as_bytes());
    out.extend_from_slice(r.data);
    out.extend_from_slice(r.metadata);
    let crc = crc32fast::hash(&out[start..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the frame at the start of `buf`; returns the payload range and the frame length.
pub fn check_frame(buf: &[u8]) -> Result<(std::ops::Range<usize>, usize), FrameError> {
    if buf.len() < 8 {
        return Err(FrameError::Truncated);
    }
    let len = u32_at(buf, 0) as usize;
    if !(EVENT_FIXED..=MAX_PAYLOAD).contains(&len) {
        return Err(FrameError::Invalid(format!(
            "record length {len} is out of range"
        )));
    }
    let total = len + FRAME_OVERHEAD;
    if buf.len() < total {
        return Err(FrameError::Truncated);
    }
    let suffix = u32_at(buf, 8 + len) as usize;
    if suffix != len {
        return Err(FrameError::Invalid(format!(
            "record length {len} does not match trailing length {suffix}"
        )));
    }
    let crc = u32_at(buf, 4);
    let actual = crc32fast::hash(&buf[8..8 + len]);
    if crc != actual {
        return Err(FrameError::Invalid(format!(
            "CRC mismatch (stored {crc:#010x}, computed {actual:#010x})"
        )));
    }
    Ok((8..8 + len, total))
}

/// The decoded header of an event payload, without copying the bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    pub flags: u8,
    pub revision: u64,
    pub timestamp_ns: i64,
    pub event_id: Uuid,
    stream_len: usize,
    type_len: usize,
    data_len: usize,
    meta_len: usize,
}

impl EventHeader {
    pub fn is_commit(&self) -> bool {
        self.flags & FLAG_COMMIT != 0
    }
}

/// Parses an event payload's fixed part and checks that its lengths add up.
pub fn parse_header(payload: &[u8]) -> Result<EventHeader, FrameError> {
    if payload.len() < EVENT_FIXED {
        return Err(FrameError::Invalid(
            "payload shorter than the event header".into(),
        ));
    }
    if payload[0] == crate::replica::header::KIND_ENTRY {
        return Err(FrameError::Invalid(
            "an entry header of a cluster node's log where an event was expected (a cluster node's data directory opened as a single node?)".into(),
        ));
    }
    if payload[0] != KIND_EVENT {
        return Err(FrameError::Invalid(format!(
            "unknown record kind {}",
            payload[0]
        )));
    }
    let h = EventHeader {
        flags: payload[1],
        stream_len: u16_at(payload, 2) as usize,
        type_len: u16_at(payload, 4) as usize,
        revision: u64_at(payload, 8),
        timestamp_ns: u64_at(payload, 16) as i64,
        event_id: Uuid::from_bytes(payload[24..40].try_into().expect("16 bytes")),
        data_len: u32_at(payload, 40) as usize,
        meta_len: u32_at(payload, 44) as usize,
    };
    let expected = EVENT_FIXED + h.stream_len + h.type_len + h.data_len + h.meta_len;
    if expected != payload.len() {
        return Err(FrameError::Invalid(format!(
            "payload is {} bytes but its fields add up to {expected}",
            payload.len()
        )));
    }
    Ok(h)
}

/// The stream name of a parsed payload.
pub fn stream_of<'a>(payload: &'a [u8], h: &EventHeader) -> Result<&'a str, FrameError> {
    let at = EVENT_FIXED;
    std::str::from_utf8(&payload[at..at + h.stream_len])
        .map_err(|_| FrameError::Invalid("stream name is not UTF-8".into()))
}

/// The event type of a parsed payload.
pub fn type_of<'a>(payload: &'a [u8], h: &EventHeader) -> Result<&'a str, FrameError> {
    let at = EVENT_FIXED + h.stream_len;
    std::str::from_utf8(&payload[at..at + h.type_len])
        .map_err(|_| FrameError::Invalid("event type is not UTF-8".into()))
}

/// Decodes a whole event. `payload` is a slice of `block` (shared, so bodies are not copied).
pub fn decode_event(
    block: &Bytes,
    payload: std::ops::Range<usize>,
    position: u64,
) -> Result<RecordedEvent, FrameError> {
    let p = &block[payload.clone()];
    let h = parse_header(p)?;
    let stream = stream_of(p, &h)?.to_owned();
    let event_type = type_of(p, &h)?.to_owned();
    let data_at = payload.start + EVENT_FIXED + h.stream_len + h.type_len;
    let meta_at = data_at + h.data_len;
    Ok(RecordedEvent {
        stream,
        revision: h.revision,
        position,
        timestamp_ns: h.timestamp_ns,
        event_id: h.event_id,
        event_type,
        data: block.slice(data_at..meta_at),
        metadata: block.slice(meta_at..meta_at + h.meta_len),
        content_type: if h.flags & FLAG_BINARY != 0 {
            ContentType::Binary
        } else {
            ContentType::Json
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(commit: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_event(
            &mut out,
            &EventRecord {
                commit,
                content_type: ContentType::Binary,
                stream: "orders-1",
                event_type: "Placed",
                revision: 7,
                timestamp_ns: 1_700_000_000_000_000_000,
                event_id: Uuid::from_u128(42),
                data: b"{\"a\":1}",
                metadata: b"meta",
            },
        );
        out
    }

    #[test]
    fn round_trip() {
        let buf = sample(true);
        assert_eq!(buf.len(), framed_len("orders-1", "Placed", 7, 4));
        let (payload, total) = check_frame(&buf).unwrap();
        assert_eq!(total, buf.len());
        let block = Bytes::from(buf);
        let e = decode_event(&block, payload.clone(), 99).unwrap();
        assert_eq!(e.stream, "orders-1");
        assert_eq!(e.revision, 7);
        assert_eq!(e.position, 99);
        assert_eq!(e.event_id, Uuid::from_u128(42));
        assert_eq!(&e.data[..], b"{\"a\":1}");
        assert_eq!(&e.metadata[..], b"meta");
        assert_eq!(e.content_type, ContentType::Binary);
        assert!(parse_header(&block[payload]).unwrap().is_commit());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let good = sample(false);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(
                check_frame(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_prefix_is_truncated_or_invalid() {
        let good = sample(true);
        for cut in 0..good.len() {
            assert!(
                check_frame(&good[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
    }
}
