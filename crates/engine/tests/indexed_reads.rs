//! Property test of `$all` reads answered from the derived streams: for random logs (user and
//! system streams, several categories and event types, deletes, reopens) and random filters
//! the indexes can answer (`$idx-ce-…`, `$idx-et-…`, `<category>-` stream prefixes, event-type
//! prefixes), paging through `$all` forwards and backwards from any position returns exactly
//! what the filter matches in an unfiltered read, in order, and ends where a scan would.

mod common;

use common::rt;
use proptest::prelude::*;
use strata_engine::derived::CategoryRule;
use strata_engine::{
    AllFrom, Direction, Engine, EventData, EventFilter, ExpectedRevision as Exp, FilterOn,
    RecordedEvent,
};

const STREAMS: [&str; 6] = [
    "order-1", "order-2", "orders-1", "cart-1", "plain", "$sys-1",
];
const TYPES: [&str; 4] = ["Placed", "PlacedV2", "Paid", "$internal"];

/// A filter, and what it means as a predicate on (stream, event type).
#[derive(Debug, Clone)]
enum Filter {
    Stream(Vec<&'static str>),
    Type(Vec<&'static str>),
}

const STREAM_PREFIXES: [&str; 6] = [
    "$idx-ce-order",
    "$idx-ce-cart",
    "$idx-et-Placed",
    "$idx-et-Paid",
    "order-",
    "cart-",
];
const TYPE_PREFIXES: [&str; 4] = ["Placed", "PlacedV2", "Paid", "Pai"];

impl Filter {
    fn engine(&self) -> EventFilter {
        match self {
            Filter::Stream(p) => EventFilter::prefixes(FilterOn::StreamName, p.clone()),
            Filter::Type(p) => EventFilter::prefixes(FilterOn::EventType, p.clone()),
        }
        .unwrap()
    }

    fn matches(&self, e: &RecordedEvent) -> bool {
        let rule = CategoryRule::default();
        let user = !e.stream.starts_with('$');
        match self {
            Filter::Stream(prefixes) => prefixes.iter().any(|p| {
                if let Some(c) = p.strip_prefix("$idx-ce-") {
                    user && rule.category(&e.stream) == Some(c)
                } else if let Some(t) = p.strip_prefix("$idx-et-") {
                    e.event_type == t && (user || !t.starts_with('$'))
                } else {
                    e.stream.starts_with(p)
                }
            }),
            Filter::Type(prefixes) => prefixes.iter().any(|p| e.event_type.starts_with(p)),
        }
    }
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        proptest::sample::subsequence(STREAM_PREFIXES.to_vec(), 1..3).prop_map(Filter::Stream),
        proptest::sample::subsequence(TYPE_PREFIXES.to_vec(), 1..3).prop_map(Filter::Type),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Append { stream: usize, types: Vec<usize> },
    Delete { stream: usize },
    Reopen { drop_index: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..STREAMS.len(), proptest::collection::vec(0..TYPES.len(), 1..4))
            .prop_map(|(stream, types)| Op::Append { stream, types }),
        1 => (0..STREAMS.len() - 1).prop_map(|stream| Op::Delete { stream }),
        1 => any::<bool>().prop_map(|drop_index| Op::Reopen { drop_index }),
    ]
}

fn config(dir: &tempfile::TempDir) -> strata_engine::Config {
    let mut c = common::config(dir);
    c.derived = Some(CategoryRule::default());
    c
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Pages through `$all` with `filter` from `from`; returns the positions read and the last
/// page's next position.
fn page_through(
    e: &Engine,
    filter: &EventFilter,
    from: AllFrom,
    direction: Direction,
    page: usize,
) -> Result<(Vec<u64>, u64), TestCaseError> {
    let mut got = Vec::new();
    let mut from = from;
    for _ in 0..10_000 {
        let slice = e
            .read_all_budget(from, direction, page, Some(filter), page, usize::MAX)
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert!(slice.events.len() <= page);
        got.extend(positions(&slice.events));
        if slice.is_end {
            return Ok((got, slice.next_position));
        }
        from = AllFrom::Position(slice.next_position);
    }
    Err(TestCaseError::fail("paging never ended"))
}

fn check(e: &Engine, f: &Filter, page: usize, cut: usize) -> Result<(), TestCaseError> {
    let all = e
        .read_all(AllFrom::Start, Direction::Forwards, 100_000, None)
        .map_err(|err| TestCaseError::fail(err.to_string()))?;
    let want: Vec<u64> = all
        .events
        .iter()
        .filter(|x| f.matches(x))
        .map(|x| x.position)
        .collect();
    let filter = f.engine();
    let (fwd, next) = page_through(e, &filter, AllFrom::Start, Direction::Forwards, page)?;
    prop_assert_eq!(&fwd, &want, "forwards {:?}", f);
    prop_assert_eq!(next, all.next_position, "forwards ends at the log end");
    let (mut back, next) = page_through(e, &filter, AllFrom::End, Direction::Backwards, page)?;
    back.reverse();
    prop_assert_eq!(&back, &want, "backwards {:?}", f);
    let start = e
        .read_all(AllFrom::Start, Direction::Backwards, 1, None)
        .map_err(|err| TestCaseError::fail(err.to_string()))?;
    prop_assert_eq!(next, start.next_position, "backwards ends at the log start");
    // From an event's position: forwards includes it, backwards returns what lies before.
    if let Some(at) = all.events.get(cut % all.events.len().max(1)) {
        let (fwd, _) = page_through(
            e,
            &filter,
            AllFrom::Position(at.position),
            Direction::Forwards,
            page,
        )?;
        let tail: Vec<u64> = want.iter().copied().filter(|&p| p >= at.position).collect();
        prop_assert_eq!(fwd, tail, "forwards from {}", at.position);
        let (mut back, _) = page_through(
            e,
            &filter,
            AllFrom::Position(at.position),
            Direction::Backwards,
            page,
        )?;
        back.reverse();
        let head: Vec<u64> = want.iter().copied().filter(|&p| p < at.position).collect();
        prop_assert_eq!(back, head, "backwards from {}", at.position);
    }
    Ok(())
}

fn run(ops: Vec<Op>, f: Filter, page: usize, cut: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir);
    let mut engine = Some(Engine::open(cfg.clone()).unwrap());
    let rt = rt();
    let mut n = 0u128;
    for op in ops {
        let e = engine.as_ref().unwrap();
        match op {
            Op::Append { stream, types } => {
                let events = types
                    .iter()
                    .map(|t| {
                        n += 1;
                        EventData::json(TYPES[*t], "{}").with_id(uuid::Uuid::from_u128(n))
                    })
                    .collect();
                let name = STREAMS[stream];
                if name.starts_with('$') {
                    rt.block_on(e.append_system(name, Exp::Any, events))
                } else {
                    rt.block_on(e.append(name, Exp::Any, events))
                }
                .map_err(|err| TestCaseError::fail(err.to_string()))?;
            }
            Op::Delete { stream } => {
                let _ = rt.block_on(e.delete_stream(STREAMS[stream], Exp::Any));
            }
            Op::Reopen { drop_index } => {
                drop(engine.take());
                if drop_index {
                    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
                }
                engine = Some(Engine::open(cfg.clone()).unwrap());
            }
        }
    }
    check(engine.as_ref().unwrap(), &f, page, cut)
}

proptest! {
    // A fixed seed keeps CI deterministic.
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6964_7872_6561),
        ..ProptestConfig::default()
    })]
    #[test]
    fn indexed_all_reads_match_a_filtered_scan(
        ops in proptest::collection::vec(op(), 1..30),
        f in filter(),
        page in 1usize..5,
        cut in 0usize..1000,
    ) {
        run(ops, f, page, cut)?;
    }
}

/// A filter naming indexes is refused when they are not kept, and when it mixes in prefixes
/// no index answers; other filters scan as before.
#[test]
fn index_filters_need_the_derived_streams_and_only_index_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(common::config(&dir)).unwrap();
    let idx = EventFilter::prefixes(FilterOn::StreamName, ["$idx-ce-order"]).unwrap();
    let err = e
        .read_all(AllFrom::Start, Direction::Forwards, 10, Some(&idx))
        .unwrap_err();
    assert!(err.to_string().contains("derived streams"), "{err}");
    drop(e);
    let e = Engine::open(config(&dir)).unwrap();
    for bad in [
        vec!["$idx-ce-order", "ord"],
        vec!["$idx-xx-order"],
        vec!["$idx-ce-"],
    ] {
        let f = EventFilter::prefixes(FilterOn::StreamName, bad.clone()).unwrap();
        let err = e
            .read_all(AllFrom::Start, Direction::Forwards, 10, Some(&f))
            .unwrap_err();
        assert!(err.to_string().contains("filter"), "{bad:?}: {err}");
    }
    let scan = EventFilter::prefixes(FilterOn::StreamName, ["ord"]).unwrap();
    assert!(e
        .read_all(AllFrom::Start, Direction::Forwards, 10, Some(&scan))
        .is_ok());
}
