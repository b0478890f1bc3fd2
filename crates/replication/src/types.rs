//! The openraft type configuration, and conversions between openraft's entries and the
//! engine's.

use std::fmt;
use std::io;

use bytes::Bytes;
use strata_engine::replica::{EntryId, EntryPayload as Payload, LogEntry};

/// A writer batch (framed event records), replicated as one entry's data.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch(pub Bytes);

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} bytes", self.0.len())
    }
}

impl serde::Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Ok(Batch(Bytes::from(v)))
    }
}

openraft::declare_raft_types!(
    /// Strata's Raft types: node IDs are `u64`, entries carry writer batches, and applying an
    /// entry answers with the log position where its body starts.
    pub TypeConfig:
        D = Batch,
        R = u64,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

pub type LogId = openraft::LogId<openraft::impls::leader_id_adv::LeaderId<u64, u64>>;
pub type Entry = openraft::Entry<openraft::impls::leader_id_adv::LeaderId<u64, u64>, RaftPayload>;
pub type RaftPayload = openraft::EntryPayload<Batch, u64, openraft::impls::BasicNode>;
pub type Vote = openraft::impls::Vote<openraft::impls::leader_id_adv::LeaderId<u64, u64>>;
pub type Membership = openraft::Membership<u64, openraft::impls::BasicNode>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;

pub fn log_id(id: EntryId) -> LogId {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term: id.term,
            node_id: id.node,
        },
        id.index,
    )
}

pub fn entry_id(id: &LogId) -> EntryId {
    EntryId {
        term: id.leader_id.term,
        node: id.leader_id.node_id,
        index: id.index,
    }
}

/// An I/O error for openraft, from an engine error.
pub fn io_err(e: impl fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The engine's form of an openraft entry (a membership is kept as JSON).
pub fn to_engine(e: &Entry) -> io::Result<LogEntry> {
    let payload = match &e.payload {
        openraft::EntryPayload::Blank => Payload::Blank,
        openraft::EntryPayload::Normal(b) => Payload::Data(b.0.clone()),
        openraft::EntryPayload::Membership(m) => {
            Payload::Membership(Bytes::from(serde_json::to_vec(m).map_err(io_err)?))
        }
    };
    Ok(LogEntry {
        id: entry_id(&e.log_id),
        payload,
    })
}

/// openraft's form of an engine entry.
pub fn from_engine(e: LogEntry) -> io::Result<Entry> {
    let payload = match e.payload {
        Payload::Blank => openraft::EntryPayload::Blank,
        Payload::Data(b) => openraft::EntryPayload::Normal(Batch(b)),
        Payload::Membership(m) => {
            openraft::EntryPayload::Membership(serde_json::from_slice(&m).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("membership entry {} is not readable: {err}", e.id.index),
                )
            })?)
        }
    };
    Ok(Entry {
        log_id: log_id(e.id),
        payload,
    })
}
