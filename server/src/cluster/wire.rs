//! How openraft's messages travel between nodes: JSON for requests and answers, the log's
//! own binary form for entries (see `proto/strata/cluster/v1/raft.proto`).

use bytes::Bytes;
use strata_engine::replica::LogEntry;
use strata_proto::cluster::{AppendRequest, Reply};
use strata_replication::types::{from_engine, to_engine};
use strata_replication::TypeConfig;

type AppendEntries = openraft::raft::AppendEntriesRequest<TypeConfig>;

/// Largest total of entry bytes sent in one AppendEntries call. openraft bounds a call by its
/// number of entries only, and one entry (a writer batch) can be tens of MiB, so a lagging
/// follower could be sent more than the receiver accepts (256 MiB) and never catch up. The
/// rest is sent by the next call (see `Sent::Partial`).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The slowest transfer rate between nodes an AppendEntries call is given time for.
const MIN_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;

/// How long an AppendEntries call carrying `bytes` of entries may take. openraft gives every
/// call one heartbeat interval (`ttl`), which an empty call needs; a call carrying MiBs
/// cannot be sent, written and answered that fast, and would time out at every retry, so a
/// lagging follower would never catch up. Time for the bytes is added.
pub fn append_timeout(ttl: std::time::Duration, bytes: usize) -> std::time::Duration {
    ttl + std::time::Duration::from_millis(bytes as u64 * 1000 / MIN_BYTES_PER_SEC)
}

/// Largest total of entry bytes in one part of a snapshot transfer (a part holds at least
/// one entry, whatever its size).
pub const SNAPSHOT_PART_BYTES: usize = 4 * 1024 * 1024;

/// What an encoded request carries of the entries it was given.
#[derive(Debug, PartialEq)]
pub enum Sent {
    All,
    /// Only the entries up to this one; the replication stream goes on after it.
    Partial(openraft::type_config::alias::LogIdOf<TypeConfig>),
}

/// Encodes an AppendEntries request: its entries in log form, the rest as JSON. The entries
/// are cut after `budget` bytes (always at least one entry is sent).
pub fn encode_append(
    mut rpc: AppendEntries,
    budget: usize,
) -> Result<(AppendRequest, Sent), String> {
    let entries = std::mem::take(&mut rpc.entries);
    let mut out = Vec::with_capacity(entries.len());
    let mut total = 0;
    let mut sent = Sent::All;
    for (i, e) in entries.iter().enumerate() {
        let mut buf = Vec::new();
        to_engine(e).map_err(|e| e.to_string())?.encode(&mut buf);
        if i > 0 && total + buf.len() > budget {
            sent = Sent::Partial(entries[i - 1].log_id);
            break;
        }
        total += buf.len();
        out.push(Bytes::from(buf));
    }
    let req = AppendRequest {
        request: Bytes::from(serde_json::to_vec(&rpc).map_err(|e| e.to_string())?),
        entries: out,
    };
    Ok((req, sent))
}

/// Decodes an AppendEntries request from a peer, checking every entry's header.
pub fn decode_append(req: AppendRequest) -> Result<AppendEntries, String> {
    let mut rpc: AppendEntries =
        serde_json::from_slice(&req.request).map_err(|e| format!("append request: {e}"))?;
    rpc.entries = req
        .entries
        .into_iter()
        .map(|b| LogEntry::decode(b).and_then(|e| from_engine(e).map_err(|e| e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok(rpc)
}

/// An answer (or openraft's error) as JSON.
pub fn encode_reply<T: serde::Serialize, E: serde::Serialize>(r: &Result<T, E>) -> Reply {
    let json = match r {
        Ok(v) => serde_json::json!({ "Ok": v }),
        Err(e) => serde_json::json!({ "Err": e }),
    };
    Reply {
        response: Bytes::from(json.to_string()),
    }
}

/// The answer in a reply: `Ok(Ok(answer))`, `Ok(Err(raft error))`, or `Err` when the reply
/// is not readable.
pub fn decode_reply<T, E>(reply: &Reply) -> Result<Result<T, E>, String>
where
    T: serde::de::DeserializeOwned,
    E: serde::de::DeserializeOwned,
{
    #[derive(serde::Deserialize)]
    enum R<T, E> {
        Ok(T),
        Err(E),
    }
    match serde_json::from_slice::<R<T, E>>(&reply.response) {
        Ok(R::Ok(v)) => Ok(Ok(v)),
        Ok(R::Err(e)) => Ok(Err(e)),
        Err(e) => Err(format!("unreadable reply: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_replication::types::{log_id, Batch, Entry};

    #[test]
    fn append_requests_round_trip() {
        let id = |i| {
            log_id(strata_engine::replica::EntryId {
                term: 2,
                node: 1,
                index: i,
            })
        };
        let body = strata_engine::replica::test_body("s-1", 0, 3);
        let rpc = AppendEntries {
            vote: openraft::impls::Vote::new_committed(2, 1),
            prev_log_id: Some(id(4)),
            entries: vec![
                Entry {
                    log_id: id(5),
                    payload: openraft::EntryPayload::Blank,
                },
                Entry {
                    log_id: id(6),
                    payload: openraft::EntryPayload::Normal(Batch(body.clone())),
                },
            ],
            leader_commit: Some(id(3)),
        };
        let (req, sent) = encode_append(rpc.clone(), MAX_PAYLOAD_BYTES).unwrap();
        assert_eq!(sent, Sent::All);
        let back = decode_append(req).unwrap();
        assert_eq!(format!("{back:?}"), format!("{rpc:?}"));
        // A damaged entry is refused.
        let (mut req, _) = encode_append(rpc, MAX_PAYLOAD_BYTES).unwrap();
        let mut bad = req.entries[1].to_vec();
        bad[20] ^= 1;
        req.entries[1] = Bytes::from(bad);
        assert!(decode_append(req).unwrap_err().contains("entry header"));
    }

    #[test]
    fn a_large_run_of_entries_is_sent_in_parts_within_the_budget() {
        let id = |i| {
            log_id(strata_engine::replica::EntryId {
                term: 3,
                node: 2,
                index: i,
            })
        };
        let body = strata_engine::replica::test_body("big-1", 0, 50);
        let entries: Vec<Entry> = (10..20)
            .map(|i| Entry {
                log_id: id(i),
                payload: openraft::EntryPayload::Normal(Batch(body.clone())),
            })
            .collect();
        let rpc = |entries: Vec<Entry>| AppendEntries {
            vote: openraft::impls::Vote::new_committed(3, 2),
            prev_log_id: Some(id(9)),
            entries,
            leader_commit: Some(id(9)),
        };
        let one = encode_append(rpc(entries[..1].to_vec()), usize::MAX)
            .unwrap()
            .0;
        let size = one.entries[0].len();
        // Room for three and a half entries: three are sent, and the call says where it stopped.
        let (req, sent) = encode_append(rpc(entries.clone()), size * 7 / 2).unwrap();
        assert_eq!(req.entries.len(), 3);
        assert_eq!(sent, Sent::Partial(id(12)));
        let back = decode_append(req).unwrap().entries;
        assert_eq!(format!("{back:?}"), format!("{:?}", &entries[..3]));
        // One entry larger than the budget still goes, alone.
        let (req, sent) = encode_append(rpc(entries.clone()), 1).unwrap();
        assert_eq!((req.entries.len(), sent), (1, Sent::Partial(id(10))));
        // Exactly the budget: everything.
        let (req, sent) = encode_append(rpc(entries), size * 10).unwrap();
        assert_eq!((req.entries.len(), sent), (10, Sent::All));
    }

    #[test]
    fn a_call_carrying_entries_gets_time_for_its_bytes() {
        let ttl = std::time::Duration::from_millis(100);
        assert_eq!(append_timeout(ttl, 0), ttl);
        assert_eq!(
            append_timeout(ttl, MAX_PAYLOAD_BYTES),
            ttl + std::time::Duration::from_secs(4)
        );
    }
}
