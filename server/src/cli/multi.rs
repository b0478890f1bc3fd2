//! `strata append-multi`: several streams, one atomic append, described by a JSON document.

use std::io::Read;

use clap::Args;
use serde_json::{json, Value};
use strata_client::{EventData, ExpectedRevision, MultiAppend};
use uuid::Uuid;

use super::{connect, parse_expected, ClientOpts, Failure};

#[derive(Debug, Args)]
pub struct AppendMultiArgs {
    /// The append as JSON, from this file ("-": standard input). Shape:
    /// {"appends": [{"stream": "order-7", "expected": "no-stream",
    ///   "events": [{"type": "OrderPlaced", "data": {...}, "id": "<uuid>", "metadata": {...}}]}],
    ///  "checks": [{"stream": "customer-3", "expected": "exists"}]}.
    /// "expected" is any (default), no-stream, exists or a revision number; "id" and
    /// "metadata" are optional; "data" is stored as JSON unless "binary": true (then a string).
    #[arg(long)]
    file: String,
    #[command(flatten)]
    opts: ClientOpts,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn expected_of(v: Option<&Value>, at: &str) -> Result<ExpectedRevision, Failure> {
    match v {
        None => Ok(ExpectedRevision::Any),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(ExpectedRevision::Exact)
            .ok_or_else(|| usage(format!("{at}.expected: {n} is not a revision"))),
        Some(Value::String(s)) => {
            parse_expected(s).map_err(|e| usage(format!("{at}.expected: {e}")))
        }
        Some(other) => Err(usage(format!(
            "{at}.expected: {other} is not a string or number"
        ))),
    }
}

fn event_of(v: &Value, at: &str) -> Result<EventData, Failure> {
    let event_type = v["type"]
        .as_str()
        .ok_or_else(|| usage(format!("{at}.type is required (a string)")))?;
    let binary = v["binary"].as_bool().unwrap_or(false);
    let mut e = if binary {
        let data = v["data"]
            .as_str()
            .ok_or_else(|| usage(format!("{at}.data must be a string when binary")))?;
        EventData::binary(event_type, data.as_bytes().to_vec())
    } else {
        let data = v.get("data").cloned().unwrap_or_else(|| json!({}));
        EventData::json_bytes(event_type, data.to_string().into_bytes())
    };
    if let Some(id) = v.get("id") {
        let id = id
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| usage(format!("{at}.id is not a UUID")))?;
        e = e.id(id);
    }
    match v.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => e = e.metadata(s.as_bytes().to_vec()),
        Some(m) => e = e.metadata(m.to_string().into_bytes()),
    }
    Ok(e)
}

/// The append a JSON document describes.
fn parse(doc: &Value) -> Result<MultiAppend, Failure> {
    let mut m = MultiAppend::new();
    let appends = doc["appends"].as_array().ok_or_else(|| {
        usage("the document needs \"appends\": a list of {stream, expected, events}")
    })?;
    for (i, a) in appends.iter().enumerate() {
        let at = format!("appends[{i}]");
        let stream = a["stream"]
            .as_str()
            .ok_or_else(|| usage(format!("{at}.stream is required (a string)")))?;
        let events = a["events"]
            .as_array()
            .ok_or_else(|| usage(format!("{at}.events is required (a list)")))?
            .iter()
            .enumerate()
            .map(|(k, e)| event_of(e, &format!("{at}.events[{k}]")))
            .collect::<Result<Vec<_>, _>>()?;
        m = m.write(stream, expected_of(a.get("expected"), &at)?, events);
    }
    if let Some(checks) = doc.get("checks") {
        let checks = checks
            .as_array()
            .ok_or_else(|| usage("\"checks\" must be a list of {stream, expected}"))?;
        for (i, c) in checks.iter().enumerate() {
            let at = format!("checks[{i}]");
            let stream = c["stream"]
                .as_str()
                .ok_or_else(|| usage(format!("{at}.stream is required (a string)")))?;
            m = m.check(stream, expected_of(c.get("expected"), &at)?);
        }
    }
    Ok(m)
}

pub async fn execute(a: AppendMultiArgs) -> Result<i32, Failure> {
    let text = if a.file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| usage(format!("cannot read standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(&a.file)
            .map_err(|e| usage(format!("cannot read {}: {e}", a.file)))?
    };
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("{} is not valid JSON: {e}", a.file)))?;
    let m = parse(&doc)?;
    let client = connect(&a.opts).await?;
    let r = client.append_multi(m).await?;
    if a.opts.json {
        let streams: Vec<Value> = r
            .streams
            .iter()
            .map(|s| json!({"stream": s.stream, "revision": s.revision, "position": s.position}))
            .collect();
        println!(
            "{}",
            json!({"streams": streams, "position": r.position, "idempotent_replay": r.idempotent_replay})
        );
    } else {
        for s in &r.streams {
            println!(
                "appended to {}@{} at position {}",
                s.stream, s.revision, s.position
            );
        }
        if r.idempotent_replay {
            println!("(already written: idempotent retry)");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_parsed_and_mistakes_named() {
        let doc = json!({
            "appends": [{"stream": "a", "expected": "no-stream", "events": [{"type": "A", "data": {"x": 1}}]},
                        {"stream": "b", "expected": 3, "events": [{"type": "B", "binary": true, "data": "raw"}]}],
            "checks": [{"stream": "c", "expected": "exists"}]
        });
        assert!(parse(&doc).is_ok());
        let bad = json!({"appends": [{"stream": "a", "events": [{"data": {}}]}]});
        match parse(&bad) {
            Err(Failure::Usage(m)) => assert!(m.contains("appends[0].events[0].type"), "{m}"),
            other => panic!("{other:?}"),
        }
        let bad = json!({"appends": [{"stream": "a", "expected": "soon", "events": []}]});
        assert!(matches!(parse(&bad), Err(Failure::Usage(_))));
    }
}
