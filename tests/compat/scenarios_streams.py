"""Scenarios of appends, stream and $all reads, stream metadata and deletes."""
import scenario_support as support
from scenario_support import *  # noqa: F403  (helpers, client types and exceptions)

client: KurrentDBClient = None  # type: ignore[assignment]  # noqa: F405


def setUpModule():
    global client
    client = support.connect()


def tearDownModule():
    client.close()


class Appends(unittest.TestCase):
    def test_single_event_each_expected_kind(self):
        s = uniq("app1")
        p0 = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=ev(0))
        p1 = client.append_to_stream(s, current_version=0, events=ev(1))
        p2 = client.append_to_stream(s, current_version=StreamState.EXISTS, events=ev(2))
        p3 = client.append_to_stream(s, current_version=StreamState.ANY, events=ev(3))
        self.assertTrue(1 <= p0 < p1 < p2 < p3, (p0, p1, p2, p3))
        got = client.get_stream(s)
        self.assertEqual([e.stream_position for e in got], [0, 1, 2, 3])
        self.assertEqual([e.commit_position for e in got], [p0, p1, p2, p3])
        s2 = uniq("app1any")  # ANY on a missing stream creates it
        client.append_to_stream(s2, current_version=StreamState.ANY, events=ev(0))
        self.assertEqual(client.get_current_version(s2), 0)

    def test_many_events_each_expected_kind(self):
        s = uniq("app2")
        a = [ev(i) for i in range(3)]
        p_a = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=a)
        b = [ev(3), ev(4)]
        p_b = client.append_to_stream(s, current_version=2, events=b)
        c = [ev(5)]
        p_c = client.append_to_stream(s, current_version=StreamState.EXISTS, events=c)
        d = [ev(6), ev(7)]
        p_d = client.append_to_stream(s, current_version=StreamState.ANY, events=d)
        self.assertTrue(p_a < p_b < p_c < p_d)
        got = client.get_stream(s)
        self.assertEqual(ids(got), ids(a + b + c + d))
        self.assertEqual([e.stream_position for e in got], list(range(8)))
        # The returned position is the commit position of the last event of the batch.
        self.assertEqual(got[2].commit_position, p_a)
        self.assertEqual(got[7].commit_position, p_d)
        s2 = uniq("app2any")
        client.append_to_stream(s2, current_version=StreamState.ANY, events=[ev(0), ev(1)])
        self.assertEqual(client.get_current_version(s2), 1)

    def _conflicts(self, wrap):
        s = uniq("conf")
        missing = uniq("conf-missing")
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=wrap(ev(0)))
        client.append_to_stream(s, current_version=0, events=wrap(ev(1)))
        cases = [
            (s, StreamState.NO_STREAM, 1),
            (s, 0, 1),
            (s, 5, 1),
            (missing, StreamState.EXISTS, StreamState.NO_STREAM),
            (missing, 0, StreamState.NO_STREAM),
        ]
        for stream, expected, actual in cases:
            with self.subTest(stream=stream, expected=expected):
                with self.assertRaises(WrongCurrentVersionError) as cm:
                    client.append_to_stream(stream, current_version=expected, events=wrap(ev(9)))
                self.assertEqual(cm.exception.actual_version, actual)
        self.assertEqual(len(client.get_stream(s)), 2)
        with self.assertRaises(NotFoundError):
            client.get_stream(missing)

    def test_conflicts_single_event_append_rpc(self):
        self._conflicts(lambda e: e)

    def test_conflicts_list_batch_append_rpc(self):
        self._conflicts(lambda e: [e])

    def test_empty_append_checks_the_expectation_and_writes_nothing(self):
        s = uniq("empty")
        # A missing stream: nothing to report a position for.
        self.assertEqual(
            client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[]), 0)
        with self.assertRaises(WrongCurrentVersionError):
            client.append_to_stream(s, current_version=0, events=[])
        p1 = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[ev(0), ev(1)])
        # An existing stream: its last event's position, and nothing written.
        self.assertEqual(client.append_to_stream(s, current_version=1, events=[]), p1)
        self.assertEqual(client.append_to_stream(s, current_version=StreamState.EXISTS, events=[]), p1)
        with self.assertRaises(WrongCurrentVersionError):
            client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[])
        self.assertEqual(len(client.get_stream(s)), 2)
        client.tombstone_stream(s, current_version=1)
        assert_stream_deleted(self, client.append_to_stream, s,
                              current_version=StreamState.ANY, events=[])

    def test_idempotent_retry_single_event(self):
        s = uniq("idem1")
        e0, e1 = ev(0), ev(1)
        p0 = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e0)
        p1 = client.append_to_stream(s, current_version=0, events=e1)
        self.assertEqual(client.append_to_stream(s, current_version=0, events=e1), p1)
        self.assertEqual(
            client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e0), p0)
        self.assertEqual(ids(client.get_stream(s)), [e0.id, e1.id])

    def test_idempotent_retry_many_events(self):
        s = uniq("idem2")
        a = [ev(0), ev(1), ev(2)]
        b = [ev(3), ev(4)]
        p_a = client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=a)
        p_b = client.append_to_stream(s, current_version=2, events=b)
        self.assertEqual(client.append_to_stream(s, current_version=2, events=b), p_b)
        self.assertEqual(
            client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=a), p_a)
        self.assertEqual(client.append_to_stream(s, current_version=StreamState.ANY, events=b),
                         p_b)
        self.assertEqual(ids(client.get_stream(s)), ids(a + b))

    def test_a_retry_overlapping_later_events_is_a_wrong_version(self):
        s = uniq("idem3")
        e = [ev(0), ev(1), ev(2)]
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e)
        # Events 1 and 2 are there, 3 is new: as KurrentDB, a wrong expected version.
        for events in ([e[1], e[2], ev(3)], [e[2], ev(3)]):
            with self.assertRaises(WrongCurrentVersionError) as cm:
                client.append_to_stream(s, current_version=0, events=events)
            self.assertEqual(cm.exception.actual_version, 2)
        self.assertEqual(len(client.get_stream(s)), 3)


class ReadStream(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = uniq("rs")
        cls.events = [
            ev(0, metadata=b'{"m":0}'),
            NewEvent(type="Bin", data=b"\x00\x01", content_type="application/octet-stream"),
        ] + [ev(i) for i in range(2, 6)]
        client.append_to_stream(cls.s, current_version=StreamState.NO_STREAM, events=cls.events)

    def test_forwards_and_fields(self):
        got = client.get_stream(self.s)
        self.assertEqual(ids(got), ids(self.events))
        self.assertEqual([e.stream_position for e in got], list(range(6)))
        first, binary = got[0], got[1]
        self.assertEqual(first.stream_name, self.s)
        self.assertEqual(first.type, "Scenario")
        self.assertEqual(first.data, b'{"n": 0}')
        self.assertEqual(first.metadata, b'{"m":0}')
        self.assertEqual(first.content_type, "application/json")
        self.assertIsNotNone(first.recorded_at)
        self.assertEqual(binary.content_type, "application/octet-stream")
        self.assertEqual(binary.data, b"\x00\x01")
        self.assertTrue(all(e.commit_position == e.prepare_position for e in got))

    def test_backwards(self):
        got = client.get_stream(self.s, backwards=True)
        self.assertEqual(ids(got), ids(self.events[::-1]))

    def test_limits(self):
        self.assertEqual(ids(client.get_stream(self.s, limit=2)), ids(self.events[:2]))
        self.assertEqual(ids(client.get_stream(self.s, backwards=True, limit=2)),
                         ids(self.events[:-3:-1]))

    def test_from_position_inclusive(self):
        self.assertEqual(ids(client.get_stream(self.s, stream_position=3)),
                         ids(self.events[3:]))
        self.assertEqual(ids(client.get_stream(self.s, stream_position=3, limit=2)),
                         ids(self.events[3:5]))
        self.assertEqual(ids(client.get_stream(self.s, stream_position=3, backwards=True)),
                         ids(self.events[3::-1]))
        self.assertEqual(client.get_stream(self.s, stream_position=6), ())

    def test_read_stream_iterator(self):
        with client.read_stream(self.s, limit=3) as r:
            self.assertEqual(ids(list(r)), ids(self.events[:3]))

    def test_current_version(self):
        self.assertEqual(client.get_current_version(self.s), 5)
        self.assertEqual(client.get_current_version(uniq("nothing")), StreamState.NO_STREAM)

    def test_missing_stream_not_found(self):
        missing = uniq("nothing")
        with self.assertRaises(NotFoundError):
            client.get_stream(missing)
        with self.assertRaises(NotFoundError):
            client.get_stream(missing, backwards=True, limit=1)
        with self.assertRaises(NotFoundError):
            list(client.read_stream(missing))


class ReadAll(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tag = uniq("ra")
        cls.s1, cls.s2 = f"{cls.tag}-one", f"{cls.tag}-two"
        cls.etype = f"Type{uuid.uuid4().hex}"
        cls.a = [ev(0), ev(1)]
        cls.b = [NewEvent(type=cls.etype, data=b"{}"), ev(3)]
        cls.c = [ev(4)]
        client.append_to_stream(cls.s1, current_version=StreamState.NO_STREAM, events=cls.a)
        client.append_to_stream(cls.s2, current_version=StreamState.NO_STREAM, events=cls.b)
        client.append_to_stream(cls.s1, current_version=1, events=cls.c)
        cls.all = cls.a + cls.b + cls.c
        cls.positions = [e.commit_position for e in client.get_stream(cls.s1)][:2]

    def mine(self, events):
        return [e for e in events if e.stream_name.startswith(self.tag)]

    def test_positions(self):
        first = next(iter(client.read_all(limit=1, filter_exclude=())))
        self.assertGreaterEqual(first.commit_position, 1)
        got = list(client.read_all(filter_include=[re.escape(self.tag) + ".*"],
                                   filter_by_stream_name=True))
        self.assertEqual(ids(got), ids(self.all))
        cps = [e.commit_position for e in got]
        self.assertEqual(cps, sorted(set(cps)))
        self.assertTrue(all(e.commit_position == e.prepare_position for e in got))

    def test_no_filter_from_position_inclusive_with_limit(self):
        start = self.positions[0]
        got = list(client.read_all(commit_position=start, limit=5, filter_exclude=()))
        self.assertEqual(got[0].commit_position, start)
        self.assertEqual(ids(self.mine(got)), ids(self.all))
        got = list(client.read_all(commit_position=self.positions[1], limit=2))
        self.assertEqual(ids(got), ids(self.all[1:3]))

    def test_default_filter_forwards_from_start(self):
        got = ids(client.read_all())
        self.assertEqual([i for i in got if i in set(ids(self.all))], ids(self.all))

    def test_backwards(self):
        got = list(client.read_all(backwards=True, filter_include=[re.escape(self.tag) + ".*"],
                                   filter_by_stream_name=True, limit=3))
        self.assertEqual(ids(got), ids(self.all[:-4:-1]))
        got = list(client.read_all(backwards=True, **only(self.s1)))
        self.assertEqual(ids(got), ids((self.a + self.c)[::-1]))

    def test_backwards_from_position(self):
        # KurrentDB: a backwards read from a position returns the events before it.
        pos = client.get_stream(self.s2)[1].commit_position
        got = list(client.read_all(commit_position=pos, backwards=True,
                                   filter_include=[re.escape(self.tag) + ".*"],
                                   filter_by_stream_name=True))
        self.assertEqual(ids(got), ids(self.all[2::-1]))

    def test_filter_include_stream_name(self):
        self.assertEqual(ids(client.read_all(**only(self.s2))), ids(self.b))
        got = list(client.read_all(filter_include=[re.escape(self.s1), re.escape(self.s2)],
                                   filter_by_stream_name=True))
        self.assertEqual(ids(got), ids(self.all))

    def test_filter_include_limit_and_position(self):
        got = list(client.read_all(limit=2, **only(self.s1)))
        self.assertEqual(ids(got), ids(self.a))
        got = list(client.read_all(commit_position=self.positions[1], **only(self.s1)))
        self.assertEqual(ids(got), ids(self.a[1:] + self.c))

    def test_filter_event_type(self):
        self.assertEqual(ids(client.read_all(filter_include=[self.etype])), ids(self.b[:1]))

    def test_filter_exclude(self):
        start = self.positions[0]
        got = list(client.read_all(commit_position=start, filter_exclude=[re.escape(self.s1)],
                                   filter_by_stream_name=True, limit=10))
        self.assertEqual(ids(self.mine(got)), ids(self.b))
        got = list(client.read_all(commit_position=start, filter_exclude=[self.etype],
                                   limit=10))
        self.assertEqual(ids(self.mine(got)), ids(self.a + self.b[1:] + self.c))

    def test_filter_prefix(self):
        got = list(client.read_all(filter_include=[self.tag], filter_by_stream_name=True,
                                   filter_by_prefix=True))
        self.assertEqual(ids(got), ids(self.all))
        got = list(client.read_all(filter_include=[f"{self.tag}-tw"], filter_by_stream_name=True,
                                   filter_by_prefix=True, backwards=True))
        self.assertEqual(ids(got), ids(self.b[::-1]))
        got = list(client.read_all(filter_include=[self.etype[:-4]], filter_by_prefix=True))
        self.assertEqual(ids(got), ids(self.b[:1]))

    def test_commit_position_and_system_events_excluded_by_default(self):
        last = client.get_stream(self.s1)[-1].commit_position
        self.assertGreaterEqual(client.get_commit_position(), last)
        self.assertTrue(all(not e.type.startswith("$") for e in client.read_all(
            commit_position=self.positions[0])))


class Metadata(unittest.TestCase):
    def test_set_get_and_conflicts(self):
        s = uniq("meta")
        self.assertEqual(client.get_stream_metadata(s), ({}, StreamState.NO_STREAM))
        client.set_stream_metadata(s, metadata={"$maxCount": 10},
                                   current_version=StreamState.NO_STREAM)
        self.assertEqual(client.get_stream_metadata(s), ({"$maxCount": 10}, 0))
        client.set_stream_metadata(s, metadata={"$maxAge": 3600}, current_version=0)
        self.assertEqual(client.get_stream_metadata(s), ({"$maxAge": 3600}, 1))
        with self.assertRaises(WrongCurrentVersionError):
            client.set_stream_metadata(s, metadata={"$maxCount": 1}, current_version=0)
        with self.assertRaises(WrongCurrentVersionError):
            client.set_stream_metadata(s, metadata={"$maxCount": 1},
                                       current_version=StreamState.NO_STREAM)
        client.set_stream_metadata(s, metadata={"$maxCount": 2})  # ANY
        self.assertEqual(client.get_stream_metadata(s), ({"$maxCount": 2}, 2))
        self.assertEqual(client.get_current_version(s), StreamState.NO_STREAM)

    def test_custom_keys_round_trip(self):
        s = uniq("meta")
        meta = {"$maxCount": 5, "custom": {"owner": "scenarios"}, "flag": True}
        client.set_stream_metadata(s, metadata=meta)
        self.assertEqual(client.get_stream_metadata(s)[0], meta)

    def test_max_count_truncates_reads(self):
        s = uniq("meta")
        events = [ev(i) for i in range(5)]
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=events)
        client.set_stream_metadata(s, metadata={"$maxCount": 2})
        self.assertEqual(ids(client.get_stream(s)), ids(events[3:]))
        self.assertEqual(client.get_current_version(s), 4)


class Deletes(unittest.TestCase):
    def _stream(self, n=3):
        s = uniq("del")
        client.append_to_stream(s, current_version=StreamState.NO_STREAM,
                                events=[ev(i) for i in range(n)])
        return s

    def test_soft_delete_then_reads(self):
        s = self._stream()
        with self.assertRaises(WrongCurrentVersionError):
            client.delete_stream(s, current_version=1)
        client.delete_stream(s, current_version=2)
        with self.assertRaises(NotFoundError):
            client.get_stream(s)
        self.assertEqual(client.get_current_version(s), StreamState.NO_STREAM)
        with self.assertRaises(NotFoundError):
            client.delete_stream(uniq("del-missing"), current_version=0)
        # A stream that was never written cannot be deleted, whatever is expected.
        for expected in (StreamState.NO_STREAM, StreamState.ANY):
            missing = uniq("del-missing")
            with self.assertRaises(NotFoundError):
                client.delete_stream(missing, current_version=expected)
            self.assertEqual(client.get_stream_metadata(missing), ({}, StreamState.NO_STREAM))

    def test_soft_delete_then_append_no_stream_recreates(self):
        s = self._stream()
        client.delete_stream(s, current_version=StreamState.ANY)
        e = ev(10)
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e)
        got = client.get_stream(s)
        self.assertEqual(ids(got), [e.id])
        self.assertEqual(got[0].stream_position, 3)
        self.assertEqual(client.get_current_version(s), 3)

    def test_soft_delete_tb_is_the_maximum_until_the_stream_comes_back(self):
        s = self._stream()
        client.delete_stream(s, current_version=2)
        metadata, version = client.get_stream_metadata(s)
        self.assertEqual(metadata["$tb"], 9223372036854775807)
        metadata["owner"] = "ops"
        client.set_stream_metadata(s, metadata=metadata, current_version=version)
        with self.assertRaises(NotFoundError):
            client.get_stream(s)
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=[ev(10)])
        metadata, _ = client.get_stream_metadata(s)
        self.assertEqual(metadata, {"$tb": 3, "owner": "ops"})
        self.assertEqual([e.stream_position for e in client.get_stream(s)], [3])

    def test_metadata_of_a_tombstoned_stream(self):
        s = self._stream()
        client.set_stream_metadata(s, metadata={"a": 1}, current_version=StreamState.NO_STREAM)
        client.set_stream_metadata(s, metadata={"a": 2}, current_version=0)
        client.tombstone_stream(s, current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            client.get_stream_metadata(s)
        # Writes are accepted, as by KurrentDB, counting from the last metadata revision.
        client.set_stream_metadata(s, metadata={"a": 3}, current_version=1)
        client.set_stream_metadata(s, metadata={"a": 4}, current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            client.get_stream_metadata(s)
        with self.assertRaises(StreamIsDeletedError):
            client.get_stream(s)

    def test_soft_delete_then_append_old_revision_recreates(self):
        s = self._stream()
        client.delete_stream(s, current_version=StreamState.EXISTS)
        e = [ev(10), ev(11)]
        client.append_to_stream(s, current_version=2, events=e)
        got = client.get_stream(s)
        self.assertEqual(ids(got), ids(e))
        self.assertEqual([x.stream_position for x in got], [3, 4])

    def test_soft_delete_then_append_any_recreates(self):
        s = self._stream()
        client.delete_stream(s, current_version=2)
        e = ev(10)
        client.append_to_stream(s, current_version=StreamState.ANY, events=e)
        got = client.get_stream(s)
        self.assertEqual(ids(got), [e.id])
        self.assertEqual(got[0].stream_position, 3)

    def test_tombstone(self):
        s = self._stream()
        client.tombstone_stream(s, current_version=2)
        with self.assertRaises(StreamIsDeletedError):
            client.get_stream(s)
        for version in (StreamState.ANY, StreamState.NO_STREAM, 2):
            with self.subTest(version=version, rpc="BatchAppend"):
                with self.assertRaises(StreamIsDeletedError):
                    client.append_to_stream(s, current_version=version, events=[ev(9)])
            with self.subTest(version=version, rpc="Append"):
                assert_stream_deleted(self, client.append_to_stream, s,
                                      current_version=version, events=ev(9))
        with self.assertRaises(StreamIsDeletedError):
            client.delete_stream(s, current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            client.tombstone_stream(s, current_version=StreamState.ANY)

    def test_tombstone_after_soft_delete_and_missing(self):
        s = self._stream()
        client.delete_stream(s, current_version=2)
        client.tombstone_stream(s, current_version=StreamState.ANY)
        with self.assertRaises(StreamIsDeletedError):
            client.get_stream(s)
        m = uniq("del-never")
        client.tombstone_stream(m, current_version=StreamState.NO_STREAM)
        with self.assertRaises(StreamIsDeletedError):
            client.append_to_stream(m, current_version=StreamState.ANY, events=[ev(0)])
        assert_stream_deleted(self, client.append_to_stream, m,
                              current_version=StreamState.ANY, events=ev(0))
