//! Unit tests of the index.

use super::*;
use proptest::prelude::*;

fn entry(stream: &str, revision: u64, position: u64) -> Entry {
    Entry {
        stream: Arc::from(stream),
        revision,
        position,
        effect: None,
        event_type: None,
    }
}

/// Appends `n` events to `stream` starting at `first` (revision), positions 10 apart.
fn append(index: &Index, stream: &str, first: u64, n: u64, end: &mut u64) {
    let entries: Vec<Entry> = (first..first + n)
        .map(|r| {
            *end += 10;
            entry(stream, r, *end - 10)
        })
        .collect();
    index.apply(&entries, *end);
}

#[test]
fn positions_span_memory_sled_and_chunk_boundaries_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut end = 0;
    let mut want = Vec::new();
    {
        let index = Index::open(dir.path(), 1 << 20, None).unwrap();
        // 300 (crosses a chunk), flush mid-chunk, 400 more (crosses two), flush, 50 in memory.
        for (n, flush) in [(300, true), (400, true), (50, false)] {
            let first = want.len() as u64;
            append(&index, "s", first, n, &mut end);
            want.extend((first..first + n).map(|r| r * 10));
            if flush {
                index.flush().unwrap();
                assert_eq!(index.checkpoint(), first * 10 + n * 10);
            }
        }
        assert_eq!(index.unflushed_count(), 50);
        assert_eq!(index.positions("s", 0, 749).unwrap(), want);
        assert_eq!(index.positions("s", 255, 256).unwrap(), vec![2550, 2560]);
        assert_eq!(
            index.positions("s", 699, 701).unwrap(),
            vec![6990, 7000, 7010]
        );
        assert!(index.positions("s", 5, 4).unwrap().is_empty());
        assert!(index.positions("other", 0, 10).unwrap().is_empty());
        index.flush().unwrap();
        index.sync().unwrap();
    }
    let index = Index::open(dir.path(), 1 << 20, None).unwrap();
    assert_eq!(index.checkpoint(), end);
    index.with_stream("s", |st| {
        assert_eq!(st.unwrap().last_revision, Some(749));
    });
    assert_eq!(index.positions("s", 0, 749).unwrap(), want);
    // New events continue the last, partly filled chunk.
    append(&index, "s", 750, 10, &mut end);
    index.flush().unwrap();
    assert_eq!(index.positions("s", 745, 759).unwrap().len(), 15);
}

#[test]
fn metadata_effects_set_the_target_stream_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = Index::open(dir.path(), 1 << 20, None).unwrap();
        let meta = Arc::new(StreamMetadata {
            max_count: Some(2),
            ..Default::default()
        });
        let mut e = entry("$$a", 0, 100);
        e.effect = Some(Effect::Metadata(meta));
        let mut t = entry("$$b", 0, 200);
        t.effect = Some(Effect::Tombstone);
        index.apply(
            &[entry("a", 0, 0), entry("a", 1, 10), entry("a", 2, 20), e, t],
            300,
        );
        index.with_stream("a", |st| {
            let st = st.unwrap();
            assert_eq!(st.metadata_position, Some(100));
            assert_eq!(st.first_visible(), 1, "max count 2 of revisions 0..=2");
            assert!(st.has_visible());
        });
        index.with_stream("b", |st| assert!(st.unwrap().tombstoned));
        index.flush().unwrap();
    }
    let index = Index::open(dir.path(), 1 << 20, None).unwrap();
    index.with_stream("a", |st| {
        let st = st.unwrap();
        assert_eq!(st.metadata_position, Some(100));
        assert!(
            st.metadata.is_none(),
            "parsed from the log by recovery, not stored"
        );
    });
    index.with_stream("b", |st| assert!(st.unwrap().tombstoned));
    assert_eq!(index.metadata_to_load(), vec![("a".to_owned(), 100)]);
}

#[test]
fn first_visible_takes_the_later_of_truncate_before_and_max_count() {
    let mut st = StreamState {
        last_revision: Some(9),
        ..Default::default()
    };
    assert_eq!(st.first_visible(), 0);
    st.metadata = Some(Arc::new(StreamMetadata {
        truncate_before: Some(4),
        max_count: Some(3),
        ..Default::default()
    }));
    assert_eq!(st.first_visible(), 7);
    st.metadata = Some(Arc::new(StreamMetadata {
        truncate_before: Some(12),
        ..Default::default()
    }));
    assert!(!st.has_visible(), "everything truncated away");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x1de7),
        ..ProptestConfig::default()
    })]
    /// Random appends to a few streams, flushes and reopens: every range read matches a
    /// plain list of positions per stream.
    #[test]
    fn index_matches_a_list_per_stream(
        steps in proptest::collection::vec((0usize..3, 1u64..300, any::<bool>(), any::<bool>()), 1..25),
        queries in proptest::collection::vec((0usize..3, 0u64..2000, 0u64..600), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let names = ["x", "y", "z"];
        let mut model: Vec<Vec<u64>> = vec![Vec::new(); 3];
        let mut end = 0;
        let mut index = Index::open(dir.path(), 1 << 20, None).unwrap();
        for (s, n, flush, reopen) in steps {
            let first = model[s].len() as u64;
            append(&index, names[s], first, n, &mut end);
            model[s].extend((0..n).map(|i| end - (n - i) * 10));
            if flush {
                index.flush().unwrap();
            }
            if flush && reopen {
                drop(index);
                index = Index::open(dir.path(), 1 << 20, None).unwrap();
            }
        }
        for (s, from, len) in queries {
            let to = from + len;
            let got = index.positions(names[s], from, to).unwrap();
            let m = &model[s];
            let want: Vec<u64> = m
                .iter()
                .copied()
                .skip(from as usize)
                .take((to - from + 1) as usize)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn grouping_keeps_each_derived_streams_order_with_many_keys() {
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let mut g = Grouped::default();
    for round in 0..3u64 {
        for (i, k) in keys.iter().enumerate() {
            g.add(CATEGORY_PREFIX, k, round * 100 + i as u64);
            g.add(EVENT_TYPE_PREFIX, k, 1000 + round * 100 + i as u64);
        }
    }
    assert_eq!(g.groups.len(), 80);
    for (prefix, key, positions) in &g.groups {
        let i: u64 = key[1..].parse().unwrap();
        let base = if *prefix == EVENT_TYPE_PREFIX {
            1000
        } else {
            0
        };
        assert_eq!(positions, &vec![base + i, base + 100 + i, base + 200 + i]);
    }
}
