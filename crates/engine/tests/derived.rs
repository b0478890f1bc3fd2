//! Property test of the derived streams (`$ce-<category>`, `$et-<event type>`) against a simple
//! model (and `$streams`, the first event of each stream):
//! random appends to streams of several categories and types, soft deletes, tombstones,
//! metadata (max count, truncate-before), reopens and a deleted index directory. Revisions are
//! dense, in log order, never reassigned (a rebuild gives the same ones), and events that are no
//! longer readable in their own stream are left out.

mod common;

use common::rt;
use proptest::prelude::*;
use strata_engine::derived::CategoryRule;
use strata_engine::{
    Direction, Engine, Error, EventData, ExpectedRevision as Exp, StreamFrom, StreamMetadata,
};
use uuid::Uuid;

/// The test store's settings, with the derived streams on (KurrentDB's category rule).
fn config(dir: &tempfile::TempDir) -> strata_engine::Config {
    let mut c = common::config(dir);
    c.derived = Some(CategoryRule::default());
    c
}

const SOFT_DELETED_TB: u64 = i64::MAX as u64;
/// Categories: order, order, cart, none, cart (cut at the first '-').
const STREAMS: [&str; 5] = ["order-1", "order-2", "cart-1", "plain", "cart-x-y"];
const TYPES: [&str; 2] = ["Placed", "Paid"];
const DERIVED: [&str; 5] = [
    "$ce-order",
    "$ce-cart",
    "$et-Placed",
    "$et-Paid",
    "$streams",
];

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        types: Vec<usize>,
    },
    Delete {
        stream: usize,
    },
    Tombstone {
        stream: usize,
    },
    Metadata {
        stream: usize,
        max_count: Option<u64>,
        tb: Option<u64>,
    },
    Reopen {
        drop_index: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STREAMS.len(), proptest::collection::vec(0..TYPES.len(), 1..4))
            .prop_map(|(stream, types)| Op::Append { stream, types }),
        1 => (0..STREAMS.len()).prop_map(|stream| Op::Delete { stream }),
        1 => (0..STREAMS.len()).prop_map(|stream| Op::Tombstone { stream }),
        1 => (0..STREAMS.len(), proptest::option::of(1u64..4), proptest::option::of(0u64..4))
            .prop_map(|(stream, max_count, tb)| Op::Metadata { stream, max_count, tb }),
        1 => any::<bool>().prop_map(|drop_index| Op::Reopen { drop_index }),
    ]
}

#[derive(Debug, Clone, Default)]
struct Stream {
    events: u64,
    tombstoned: bool,
    tb: Option<u64>,
    max_count: Option<u64>,
}

impl Stream {
    fn visible(&self, revision: u64) -> bool {
        let by_count = self.max_count.map_or(0, |c| self.events.saturating_sub(c));
        !self.tombstoned && revision >= self.tb.unwrap_or(0).max(by_count)
    }
}

#[derive(Default)]
struct Model {
    streams: [Stream; 5],
    /// Every event in log order: (stream index, revision, type index, id).
    log: Vec<(usize, u64, usize, Uuid)>,
    next_id: u128,
}

impl Model {
    /// The derived stream's full listing (revision = index) with each entry's visibility.
    fn listing(&self, derived: &str) -> Vec<(Uuid, bool)> {
        let rule = CategoryRule::default();
        self.log
            .iter()
            .filter(|(s, r, t, _)| match derived.strip_prefix("$ce-") {
                Some(cat) => rule.category(STREAMS[*s]) == Some(cat),
                None if derived == "$streams" => *r == 0,
                None => derived.strip_prefix("$et-") == Some(TYPES[*t]),
            })
            .map(|(s, r, _, id)| (*id, self.streams[*s].visible(*r)))
            .collect()
    }
}

fn check(e: &Engine, m: &Model) -> Result<(), TestCaseError> {
    for name in DERIVED {
        let listing = m.listing(name);
        let want: Vec<(u64, Uuid)> = listing
            .iter()
            .enumerate()
            .filter(|(_, (_, visible))| *visible)
            .map(|(i, (id, _))| (i as u64, *id))
            .collect();
        let got = e.read_derived(
            name,
            StreamFrom::Start,
            Direction::Forwards,
            10_000,
            usize::MAX,
        );
        if listing.is_empty() {
            prop_assert!(
                matches!(got, Err(Error::StreamNotFound { .. })),
                "{name}: {got:?}"
            );
            continue;
        }
        let got = got.map_err(|err| TestCaseError::fail(format!("{name}: {err}")))?;
        prop_assert_eq!(got.last_revision, listing.len() as u64 - 1, "{}", name);
        let have: Vec<(u64, Uuid)> = got
            .events
            .iter()
            .filter(|d| d.resolvable)
            .map(|d| (d.revision, d.event.event_id))
            .collect();
        prop_assert_eq!(&have, &want, "{} forwards", name);
        // Entries whose event is no longer readable stay in place, marked, as references.
        let all: Vec<(u64, Uuid)> = got
            .events
            .iter()
            .map(|d| (d.revision, d.event.event_id))
            .collect();
        let full: Vec<(u64, Uuid)> = listing
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (i as u64, *id))
            .collect();
        prop_assert_eq!(all, full, "{} entries", name);
        let back = e
            .read_derived(
                name,
                StreamFrom::End,
                Direction::Backwards,
                10_000,
                usize::MAX,
            )
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        let mut have: Vec<(u64, Uuid)> = back
            .events
            .iter()
            .filter(|d| d.resolvable)
            .map(|d| (d.revision, d.event.event_id))
            .collect();
        have.reverse();
        prop_assert_eq!(&have, &want, "{} backwards", name);
        // Paging from any revision continues exactly where the checkpoint says.
        let mid = listing.len() as u64 / 2;
        let page = e
            .read_derived(
                name,
                StreamFrom::Revision(mid),
                Direction::Forwards,
                10_000,
                usize::MAX,
            )
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        let have: Vec<(u64, Uuid)> = page
            .events
            .iter()
            .filter(|d| d.resolvable)
            .map(|d| (d.revision, d.event.event_id))
            .collect();
        let tail: Vec<(u64, Uuid)> = want.iter().filter(|(r, _)| *r >= mid).cloned().collect();
        prop_assert_eq!(have, tail, "{} from {}", name, mid);
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let mut engine = Some(Engine::open(cfg.clone()).unwrap());
    let rt = rt();
    let mut m = Model::default();
    for op in ops {
        let e = engine.as_ref().unwrap();
        match op {
            Op::Append { stream, types } => {
                let name = STREAMS[stream];
                let events: Vec<(usize, Uuid)> = types
                    .iter()
                    .map(|t| {
                        m.next_id += 1;
                        (*t, Uuid::from_u128(m.next_id))
                    })
                    .collect();
                let data = events
                    .iter()
                    .map(|(t, id)| EventData::json(TYPES[*t], "{}").with_id(*id))
                    .collect();
                let got = rt.block_on(e.append(name, Exp::Any, data));
                let s = &mut m.streams[stream];
                if s.tombstoned {
                    prop_assert!(matches!(got, Err(Error::StreamDeleted { .. })), "{got:?}");
                    continue;
                }
                got.map_err(|err| TestCaseError::fail(err.to_string()))?;
                if s.tb == Some(SOFT_DELETED_TB) {
                    s.tb = Some(s.events);
                }
                for (t, id) in events {
                    m.log.push((stream, s.events, t, id));
                    s.events += 1;
                }
            }
            Op::Delete { stream } => {
                let got = rt.block_on(e.delete_stream(STREAMS[stream], Exp::Any));
                let s = &mut m.streams[stream];
                if s.tombstoned {
                    prop_assert!(got.is_err());
                } else {
                    got.map_err(|err| TestCaseError::fail(err.to_string()))?;
                    s.tb = Some(SOFT_DELETED_TB);
                }
            }
            Op::Tombstone { stream } => {
                let got = rt.block_on(e.tombstone_stream(STREAMS[stream], Exp::Any));
                let s = &mut m.streams[stream];
                if s.tombstoned {
                    prop_assert!(got.is_err());
                } else {
                    got.map_err(|err| TestCaseError::fail(err.to_string()))?;
                    s.tombstoned = true;
                }
            }
            Op::Metadata {
                stream,
                max_count,
                tb,
            } => {
                let meta = StreamMetadata {
                    max_count,
                    truncate_before: tb,
                    ..Default::default()
                };
                let got = rt.block_on(e.set_stream_metadata(STREAMS[stream], Exp::Any, meta));
                got.map_err(|err| TestCaseError::fail(err.to_string()))?;
                let s = &mut m.streams[stream];
                if !s.tombstoned {
                    s.max_count = max_count;
                    s.tb = tb;
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

proptest! {
    // A fixed seed keeps CI deterministic.
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6465_7269_7665),
        ..ProptestConfig::default()
    })]
    #[test]
    fn derived_streams_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

/// Turning the derived streams off (or changing the category rule) rebuilds the index, and
/// the same revisions come back when they are turned on again; writes to them are refused.
#[test]
fn settings_changes_rebuild_and_derived_streams_are_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    let ids: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
    {
        let e = Engine::open(cfg.clone()).unwrap();
        rt().block_on(async {
            e.append(
                "shop.order-1",
                Exp::Any,
                vec![EventData::json("Placed", "{}").with_id(ids[0])],
            )
            .await
            .unwrap();
            e.append(
                "shop.cart-1",
                Exp::Any,
                vec![EventData::json("Placed", "{}").with_id(ids[1])],
            )
            .await
            .unwrap();
            let err = e
                .append_system("$ce-shop.order", Exp::Any, vec![EventData::json("X", "{}")])
                .await
                .unwrap_err();
            assert!(err.to_string().contains("derived stream"), "{err}");
        });
        let got = e
            .read_derived(
                "$ce-shop.order",
                StreamFrom::Start,
                Direction::Forwards,
                10,
                usize::MAX,
            )
            .unwrap();
        assert_eq!(got.events.len(), 1);
    }
    cfg.derived = Some(CategoryRule {
        separator: '.',
        from_last: false,
    });
    {
        let e = Engine::open(cfg.clone()).unwrap();
        let got = e
            .read_derived(
                "$ce-shop",
                StreamFrom::Start,
                Direction::Forwards,
                10,
                usize::MAX,
            )
            .unwrap();
        let have: Vec<(u64, Uuid)> = got
            .events
            .iter()
            .filter(|d| d.resolvable)
            .map(|d| (d.revision, d.event.event_id))
            .collect();
        assert_eq!(have, vec![(0, ids[0]), (1, ids[1])]);
    }
    cfg.derived = None;
    {
        let e = Engine::open(cfg.clone()).unwrap();
        assert!(matches!(
            e.read_derived(
                "$et-Placed",
                StreamFrom::Start,
                Direction::Forwards,
                10,
                usize::MAX
            ),
            Err(Error::StreamNotFound { .. })
        ));
        assert!(e
            .read_derived(
                "shop.order-1",
                StreamFrom::Start,
                Direction::Forwards,
                10,
                usize::MAX
            )
            .is_err());
    }
}
