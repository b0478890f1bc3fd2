//! Property test: random sequences of appends (every expected-revision kind), retries,
//! deletes, tombstones, metadata changes and reopens behave like a simple in-memory model.

mod common;

use std::collections::HashMap;

use common::{config, rt};
use proptest::prelude::*;
use strata_engine::{
    AllFrom, Direction, Engine, Error, EventData, ExpectedRevision as Exp, StreamFrom,
    StreamMetadata,
};
use uuid::Uuid;

const SOFT_DELETED_TB: u64 = i64::MAX as u64;

const STREAMS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum ExpKind {
    Any,
    NoStream,
    StreamExists,
    /// Exact(last + offset - 1): offset 1 is the correct revision.
    Exact(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        exp: ExpKind,
        count: usize,
    },
    RetryLast,
    Delete {
        stream: usize,
        exp: ExpKind,
    },
    Tombstone {
        stream: usize,
    },
    SetMaxCount {
        stream: usize,
        max_count: Option<u64>,
        tb: Option<u64>,
    },
    Reopen {
        drop_index: bool,
    },
}

fn exp_kind() -> impl Strategy<Value = ExpKind> {
    prop_oneof![
        Just(ExpKind::Any),
        Just(ExpKind::NoStream),
        Just(ExpKind::StreamExists),
        (0i64..3).prop_map(ExpKind::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, exp_kind(), 1..4usize).prop_map(|(stream, exp, count)| Op::Append { stream, exp, count }),
        2 => Just(Op::RetryLast),
        1 => (0..3usize, exp_kind()).prop_map(|(stream, exp)| Op::Delete { stream, exp }),
        1 => (0..3usize).prop_map(|stream| Op::Tombstone { stream }),
        1 => (0..3usize, proptest::option::of(1..4u64), proptest::option::of(0..6u64))
            .prop_map(|(stream, max_count, tb)| Op::SetMaxCount { stream, max_count, tb }),
        1 => any::<bool>().prop_map(|drop_index| Op::Reopen { drop_index }),
    ]
}

#[derive(Debug, Default, Clone)]
struct Stream {
    ids: Vec<Uuid>,
    tombstoned: bool,
    meta: StreamMetadata,
    meta_revision: Option<u64>,
}

impl Stream {
    fn last(&self) -> Option<u64> {
        (self.ids.len() as u64).checked_sub(1)
    }
    fn first_visible(&self) -> u64 {
        let Some(last) = self.last() else { return 0 };
        let tb = self.meta.truncate_before.unwrap_or(0);
        tb.max(
            self.meta
                .max_count
                .map_or(0, |c| (last + 1).saturating_sub(c)),
        )
    }
    fn visible(&self) -> bool {
        self.last().is_some_and(|l| self.first_visible() <= l)
    }
    fn expected(&self, k: &ExpKind) -> Exp {
        match k {
            ExpKind::Any => Exp::Any,
            ExpKind::NoStream => Exp::NoStream,
            ExpKind::StreamExists => Exp::StreamExists,
            ExpKind::Exact(off) => {
                Exp::Exact((self.last().map_or(-1, |l| l as i64) + off - 1).max(0) as u64)
            }
        }
    }
    fn accepts(&self, e: Exp) -> bool {
        match e {
            Exp::Any => true,
            Exp::NoStream => !self.visible(),
            Exp::StreamExists => self.visible(),
            Exp::Exact(n) => self.last() == Some(n),
        }
    }
}

#[derive(Default)]
struct Model {
    streams: HashMap<&'static str, Stream>,
    /// (stream, revision, id) in log order; ids of system events are not tracked.
    log: Vec<(String, u64, Option<Uuid>)>,
    last_append: Option<(&'static str, Exp, Vec<Uuid>, u64)>,
    next_id: u128,
}

impl Model {
    fn meta_event(&mut self, name: &'static str) {
        let st = self.streams.entry(name).or_default();
        let rev = st.meta_revision.map_or(0, |r| r + 1);
        st.meta_revision = Some(rev);
        self.log.push((format!("$${name}"), rev, None));
        if self.last_append.as_ref().is_some_and(|l| l.0 == name) {
            self.last_append = None;
        }
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.segment_size = 1500;
    let mut engine = Some(Engine::open(cfg.clone()).unwrap());
    let mut m = Model::default();
    let rt = rt();
    for op in ops {
        let e = engine.as_ref().unwrap();
        match op {
            Op::Append { stream, exp, count } => {
                let name = STREAMS[stream];
                let st = m.streams.entry(name).or_default().clone();
                let expected = st.expected(&exp);
                let ids: Vec<Uuid> = (0..count)
                    .map(|_| {
                        m.next_id += 1;
                        Uuid::from_u128(m.next_id)
                    })
                    .collect();
                let events = ids
                    .iter()
                    .map(|id| EventData::json("T", "{}").with_id(*id))
                    .collect();
                let got = rt.block_on(e.append(name, expected, events));
                if st.tombstoned {
                    prop_assert!(matches!(got, Err(Error::StreamDeleted { .. })), "{got:?}");
                } else if st.accepts(expected) {
                    let r = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let s = m.streams.get_mut(name).unwrap();
                    let first = s.ids.len() as u64;
                    for id in &ids {
                        m.log.push((name.into(), s.ids.len() as u64, Some(*id)));
                        s.ids.push(*id);
                    }
                    prop_assert_eq!(r.revision, s.last().unwrap());
                    // Back from a soft delete: `$tb` moves to the append's first revision.
                    if s.meta.truncate_before == Some(SOFT_DELETED_TB) {
                        s.meta.truncate_before = Some(first);
                        m.meta_event(name);
                    }
                    m.last_append = Some((name, expected, ids, r.revision));
                } else {
                    prop_assert!(
                        matches!(got, Err(Error::WrongExpectedRevision { .. })),
                        "{got:?}"
                    );
                }
            }
            Op::RetryLast => {
                let Some((name, expected, ids, revision)) = m.last_append.clone() else {
                    continue;
                };
                let events = ids
                    .iter()
                    .map(|id| EventData::json("T", "{}").with_id(*id))
                    .collect();
                let r = rt
                    .block_on(e.append(name, expected, events))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(r.idempotent_replay);
                prop_assert_eq!(r.revision, revision);
            }
            Op::Delete { stream, exp } => {
                let name = STREAMS[stream];
                let st = m.streams.entry(name).or_default().clone();
                let expected = st.expected(&exp);
                let got = rt.block_on(e.delete_stream(name, expected));
                if st.tombstoned {
                    prop_assert!(matches!(got, Err(Error::StreamDeleted { .. })), "{got:?}");
                } else if st.accepts(expected) {
                    got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let s = m.streams.get_mut(name).unwrap();
                    s.meta.truncate_before = Some(SOFT_DELETED_TB);
                    m.meta_event(name);
                } else {
                    prop_assert!(
                        matches!(got, Err(Error::WrongExpectedRevision { .. })),
                        "{got:?}"
                    );
                }
            }
            Op::Tombstone { stream } => {
                let name = STREAMS[stream];
                let st = m.streams.entry(name).or_default().clone();
                let got = rt.block_on(e.tombstone_stream(name, Exp::Any));
                if st.tombstoned {
                    prop_assert!(matches!(got, Err(Error::StreamDeleted { .. })), "{got:?}");
                } else {
                    got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    m.streams.get_mut(name).unwrap().tombstoned = true;
                    m.meta_event(name);
                }
            }
            Op::SetMaxCount {
                stream,
                max_count,
                tb,
            } => {
                let name = STREAMS[stream];
                let st = m.streams.entry(name).or_default().clone();
                let meta = StreamMetadata {
                    max_count,
                    truncate_before: tb,
                    ..Default::default()
                };
                // After a tombstone its record in `$$<stream>` is not a metadata revision.
                let shown = if st.tombstoned {
                    st.meta_revision.and_then(|r| r.checked_sub(1))
                } else {
                    st.meta_revision
                };
                let expected = shown.map_or(Exp::NoStream, Exp::Exact);
                let got = rt.block_on(e.set_stream_metadata(name, expected, meta.clone()));
                if st.tombstoned {
                    let r = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(r.revision, shown.map_or(0, |r| r + 1));
                    m.meta_event(name);
                } else {
                    got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    m.streams.get_mut(name).unwrap().meta = meta;
                    m.meta_event(name);
                }
            }
            Op::Reopen { drop_index } => {
                drop(engine.take());
                if drop_index {
                    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
                }
                engine = Some(Engine::open(cfg.clone()).unwrap());
            }
        }
        check(engine.as_ref().unwrap(), &m)?;
    }
    Ok(())
}

fn check(e: &Engine, m: &Model) -> Result<(), TestCaseError> {
    for name in STREAMS {
        let got = e.read_stream(name, StreamFrom::Start, Direction::Forwards, 1000);
        let back = e.read_stream(name, StreamFrom::End, Direction::Backwards, 1000);
        match m.streams.get(name) {
            Some(s) if s.tombstoned => prop_assert!(
                matches!(got, Err(Error::StreamDeleted { .. })),
                "{name}: {got:?}"
            ),
            Some(s) if s.visible() => {
                let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want: Vec<(u64, Uuid)> = (s.first_visible()..=s.last().unwrap())
                    .map(|r| (r, s.ids[r as usize]))
                    .collect();
                let have: Vec<(u64, Uuid)> = got
                    .events
                    .iter()
                    .map(|x| (x.revision, x.event_id))
                    .collect();
                prop_assert_eq!(&have, &want, "stream {}", name);
                let mut back: Vec<(u64, Uuid)> = back
                    .unwrap()
                    .events
                    .iter()
                    .map(|x| (x.revision, x.event_id))
                    .collect();
                back.reverse();
                prop_assert_eq!(&back, &want, "stream {} backwards", name);
            }
            _ => prop_assert!(
                matches!(got, Err(Error::StreamNotFound { .. })),
                "{name}: {got:?}"
            ),
        }
    }
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, usize::MAX, None)
        .unwrap();
    let have: Vec<(String, u64)> = all
        .events
        .iter()
        .map(|x| (x.stream.clone(), x.revision))
        .collect();
    let want: Vec<(String, u64)> = m.log.iter().map(|(s, r, _)| (s.clone(), *r)).collect();
    prop_assert_eq!(have, want);
    for (got, (_, _, id)) in all.events.iter().zip(&m.log) {
        if let Some(id) = id {
            prop_assert_eq!(got.event_id, *id);
        }
    }
    Ok(())
}

proptest! {
    // A fixed seed keeps CI deterministic; more cases make up for not varying it per run.
    // Explore other seeds locally by editing this (the env var is not read when it is set).
    #![proptest_config(ProptestConfig {
        cases: 160,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5374_7261_7461),
        ..ProptestConfig::default()
    })]
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
