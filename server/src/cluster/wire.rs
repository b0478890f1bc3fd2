//! How openraft's messages travel between nodes: JSON for requests and answers, the log's
//! own binary form for entries (see `proto/strata/cluster/v1/raft.proto`).

use bytes::Bytes;
use strata_engine::replica::LogEntry;
use strata_proto::cluster::{AppendRequest, Reply};
use strata_replication::types::{from_engine, to_engine};
use strata_replication::TypeConfig;

type AppendEntries = openraft::raft::AppendEntriesRequest<TypeConfig>;

/// Encodes an AppendEntries request: its entries in log form, the rest as JSON.
pub fn encode_append(mut rpc: AppendEntries) -> Result<AppendRequest, String> {
    let entries = std::mem::take(&mut rpc.entries);
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut buf = Vec::new();
        to_engine(e).map_err(|e| e.to_string())?.encode(&mut buf);
        out.push(Bytes::from(buf));
    }
    Ok(AppendRequest {
        request: Bytes::from(serde_json::to_vec(&rpc).map_err(|e| e.to_string())?),
        entries: out,
    })
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
        let back = decode_append(encode_append(rpc.clone()).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{rpc:?}"));
        // A damaged entry is refused.
        let mut req = encode_append(rpc).unwrap();
        let mut bad = req.entries[1].to_vec();
        bad[20] ^= 1;
        req.entries[1] = Bytes::from(bad);
        assert!(decode_append(req).unwrap_err().contains("entry header"));
    }
}
