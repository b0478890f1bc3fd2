//! The system streams that hold a group's durable state, and their event formats.
//!
//! Stream names follow KurrentDB's, so that its users recognise them.

use serde::{Deserialize, Serialize};
use strata_engine::{
    AllFrom, Direction, Engine, Error as EngineError, EventData, ExpectedRevision, RecordedEvent,
    StreamFrom,
};

use crate::error::{Error, Result};
use crate::settings::{Settings, Target};
use crate::source::{self, Listed};

/// Every create, update and delete of a group, in order.
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";
pub const CHECKPOINT_EVENT_TYPE: &str = "$SubscriptionCheckpoint";
pub const PARKED_EVENT_TYPE: &str = "$ParkedMessage";

const GROUP_CREATED: &str = "$GroupCreated";
const GROUP_UPDATED: &str = "$GroupUpdated";
const GROUP_DELETED: &str = "$GroupDeleted";

/// Prefix of every group's checkpoint and parked stream.
pub const GROUP_STREAM_PREFIX: &str = "$persistentsubscription-";

/// True for the streams the consumer groups own: clients may read them but never write them
/// or change their metadata.
pub fn is_group_stream(stream: &str) -> bool {
    stream == CONFIG_STREAM || stream.starts_with(GROUP_STREAM_PREFIX)
}

/// A stream or group name as it appears inside a group's system stream names. Names are kept
/// as they are (KurrentDB's naming) unless they could make `<stream>::<group>` ambiguous: a
/// name holding `%` or `::`, or starting or ending with `:`, has `%` written as `%25` and every
/// `:` as `%3A`. Kept names hold no `%`, escaped ones no `:`, and neither kind holds `::` or
/// starts or ends with `:`, so the first `::` is always the separator and distinct
/// (stream, group) pairs never share a stream (`a::b` + `c` and `a` + `b::c` used to).
fn name_part(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('%') || name.contains("::") || name.starts_with(':') || name.ends_with(':') {
        name.replace('%', "%25").replace(':', "%3A").into()
    } else {
        name.into()
    }
}

fn group_stream(target: &Target, group: &str, kind: &str) -> String {
    format!(
        "{GROUP_STREAM_PREFIX}{}::{}-{kind}",
        name_part(target.name()),
        name_part(group)
    )
}

pub fn checkpoint_stream(target: &Target, group: &str) -> String {
    group_stream(target, group, "checkpoint")
}

pub fn parked_stream(target: &Target, group: &str) -> String {
    group_stream(target, group, "parked")
}

/// A change to the set of groups, as stored in [`CONFIG_STREAM`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigEvent {
    pub target: Target,
    pub group: String,
    /// Absent on delete.
    pub settings: Option<Settings>,
}

fn json_event(event_type: &str, value: &impl Serialize) -> EventData {
    let data = serde_json::to_vec(value).expect("plain data serialises");
    EventData::json(event_type, data)
}

fn bad(stream: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadState {
        stream: stream.to_owned(),
        reason: reason.to_string(),
    }
}

/// A group as found in the config stream: its settings and its incarnation (the log position
/// of the event that created it). Checkpoints carry the incarnation, so a group created again
/// under an old name does not pick up the old group's position.
#[derive(Debug, Clone)]
pub struct StoredGroup {
    pub target: Target,
    pub group: String,
    pub settings: Settings,
    pub incarnation: u64,
}

/// Reads the config stream (raw: no metadata can hide a group from the server). Returns the live groups and the stream's last revision.
pub fn load_groups(engine: &Engine) -> Result<(Vec<StoredGroup>, Option<u64>)> {
    let mut groups: Vec<StoredGroup> = Vec::new();
    let mut incarnations: std::collections::HashMap<(Target, String), u64> = Default::default();
    let mut from = 0;
    let mut last = None;
    loop {
        let slice = match engine.read_stream_raw(
            CONFIG_STREAM,
            StreamFrom::Revision(from),
            Direction::Forwards,
            1000,
        ) {
            Ok(s) => s,
            Err(EngineError::StreamNotFound { .. }) => return Ok((groups, last)),
            Err(e) => return Err(e.into()),
        };
        for ev in &slice.events {
            last = Some(ev.revision);
            let change: ConfigEvent = match serde_json::from_slice(&ev.data) {
                Ok(c) => c,
                Err(e) => {
                    // One unreadable event must not keep every group (and the server) down.
                    tracing::error!(revision = ev.revision, error = %e,
                        "skipping an unreadable event in {CONFIG_STREAM}");
                    continue;
                }
            };
            groups.retain(|g| !(g.target == change.target && g.group == change.group));
            match (ev.event_type.as_str(), change.settings) {
                (GROUP_DELETED, _) => {}
                (GROUP_CREATED, Some(settings)) => {
                    incarnations.insert((change.target.clone(), change.group.clone()), ev.position);
                    groups.push(StoredGroup {
                        target: change.target,
                        group: change.group,
                        settings,
                        incarnation: ev.position,
                    })
                }
                (GROUP_UPDATED, Some(settings)) => {
                    // An update keeps the incarnation of the create before it.
                    let incarnation = incarnations
                        .get(&(change.target.clone(), change.group.clone()))
                        .copied()
                        .unwrap_or(ev.position);
                    groups.push(StoredGroup {
                        target: change.target,
                        group: change.group,
                        settings,
                        incarnation,
                    });
                }
                (other, _) => tracing::error!(
                    revision = ev.revision,
                    event_type = other,
                    "skipping an unexpected event in {CONFIG_STREAM}"
                ),
            }
        }
        match slice.next_revision {
            Some(n) if !slice.events.is_empty() => from = n,
            _ => return Ok((groups, last)),
        }
    }
}

/// Appends a config change; `expected` is the config stream's last revision as the caller
/// knows it. Returns the event's revision and position.
pub async fn write_config(
    engine: &Engine,
    expected: Option<u64>,
    kind: ConfigKind,
    change: &ConfigEvent,
) -> Result<(u64, u64)> {
    let event_type = match kind {
        ConfigKind::Created => GROUP_CREATED,
        ConfigKind::Updated => GROUP_UPDATED,
        ConfigKind::Deleted => GROUP_DELETED,
    };
    let expected = expected.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
    let r = engine
        .append_system(
            CONFIG_STREAM,
            expected,
            vec![json_event(event_type, change)],
        )
        .await?;
    Ok((r.revision, r.position))
}

#[derive(Debug, Clone, Copy)]
pub enum ConfigKind {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointData {
    incarnation: u64,
    /// Streams: the next revision to process; `$all`: the position of the next event.
    next: u64,
}

/// The group's last stored checkpoint, if this incarnation wrote one.
pub fn read_checkpoint(
    engine: &Engine,
    target: &Target,
    group: &str,
    incarnation: u64,
) -> Result<Option<u64>> {
    let stream = checkpoint_stream(target, group);
    let slice = match engine.read_stream_raw(&stream, StreamFrom::End, Direction::Backwards, 1) {
        Ok(s) => s,
        Err(EngineError::StreamNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(ev) = slice.events.first() else {
        return Ok(None);
    };
    let cp: CheckpointData = serde_json::from_slice(&ev.data).map_err(|e| bad(&stream, e))?;
    Ok((cp.incarnation == incarnation).then_some(cp.next))
}

pub async fn write_checkpoint(
    engine: &Engine,
    target: &Target,
    group: &str,
    incarnation: u64,
    next: u64,
) -> Result<()> {
    let data = CheckpointData { incarnation, next };
    engine
        .append_system(
            &checkpoint_stream(target, group),
            ExpectedRevision::Any,
            vec![json_event(CHECKPOINT_EVENT_TYPE, &data)],
        )
        .await?;
    Ok(())
}

/// What a parked message records: where the original event is, and why it was parked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParkedPointer {
    pub stream: String,
    pub revision: u64,
    pub position: u64,
    /// Canonical UUID text.
    pub event_id: String,
    pub reason: String,
    /// The entry's revision in the group's derived source stream (`$ce-…`, `$et-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_revision: Option<u64>,
}

/// The parked stream's visible range: `[start, end)` in its revisions.
pub fn parked_range(engine: &Engine, target: &Target, group: &str) -> Result<(u64, u64)> {
    let stream = parked_stream(target, group);
    let (_, meta) = engine.get_stream_metadata(&stream)?;
    let start = meta.truncate_before.unwrap_or(0);
    let end = match engine.read_stream_raw(&stream, StreamFrom::End, Direction::Backwards, 1) {
        Ok(s) => s.last_revision + 1,
        Err(EngineError::StreamNotFound { .. }) => start,
        Err(e) => return Err(e.into()),
    };
    Ok((start, end.max(start)))
}

/// Parks a message; returns its revision in the parked stream.
pub async fn park(
    engine: &Engine,
    target: &Target,
    group: &str,
    event: &RecordedEvent,
    listed_revision: Option<u64>,
    reason: &str,
) -> Result<u64> {
    let pointer = ParkedPointer {
        listed_revision,
        stream: event.stream.clone(),
        revision: event.revision,
        position: event.position,
        event_id: event.event_id.to_string(),
        reason: reason.to_owned(),
    };
    let r = engine
        .append_system(
            &parked_stream(target, group),
            ExpectedRevision::Any,
            vec![json_event(PARKED_EVENT_TYPE, &pointer)],
        )
        .await?;
    Ok(r.revision)
}

/// A replayed parked message: the original event, and where it is listed when the group
/// reads a derived stream.
pub type Parked = (RecordedEvent, Option<Listed>);

/// Up to `max` parked messages from revision `from`: (parked revision, original event).
/// Pointers whose original event can no longer be read are returned as `None`.
pub fn read_parked(
    engine: &Engine,
    target: &Target,
    group: &str,
    from: u64,
    max: usize,
) -> Result<Vec<(u64, Option<Parked>)>> {
    let stream = parked_stream(target, group);
    let slice = match engine.read_stream_raw(
        &stream,
        StreamFrom::Revision(from),
        Direction::Forwards,
        max,
    ) {
        Ok(s) => s,
        Err(EngineError::StreamNotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::with_capacity(slice.events.len());
    for ev in slice.events {
        let p: ParkedPointer = serde_json::from_slice(&ev.data).map_err(|e| bad(&stream, e))?;
        let original = match (target, p.listed_revision) {
            (Target::Stream(source), Some(listed)) => {
                source::derived_entry(engine, source, listed, p.position)?
                    .filter(|(o, _)| o.event_id.to_string() == p.event_id)
                    .map(|(o, l)| (o, Some(l)))
            }
            _ => match engine.read_all(AllFrom::Position(p.position), Direction::Forwards, 1, None)
            {
                Ok(s) => s
                    .events
                    .into_iter()
                    .next()
                    .filter(|o| o.event_id.to_string() == p.event_id)
                    .map(|o| (o, None)),
                Err(EngineError::InvalidPosition { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        out.push((ev.revision, original));
    }
    Ok(out)
}

/// Hides parked messages before `before` (they were replayed and settled).
pub async fn trim_parked(engine: &Engine, target: &Target, group: &str, before: u64) -> Result<()> {
    let stream = parked_stream(target, group);
    let (_, mut meta) = engine.get_stream_metadata(&stream)?;
    meta.truncate_before = Some(before);
    engine
        .set_system_stream_metadata(&stream, ExpectedRevision::Any, meta)
        .await?;
    Ok(())
}
