//! The entry-header record (kind 2): written before the records of each replicated entry.
//!
//! Payload, fixed part 48 bytes (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind = 2 |
//! | 1 | 1 | entry kind: 0 data, 1 blank, 2 membership |
//! | 2 | 2 | reserved, 0 |
//! | 4 | 4 | inline length `I` (the membership, carried in this record) |
//! | 8 | 8 | term |
//! | 16 | 8 | leader node ID |
//! | 24 | 8 | index |
//! | 32 | 8 | body length: bytes of records that follow this one and belong to the entry |
//! | 40 | 8 | reserved, 0 |
//! | 48 | I | inline bytes |

use bytes::Bytes;

use crate::record::{FrameError, EVENT_FIXED, FRAME_OVERHEAD, MAX_PAYLOAD};

pub const KIND_ENTRY: u8 = 2;

/// A replicated entry's identity: the term and node of the leader that created it, and its
/// place in the replicated log (dense, from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPayload {
    /// A writer batch: framed event records, each append ending with a commit record.
    Data(Bytes),
    /// Nothing (each new leader writes one).
    Blank,
    /// The cluster membership, opaque to the engine.
    Membership(Bytes),
}

/// One replicated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub id: EntryId,
    pub payload: EntryPayload,
}

impl LogEntry {
    /// Bytes the entry takes in the log: its header record plus its body.
    pub fn encoded_len(&self) -> u64 {
        let (inline, body) = self.parts();
        (FRAME_OVERHEAD + EVENT_FIXED + inline.len() + body.len()) as u64
    }

    fn parts(&self) -> (&[u8], &[u8]) {
        match &self.payload {
            EntryPayload::Data(b) => (&[], b),
            EntryPayload::Blank => (&[], &[]),
            EntryPayload::Membership(m) => (m, &[]),
        }
    }

    /// Appends the header record and the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (inline, body) = self.parts();
        let kind = match self.payload {
            EntryPayload::Data(_) => 0u8,
            EntryPayload::Blank => 1,
            EntryPayload::Membership(_) => 2,
        };
        let len = EVENT_FIXED + inline.len();
        out.reserve(len + FRAME_OVERHEAD + body.len());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        let crc_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.extend_from_slice(&[KIND_ENTRY, kind, 0, 0]);
        out.extend_from_slice(&(inline.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.id.term.to_le_bytes());
        out.extend_from_slice(&self.id.node.to_le_bytes());
        out.extend_from_slice(&self.id.index.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(inline);
        let crc = crc32fast::hash(&out[start..]);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(body);
    }
}

impl LogEntry {
    /// The entry from its encoded form ([`LogEntry::encode`]), as a peer sends it: the header
    /// record is checked here, a data body when it is appended.
    pub fn decode(bytes: Bytes) -> Result<LogEntry, String> {
        let (payload, total) =
            crate::record::check_frame(&bytes).map_err(|e| format!("entry header: {e:?}"))?;
        let h = parse_entry_header(&bytes, payload).map_err(|e| format!("entry header: {e:?}"))?;
        let body = bytes.slice(total..);
        if body.len() as u64 != h.body_len {
            return Err(format!(
                "entry {} has a body of {} bytes, but its header says {}",
                h.id.index,
                body.len(),
                h.body_len
            ));
        }
        Ok(h.into_entry(body))
    }
}

/// A decoded entry header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub id: EntryId,
    /// 0 data, 1 blank, 2 membership.
    pub kind: u8,
    pub inline: Bytes,
    pub body_len: u64,
}

impl EntryHeader {
    /// The entry, given its body (the `body_len` bytes after the header record).
    pub fn into_entry(self, body: Bytes) -> LogEntry {
        let payload = match self.kind {
            0 => EntryPayload::Data(body),
            1 => EntryPayload::Blank,
            _ => EntryPayload::Membership(self.inline),
        };
        LogEntry {
            id: self.id,
            payload,
        }
    }
}

/// Whether a checked payload is an entry header rather than an event.
pub fn is_entry_header(payload: &[u8]) -> bool {
    payload.first() == Some(&KIND_ENTRY)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses an entry-header payload (`payload` is a slice of `block`, so the inline bytes are
/// not copied).
pub fn parse_entry_header(
    block: &Bytes,
    payload: std::ops::Range<usize>,
) -> Result<EntryHeader, FrameError> {
    let p = &block[payload.clone()];
    if p.len() < EVENT_FIXED || p[0] != KIND_ENTRY {
        return Err(FrameError::Invalid("not an entry header".into()));
    }
    let kind = p[1];
    if kind > 2 {
        return Err(FrameError::Invalid(format!("unknown entry kind {kind}")));
    }
    let inline = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes")) as usize;
    if EVENT_FIXED + inline != p.len() || (inline > 0 && kind != 2) {
        return Err(FrameError::Invalid(format!(
            "entry header of {} bytes with {inline} inline bytes",
            p.len()
        )));
    }
    let body_len = u64_at(p, 32);
    if (kind != 0 && body_len != 0) || body_len > MAX_PAYLOAD as u64 * 4 {
        return Err(FrameError::Invalid(format!(
            "entry of kind {kind} with a body of {body_len} bytes"
        )));
    }
    Ok(EntryHeader {
        id: EntryId {
            term: u64_at(p, 8),
            node: u64_at(p, 16),
            index: u64_at(p, 24),
        },
        kind,
        inline: block.slice(payload.start + EVENT_FIXED..payload.end),
        body_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::check_frame;

    fn round_trip(e: LogEntry) {
        let mut out = Vec::new();
        e.encode(&mut out);
        assert_eq!(out.len() as u64, e.encoded_len());
        let (payload, total) = check_frame(&out).unwrap();
        let block = Bytes::from(out);
        let h = parse_entry_header(&block, payload).unwrap();
        assert_eq!(total as u64 + h.body_len, e.encoded_len());
        let body = block.slice(total..);
        assert_eq!(h.into_entry(body), e);
        assert_eq!(LogEntry::decode(block.clone()).unwrap(), e);
        assert!(LogEntry::decode(block.slice(..block.len() - 1)).is_err());
    }

    #[test]
    fn every_kind_round_trips() {
        let id = EntryId {
            term: 3,
            node: 2,
            index: 41,
        };
        round_trip(LogEntry {
            id,
            payload: EntryPayload::Blank,
        });
        round_trip(LogEntry {
            id,
            payload: EntryPayload::Membership(Bytes::from_static(b"{\"voters\":[1,2,3]}")),
        });
        round_trip(LogEntry {
            id,
            payload: EntryPayload::Data(Bytes::from(vec![7u8; 300])),
        });
    }

    #[test]
    fn a_flipped_header_byte_is_detected() {
        let mut good = Vec::new();
        LogEntry {
            id: EntryId {
                term: 1,
                node: 1,
                index: 0,
            },
            payload: EntryPayload::Membership(Bytes::from_static(b"m")),
        }
        .encode(&mut good);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(
                check_frame(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }
}
