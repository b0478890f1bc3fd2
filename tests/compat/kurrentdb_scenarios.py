"""Scenario suite: drives a Strata server with the official KurrentDB Python client
(kurrentdbclient) through the KurrentDB client protocol v1, one unittest per scenario.

Covers appends (Append and BatchAppend RPCs) with every expected-position kind and their
conflicts, idempotent retries, stream reads, $all reads with filters, stream metadata, soft
deletes and tombstones, catch-up subscriptions (stream and $all, checkpoints, caught-up) and
persistent subscriptions (stream and $all, ack/nack, parking, info, list, update, delete,
consumer strategies).

Usage: python kurrentdb_scenarios.py kurrentdb://HOST:PORT?tls=false [unittest args]
Prints one final line: "compat scenarios: N passed, M failed"; exits 0 only when M == 0.
"""
import json
import re
import sys
import threading
import time
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    AlreadyExistsError,
    FailedPreconditionError,
    InternalError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)

unittest.TestCase.maxDiff = None
URL = "kurrentdb://localhost:2113?tls=false"
SUB_TIMEOUT = 30  # seconds: gRPC deadline of every subscription call (generous: CI may be slow)
client: KurrentDBClient = None  # type: ignore[assignment]


def setUpModule():
    global client
    client = KurrentDBClient(URL)


def tearDownModule():
    client.close()


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex}"


def ev(n, type_="Scenario", metadata=b""):
    return NewEvent(type=type_, data=json.dumps({"n": n}).encode(), metadata=metadata)


def only(stream):
    """Keyword arguments for a $all read/subscription that match exactly one stream."""
    return {"filter_include": [re.escape(stream)], "filter_by_stream_name": True}


def take(sub, n):
    """The next n items of a (catch-up or persistent) subscription."""
    out = []
    if n == 0:
        return out
    for item in sub:
        out.append(item)
        if len(out) == n:
            break
    return out


def ids(items):
    return [e.id for e in items]


def assert_stream_deleted(test, fn, *args, **kwargs):
    """StreamIsDeletedError, or (Append RPC only) the FailedPreconditionError that
    kurrentdbclient 1.3.5 raises for KurrentDB's plain FAILED_PRECONDITION "Event stream
    '...' is deleted." status: its Append path does not map that status to
    StreamIsDeletedError (BatchAppend and reads do), so the real server gives the same."""
    with test.assertRaises((StreamIsDeletedError, FailedPreconditionError)) as cm:
        fn(*args, **kwargs)
    if not isinstance(cm.exception, StreamIsDeletedError):
        test.assertIn("is deleted", str(cm.exception))
    return cm.exception


def wait_until(pred, what, timeout=20):
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


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


class CatchUp(unittest.TestCase):
    def _stream(self, n=3):
        s = uniq("cu")
        events = [ev(i) for i in range(n)]
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=events)
        return s, events

    def test_stream_from_start_then_live(self):
        s, events = self._stream()
        live = ev(3)
        with client.subscribe_to_stream(s, timeout=SUB_TIMEOUT) as sub:
            got = take(sub, 3)
            client.append_to_stream(s, current_version=2, events=live)
            got += take(sub, 1)
        self.assertEqual(ids(got), ids(events + [live]))
        self.assertEqual([e.stream_position for e in got], [0, 1, 2, 3])

    def test_stream_from_end_only_new(self):
        s, _ = self._stream()
        new = [ev(3), ev(4)]
        with client.subscribe_to_stream(s, from_end=True, timeout=SUB_TIMEOUT) as sub:
            client.append_to_stream(s, current_version=2, events=new)
            got = take(sub, 2)
        self.assertEqual(ids(got), ids(new))

    def test_stream_from_revision_exclusive(self):
        s, events = self._stream(4)
        with client.subscribe_to_stream(s, stream_position=1, timeout=SUB_TIMEOUT) as sub:
            got = take(sub, 2)
        self.assertEqual(ids(got), ids(events[2:]))

    def test_stream_not_yet_existing(self):
        s = uniq("cu-later")
        e = ev(0)
        with client.subscribe_to_stream(s, timeout=SUB_TIMEOUT) as sub:
            client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e)
            self.assertEqual(ids(take(sub, 1)), [e.id])

    def test_stream_caught_up(self):
        s, events = self._stream()
        live = ev(3)
        with client.subscribe_to_stream(s, include_caught_up=True, timeout=SUB_TIMEOUT) as sub:
            got = take(sub, 4)
            client.append_to_stream(s, current_version=2, events=live)
            got += take(sub, 1)
        self.assertEqual(ids(got[:3]), ids(events))
        self.assertTrue(got[3].is_caught_up, got[3])
        self.assertEqual(got[4].id, live.id)

    def test_all_filtered_from_start_then_live(self):
        s, events = self._stream()
        live = ev(3)
        with client.subscribe_to_all(timeout=SUB_TIMEOUT, **only(s)) as sub:
            got = take(sub, 3)
            client.append_to_stream(s, current_version=2, events=live)
            got += take(sub, 1)
        self.assertEqual(ids(got), ids(events + [live]))

    def test_all_from_end_only_new(self):
        s, _ = self._stream()
        new = ev(3)
        with client.subscribe_to_all(from_end=True, timeout=SUB_TIMEOUT, **only(s)) as sub:
            client.append_to_stream(s, current_version=2, events=new)
            got = take(sub, 1)
        self.assertEqual(ids(got), [new.id])
        # Unfiltered (default filter) from the end: the next event is ours.
        new2 = ev(4)
        with client.subscribe_to_all(from_end=True, timeout=SUB_TIMEOUT) as sub:
            client.append_to_stream(s, current_version=3, events=new2)
            self.assertEqual(ids(take(sub, 1)), [new2.id])

    def test_all_from_position_exclusive(self):
        s, events = self._stream()
        p0 = client.get_stream(s)[0].commit_position
        with client.subscribe_to_all(commit_position=p0, timeout=SUB_TIMEOUT, **only(s)) as sub:
            got = take(sub, 2)
        self.assertEqual(ids(got), ids(events[1:]))
        with client.subscribe_to_all(commit_position=p0, timeout=SUB_TIMEOUT,
                                     filter_exclude=()) as sub:
            got = take(sub, 1)
        self.assertEqual(ids(got), ids(events[1:2]))

    def test_all_filter_prefix_and_event_type(self):
        tag = uniq("cupre")
        etype = f"Type{uuid.uuid4().hex}"
        a = ev(0)
        b = NewEvent(type=etype, data=b"{}")
        client.append_to_stream(f"{tag}-a", current_version=StreamState.ANY, events=a)
        client.append_to_stream(uniq("cu-other"), current_version=StreamState.ANY, events=b)
        with client.subscribe_to_all(filter_include=[tag], filter_by_stream_name=True,
                                     filter_by_prefix=True, timeout=SUB_TIMEOUT) as sub:
            self.assertEqual(ids(take(sub, 1)), [a.id])
        with client.subscribe_to_all(filter_include=[etype], timeout=SUB_TIMEOUT) as sub:
            self.assertEqual(ids(take(sub, 1)), [b.id])

    def test_all_checkpoint_with_rare_filter(self):
        start = client.get_commit_position()
        s, _ = self._stream(5)
        end = client.get_commit_position()
        rare = uniq("never-written")
        with client.subscribe_to_all(commit_position=start, include_checkpoints=True,
                                     window_size=1, checkpoint_interval_multiplier=1,
                                     timeout=SUB_TIMEOUT, **only(rare)) as sub:
            first = take(sub, 1)[0]
        self.assertTrue(first.is_checkpoint, first)
        self.assertEqual(first.commit_position, first.prepare_position)
        self.assertTrue(start <= first.commit_position <= end, (start, first, end))

    def test_all_checkpoint_when_going_live(self):
        # Default window (far more than the few events scanned): KurrentDB still sends a
        # checkpoint when the filtered catch-up reaches the end of $all, before going live.
        s, _ = self._stream(1)
        start = client.get_stream(s)[0].commit_position
        client.append_to_stream(s, current_version=0, events=[ev(1), ev(2), ev(3)])
        end = client.get_commit_position(filter_exclude=())
        rare = uniq("never-written")
        with client.subscribe_to_all(commit_position=start, include_checkpoints=True,
                                     timeout=SUB_TIMEOUT, **only(rare)) as sub:
            first = take(sub, 1)[0]
        self.assertTrue(first.is_checkpoint, first)
        self.assertTrue(start <= first.commit_position, (start, first, end))

    def test_all_caught_up(self):
        s, events = self._stream()
        live = ev(3)
        with client.subscribe_to_all(include_caught_up=True, timeout=SUB_TIMEOUT,
                                     **only(s)) as sub:
            got = take(sub, 4)
            client.append_to_stream(s, current_version=2, events=live)
            got += take(sub, 1)
        self.assertEqual(ids(got[:3]), ids(events))
        self.assertTrue(got[3].is_caught_up, got[3])
        self.assertEqual(got[4].id, live.id)


class Persistent(unittest.TestCase):
    def _stream(self, n=3):
        s = uniq("ps")
        events = [ev(i) for i in range(n)]
        client.append_to_stream(s, current_version=StreamState.NO_STREAM, events=events)
        return s, events

    def _read(self, g, s=None):
        if s is None:
            return client.read_subscription_to_all(g, timeout=SUB_TIMEOUT)
        return client.read_subscription_to_stream(g, s, timeout=SUB_TIMEOUT)

    def _take_ack(self, sub, n):
        got = take(sub, n)
        for e in got:
            sub.ack(e)
        return got

    def test_stream_from_start_ack_and_live(self):
        s, events = self._stream()
        g = uniq("g")
        client.create_subscription_to_stream(g, s)
        sub = self._read(g, s)
        try:
            got = self._take_ack(sub, 3)
            live = ev(3)
            client.append_to_stream(s, current_version=2, events=live)
            got += self._take_ack(sub, 1)
        finally:
            sub.stop()
        self.assertEqual(ids(got), ids(events + [live]))
        client.delete_subscription(g, s)

    def test_stream_from_position_inclusive(self):
        s, events = self._stream(4)
        g = uniq("g")
        client.create_subscription_to_stream(g, s, stream_position=2)
        sub = self._read(g, s)
        try:
            got = self._take_ack(sub, 2)
        finally:
            sub.stop()
        self.assertEqual(ids(got), ids(events[2:]))

    def test_stream_from_end(self):
        s, _ = self._stream()
        g = uniq("g")
        client.create_subscription_to_stream(g, s, from_end=True)
        sub = self._read(g, s)
        try:
            new = ev(3)
            client.append_to_stream(s, current_version=2, events=new)
            got = self._take_ack(sub, 1)
        finally:
            sub.stop()
        self.assertEqual(ids(got), [new.id])

    def test_all_filtered_from_start(self):
        s, events = self._stream()
        g = uniq("g")
        client.create_subscription_to_all(g, **only(s))
        info = client.get_subscription_info(g)
        self.assertEqual(info.event_source, "$all")
        sub = self._read(g)
        try:
            got = self._take_ack(sub, 3)
        finally:
            sub.stop()
        self.assertEqual(ids(got), ids(events))
        client.delete_subscription(g)

    def test_all_from_position_inclusive_and_no_system_streams(self):
        s, events = self._stream(2)
        p0 = client.get_stream(s)[0].commit_position
        client.set_stream_metadata(s, metadata={"$maxCount": 100})  # $$stream in KurrentDB
        later = ev(2)
        client.append_to_stream(s, current_version=1, events=later)
        g = uniq("g")
        client.create_subscription_to_all(g, commit_position=p0, filter_exclude=())
        sub = self._read(g)
        try:
            got = self._take_ack(sub, 3)
        finally:
            sub.stop()
        self.assertFalse([e.stream_name for e in got if e.stream_name.startswith("$")])
        self.assertEqual(ids(got), ids(events + [later]))
        client.delete_subscription(g)

    def test_all_from_end(self):
        s, _ = self._stream()
        g = uniq("g")
        client.create_subscription_to_all(g, from_end=True, **only(s))
        sub = self._read(g)
        try:
            new = ev(3)
            client.append_to_stream(s, current_version=2, events=new)
            got = self._take_ack(sub, 1)
        finally:
            sub.stop()
        self.assertEqual(ids(got), [new.id])
        client.delete_subscription(g)

    def test_nack_retry_redelivers(self):
        s, events = self._stream(2)
        g = uniq("g")
        client.create_subscription_to_stream(g, s)
        sub = self._read(g, s)
        try:
            first = take(sub, 1)[0]
            self.assertEqual(first.id, events[0].id)
            sub.nack(first, action="retry")
            seen = []
            for e in sub:
                seen.append(e)
                if e.id == events[0].id:
                    break
                sub.ack(e)
            again = seen[-1]
            sub.ack(again)
        finally:
            sub.stop()
        self.assertEqual(again.id, events[0].id)
        base = first.retry_count or 0
        self.assertEqual(again.retry_count, base + 1, (first.retry_count, again.retry_count))

    def test_nack_park_then_replay(self):
        s, events = self._stream(2)
        g = uniq("g")
        client.create_subscription_to_stream(g, s)
        sub = self._read(g, s)
        try:
            first = take(sub, 1)[0]
            sub.nack(first, action="park")
            second = self._take_ack(sub, 1)[0]
            self.assertEqual(second.id, events[1].id)
            wait_until(lambda: client.get_subscription_info(g, s).parked_message_count == 1,
                       "parked_message_count == 1")
            client.replay_parked_events(g, s)
            again = self._take_ack(sub, 1)[0]
            self.assertEqual(again.id, events[0].id)
            wait_until(lambda: client.get_subscription_info(g, s).parked_message_count == 0,
                       "parked_message_count == 0 after replay")
        finally:
            sub.stop()

    def test_nack_park_replay_on_all(self):
        s, events = self._stream(1)
        g = uniq("g")
        client.create_subscription_to_all(g, **only(s))
        sub = self._read(g)
        try:
            first = take(sub, 1)[0]
            sub.nack(first, action="park")
            wait_until(lambda: client.get_subscription_info(g).parked_message_count == 1,
                       "parked_message_count == 1")
            client.replay_parked_events(g)
            again = self._take_ack(sub, 1)[0]
        finally:
            sub.stop()
        self.assertEqual(again.id, events[0].id)
        client.delete_subscription(g)

    def test_nack_skip(self):
        s, events = self._stream(2)
        g = uniq("g")
        client.create_subscription_to_stream(g, s)
        sub = self._read(g, s)
        try:
            first = take(sub, 1)[0]
            sub.nack(first, action="skip")
            got = self._take_ack(sub, 1)
            sentinel = ev(2)
            client.append_to_stream(s, current_version=1, events=sentinel)
            got += self._take_ack(sub, 1)
        finally:
            sub.stop()
        self.assertEqual(first.id, events[0].id)
        self.assertEqual(ids(got), [events[1].id, sentinel.id])
        self.assertEqual(client.get_subscription_info(g, s).parked_message_count, 0)

    def test_inconsistent_settings_are_refused_as_kurrentdb_does(self):
        # A history buffer smaller than a read batch, on create and on update, and an unknown
        # consumer strategy: KurrentDB answers INTERNAL, which the client raises as its own.
        g = uniq("g")
        with self.assertRaises(InternalError):
            client.create_subscription_to_all(g, read_batch_size=200, history_buffer_size=100)
        client.create_subscription_to_all(g, read_batch_size=200, history_buffer_size=200)
        with self.assertRaises(InternalError):
            client.update_subscription_to_all(g, read_batch_size=200, history_buffer_size=100)
        with self.assertRaises(InternalError):
            client.create_subscription_to_all(uniq("g"), consumer_strategy="InvalidStrategy")
        client.delete_subscription(g)

    def test_info_fields_stream(self):
        s, _ = self._stream(1)
        g = uniq("g")
        settings = dict(
            consumer_strategy="RoundRobin", message_timeout=12.5, max_retry_count=7,
            checkpoint_after=3.0, min_checkpoint_count=4, max_checkpoint_count=40,
            max_subscriber_count=3, live_buffer_size=300, read_batch_size=50,
            history_buffer_size=400, extra_statistics=True, resolve_links=True)
        client.create_subscription_to_stream(g, s, **settings)
        i = client.get_subscription_info(g, s)
        self.assertEqual((i.group_name, i.event_source), (g, s))
        self.assertEqual(i.parked_message_count, 0)
        self.assertTrue(i.status, i)
        actual = {k: getattr(i, k) for k in settings}
        self.assertEqual({k: v for k, v in actual.items() if v != settings[k]}, {},
                         f"settings given at create vs reported by info: {settings}")

    def test_info_start_from_as_created(self):
        # KurrentDB reports the start as given: "0"/"C:0/P:0" for start, the revision or
        # "C:p/P:p" for a position, "-1"/"C:-1/P:-1" for end (the client's update reads it).
        s, _ = self._stream(3)
        p = client.get_stream(s)[1].commit_position
        cases = [
            ("stream start", dict(), "0"),
            ("stream revision", dict(stream_position=1), "1"),
            ("stream end", dict(from_end=True), "-1"),
            ("all start", dict(), "C:0/P:0"),
            ("all position", dict(commit_position=p), f"C:{p}/P:{p}"),
            ("all end", dict(from_end=True), "C:-1/P:-1"),
        ]
        got = {}
        for label, kwargs, _ in cases:
            g = uniq("g")
            if label.startswith("stream"):
                client.create_subscription_to_stream(g, s, **kwargs)
                got[label] = client.get_subscription_info(g, s).start_from
            else:
                client.create_subscription_to_all(g, **kwargs, **only(s))
                got[label] = client.get_subscription_info(g).start_from
                client.delete_subscription(g)
        expected = {label: want for label, _, want in cases}
        self.assertEqual(got, expected)

    def test_info_fields_all_and_connections(self):
        s, _ = self._stream(1)
        g = uniq("g")
        client.create_subscription_to_all(g, message_timeout=9.0, max_retry_count=2, **only(s))
        i = client.get_subscription_info(g)
        self.assertEqual((i.group_name, i.event_source), (g, "$all"))
        self.assertEqual(i.consumer_strategy, "DispatchToSingle")
        self.assertEqual((i.message_timeout, i.max_retry_count), (9.0, 2))
        self.assertEqual(i.parked_message_count, 0)
        sub = self._read(g)
        try:
            self._take_ack(sub, 1)
            self.assertEqual(len(client.get_subscription_info(g).connections), 1)
        finally:
            sub.stop()
        client.delete_subscription(g)

    def test_list(self):
        s, _ = self._stream(1)
        g1, g2, ga = uniq("g"), uniq("g"), uniq("g")
        client.create_subscription_to_stream(g1, s)
        client.create_subscription_to_stream(g2, s, from_end=True)
        client.create_subscription_to_all(ga, from_end=True)
        try:
            on_s = client.list_subscriptions_to_stream(s)
            self.assertEqual(sorted(i.group_name for i in on_s), sorted([g1, g2]))
            self.assertTrue(all(i.event_source == s for i in on_s))
            everything = {(i.group_name, i.event_source) for i in client.list_subscriptions()}
            self.assertTrue({(g1, s), (g2, s), (ga, "$all")} <= everything, everything)
        finally:
            client.delete_subscription(ga)
        self.assertEqual(client.list_subscriptions_to_stream(uniq("none")), [])

    def test_list_to_stream_named_all(self):
        # KurrentDB lists $all groups for ListReq.list_for_stream.stream == "$all" (the
        # groups' event source); that is the request list_subscriptions_to_stream("$all") sends.
        ga = uniq("g")
        client.create_subscription_to_all(ga, from_end=True)
        try:
            on_all = client.list_subscriptions_to_stream("$all")
        finally:
            client.delete_subscription(ga)
        self.assertIn(ga, [i.group_name for i in on_all])

    def test_update_stream_settings(self):
        s, _ = self._stream(1)
        g = uniq("g")
        client.create_subscription_to_stream(g, s, stream_position=0)
        client.update_subscription_to_stream(g, s, message_timeout=20.0, max_retry_count=3,
                                             consumer_strategy="Pinned")
        i = client.get_subscription_info(g, s)
        self.assertEqual((i.message_timeout, i.max_retry_count), (20.0, 3))
        self.assertEqual(i.consumer_strategy, "Pinned")
        with self.assertRaises(NotFoundError):
            client.update_subscription_to_stream(uniq("g"), s, max_retry_count=1)

    def test_update_all_settings(self):
        g = uniq("g")
        client.create_subscription_to_all(g, from_end=True)
        try:
            client.update_subscription_to_all(g, max_retry_count=4, checkpoint_after=5.0,
                                              consumer_strategy="RoundRobin")
            i = client.get_subscription_info(g)
        finally:
            client.delete_subscription(g)
        self.assertEqual((i.max_retry_count, i.checkpoint_after), (4, 5.0))
        self.assertEqual(i.consumer_strategy, "RoundRobin")
        with self.assertRaises(NotFoundError):
            client.update_subscription_to_all(uniq("g"), max_retry_count=1)

    def test_update_moves_start(self):
        s, _ = self._stream(3)
        g, ga = uniq("g"), uniq("g")
        client.create_subscription_to_stream(g, s)
        client.create_subscription_to_all(ga, **only(s))
        p = client.get_stream(s)[2].commit_position
        try:
            got = {}
            client.update_subscription_to_stream(g, s, stream_position=2)
            got["stream -> revision 2"] = client.get_subscription_info(g, s).start_from
            client.update_subscription_to_stream(g, s, from_end=True)
            got["stream -> end"] = client.get_subscription_info(g, s).start_from
            client.update_subscription_to_all(ga, commit_position=p)
            got["all -> position"] = client.get_subscription_info(ga).start_from
            client.update_subscription_to_all(ga, from_end=True)
            got["all -> end"] = client.get_subscription_info(ga).start_from
        finally:
            client.delete_subscription(ga)
        self.assertEqual(got, {"stream -> revision 2": "2", "stream -> end": "-1",
                               "all -> position": f"C:{p}/P:{p}", "all -> end": "C:-1/P:-1"})

    def test_delete(self):
        s, _ = self._stream(1)
        g, ga = uniq("g"), uniq("g")
        client.create_subscription_to_stream(g, s)
        client.create_subscription_to_all(ga, from_end=True)
        client.delete_subscription(g, s)
        client.delete_subscription(ga)
        with self.assertRaises(NotFoundError):
            client.get_subscription_info(g, s)
        with self.assertRaises(NotFoundError):
            client.get_subscription_info(ga)
        with self.assertRaises(NotFoundError):
            client.delete_subscription(g, s)
        with self.assertRaises(NotFoundError):
            client.delete_subscription(ga)
        with self.assertRaises(NotFoundError):
            client.read_subscription_to_stream(g, s, timeout=SUB_TIMEOUT)
        self.assertNotIn(g, [i.group_name for i in client.list_subscriptions_to_stream(s)])

    def test_duplicate_create(self):
        s, _ = self._stream(1)
        g, ga = uniq("g"), uniq("g")
        client.create_subscription_to_stream(g, s)
        with self.assertRaises(AlreadyExistsError):
            client.create_subscription_to_stream(g, s, from_end=True)
        client.create_subscription_to_all(ga, from_end=True)
        try:
            with self.assertRaises(AlreadyExistsError):
                client.create_subscription_to_all(ga)
        finally:
            client.delete_subscription(ga)
        # The same group name on another stream is a different subscription.
        client.create_subscription_to_stream(g, uniq("ps-other"))

    def _strategy(self, strategy):
        s, events = self._stream(2)
        g, ga = uniq("g"), uniq("g")
        client.create_subscription_to_stream(g, s, consumer_strategy=strategy)
        self.assertEqual(client.get_subscription_info(g, s).consumer_strategy, strategy)
        client.create_subscription_to_all(ga, consumer_strategy=strategy, **only(s))
        try:
            self.assertEqual(client.get_subscription_info(ga).consumer_strategy, strategy)
            for group, stream in ((g, s), (ga, None)):
                sub = self._read(group, stream)
                try:
                    got = self._take_ack(sub, 2)
                finally:
                    sub.stop()
                self.assertEqual(ids(got), ids(events))
        finally:
            client.delete_subscription(ga)

    def test_strategy_round_robin(self):
        self._strategy("RoundRobin")

    def test_strategy_dispatch_to_single(self):
        self._strategy("DispatchToSingle")

    def test_strategy_pinned(self):
        self._strategy("Pinned")

    def test_strategy_pinned_by_correlation(self):
        self._strategy("PinnedByCorrelation")

    def test_round_robin_two_consumers_share(self):
        s, _ = self._stream(1)
        g = uniq("g")
        client.create_subscription_to_stream(g, s, from_end=True, consumer_strategy="RoundRobin")
        subs = [self._read(g, s), self._read(g, s)]
        got = [[], []]

        def consume(i):
            try:
                for e in subs[i]:
                    subs[i].ack(e)
                    got[i].append(e.id)
            except Exception:  # stopped, or the deadline passed
                pass

        threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in (0, 1)]
        for t in threads:
            t.start()
        events = [ev(i) for i in range(1, 7)]
        try:
            client.append_to_stream(s, current_version=0, events=events)
            wait_until(lambda: len(got[0]) + len(got[1]) >= 6, "6 events delivered")
        finally:
            for sub in subs:
                sub.stop()
        self.assertEqual(sorted(got[0] + got[1]), sorted(ids(events)))
        self.assertTrue(got[0] and got[1], f"RoundRobin gave {len(got[0])}/{len(got[1])}")


def main():
    global URL
    argv = list(sys.argv)
    if len(argv) > 1 and not argv[1].startswith("-"):
        URL = argv.pop(1)
    prog = unittest.main(argv=argv, exit=False, verbosity=2)
    r = prog.result
    bad = {getattr(test, "test_case", test).id() for test, _ in r.failures + r.errors}
    bad |= {test.id() for test in r.unexpectedSuccesses}
    failed = len(bad)
    passed = r.testsRun - failed - len(r.skipped)
    print(f"compat scenarios: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
