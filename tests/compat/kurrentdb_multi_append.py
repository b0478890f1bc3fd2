"""Multi-stream appends through the official KurrentDB Python client (kurrentdbclient), which
calls the KurrentDB v2 protocol for them: multi_append_to_stream (AppendSession) and
append_records (AppendRecords, with consistency checks). Covers atomicity across streams,
revision conflicts, failed checks on streams that are not written, idempotent retries, the
size limits and tombstoned streams as the client's own exceptions, and how v1 reads show
records written through v2.

The server must run with --max-append-size 65536 (the size scenarios rely on it).

Usage: python kurrentdb_multi_append.py kurrentdb://HOST:PORT?tls=false [unittest args]
Prints one final line: "multi-append scenarios: N passed, M failed"; exits 0 only when M == 0.
"""
import json
import sys
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.events import NewEvents, NewRecord, StreamStateCheck
from kurrentdbclient.exceptions import (
    ConsistencyChecksFailedError,
    MultiAppendToSameStreamError,
    NotFoundError,
    RecordMaxSizeExceededError,
    StreamTombstonedError,
    TransactionMaxSizeExceededError,
    WrongCurrentVersionError,
)

URL = "kurrentdb://localhost:2113?tls=false"
MAX_APPEND = 65536
client: KurrentDBClient = None  # type: ignore[assignment]


def setUpModule():
    global client
    client = KurrentDBClient(URL)


def tearDownModule():
    client.close()


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex}"


def ev(n, type_="Multi", metadata=b"", size=0):
    body = {"n": n}
    if size:
        body["pad"] = "x" * size
    return NewEvent(type=type_, data=json.dumps(body).encode(), metadata=metadata)


def stream_ids(stream):
    try:
        return [e.id for e in client.get_stream(stream)]
    except NotFoundError:
        return []


class MultiAppendToStream(unittest.TestCase):
    def test_two_streams_are_written_together(self):
        a, b = uniq("order"), uniq("stock")
        ea = [ev(1, metadata=b'{"tenant": "acme"}'), ev(2)]
        eb = [ev(3)]
        position = client.multi_append_to_stream(
            [
                NewEvents(stream_name=a, events=ea, current_version=StreamState.NO_STREAM),
                NewEvents(stream_name=b, events=eb, current_version=StreamState.NO_STREAM),
            ]
        )
        got_a, got_b = client.get_stream(a), client.get_stream(b)
        self.assertEqual([e.id for e in got_a], [e.id for e in ea])
        self.assertEqual([e.stream_position for e in got_a], [0, 1])
        self.assertEqual([e.id for e in got_b], [e.id for e in eb])
        self.assertEqual(position, got_b[0].commit_position)
        self.assertEqual(client.get_current_version(a), 1)
        # A v1 reader finds the v2 properties and the schema in the custom metadata.
        meta = json.loads(got_a[0].metadata)
        self.assertEqual(meta["tenant"], "acme")
        self.assertEqual(meta["$schema.name"], "Multi")
        self.assertEqual(meta["$schema.format"], "Json")
        self.assertEqual(got_a[0].type, "Multi")
        self.assertEqual(got_a[0].content_type, "application/json")
        # Later appends use exact revisions.
        client.multi_append_to_stream(
            [
                NewEvents(stream_name=a, events=[ev(4)], current_version=1),
                NewEvents(stream_name=b, events=[ev(5)], current_version=StreamState.EXISTS),
            ]
        )
        self.assertEqual(client.get_current_version(b), 1)

    def test_a_conflict_on_one_stream_writes_nothing(self):
        a, b = uniq("order"), uniq("stock")
        client.append_to_stream(b, current_version=StreamState.NO_STREAM, events=[ev(1)])
        with self.assertRaises(WrongCurrentVersionError) as cm:
            client.multi_append_to_stream(
                [
                    NewEvents(stream_name=a, events=[ev(2)], current_version=StreamState.NO_STREAM),
                    NewEvents(stream_name=b, events=[ev(3)], current_version=StreamState.NO_STREAM),
                ]
            )
        self.assertEqual(cm.exception.stream_name, b)
        self.assertEqual(cm.exception.actual_version, 0)
        self.assertEqual(cm.exception.expected_version, StreamState.NO_STREAM)
        self.assertEqual(stream_ids(a), [])
        self.assertEqual(len(stream_ids(b)), 1)

    def test_a_retry_writes_nothing_more(self):
        a, b = uniq("order"), uniq("stock")
        batch = [
            NewEvents(stream_name=a, events=[ev(1), ev(2)], current_version=StreamState.NO_STREAM),
            NewEvents(stream_name=b, events=[ev(3)], current_version=StreamState.NO_STREAM),
        ]
        first = client.multi_append_to_stream(batch)
        again = client.multi_append_to_stream(batch)
        self.assertEqual(first, again)
        self.assertEqual(len(stream_ids(a)), 2)
        self.assertEqual(len(stream_ids(b)), 1)

    def test_the_same_stream_twice_is_refused(self):
        a = uniq("order")
        with self.assertRaises(MultiAppendToSameStreamError):
            client.multi_append_to_stream(
                [
                    NewEvents(stream_name=a, events=[ev(1)], current_version=StreamState.ANY),
                    NewEvents(stream_name=a, events=[ev(2)], current_version=StreamState.ANY),
                ]
            )
        self.assertEqual(stream_ids(a), [])

    def test_a_tombstoned_stream_is_refused(self):
        a, gone = uniq("order"), uniq("gone")
        client.append_to_stream(gone, current_version=StreamState.NO_STREAM, events=[ev(1)])
        client.tombstone_stream(gone, current_version=StreamState.ANY)
        with self.assertRaises(StreamTombstonedError):
            client.multi_append_to_stream(
                [
                    NewEvents(stream_name=a, events=[ev(2)], current_version=StreamState.ANY),
                    NewEvents(stream_name=gone, events=[ev(3)], current_version=StreamState.ANY),
                ]
            )
        self.assertEqual(stream_ids(a), [])

    def test_size_limits(self):
        a, b = uniq("order"), uniq("stock")
        with self.assertRaises(RecordMaxSizeExceededError) as cm:
            client.multi_append_to_stream(
                [NewEvents(stream_name=a, events=[ev(1, size=MAX_APPEND)], current_version=StreamState.ANY)]
            )
        self.assertEqual(cm.exception.stream_name, a)
        self.assertEqual(cm.exception.max_size, MAX_APPEND)
        half = MAX_APPEND * 2 // 3
        with self.assertRaises(TransactionMaxSizeExceededError):
            client.multi_append_to_stream(
                [
                    NewEvents(stream_name=a, events=[ev(1, size=half)], current_version=StreamState.ANY),
                    NewEvents(stream_name=b, events=[ev(2, size=half)], current_version=StreamState.ANY),
                ]
            )
        self.assertEqual(stream_ids(a), [])
        self.assertEqual(stream_ids(b), [])


class AppendRecords(unittest.TestCase):
    def test_interleaved_records_keep_their_order(self):
        a, b = uniq("order"), uniq("stock")
        records = [
            NewRecord(stream_name=a, type="A1", data=b"{}"),
            NewRecord(stream_name=b, type="B1", data=b"{}"),
            NewRecord(stream_name=a, type="A2", data=b"{}"),
        ]
        result = client.append_records(records)
        revisions = {s.stream_name: s.stream_position for s in result.stream_positions}
        self.assertEqual(revisions, {a: 1, b: 0})
        got = client.get_stream(a)
        self.assertEqual([e.type for e in got], ["A1", "A2"])
        self.assertEqual(result.commit_position, got[1].commit_position)
        b_event = client.get_stream(b)[0]
        self.assertTrue(got[0].commit_position < b_event.commit_position < got[1].commit_position)

    def test_a_failed_check_on_an_unwritten_stream_writes_nothing(self):
        a, decision = uniq("order"), uniq("decision")
        client.append_to_stream(decision, current_version=StreamState.NO_STREAM, events=[ev(1)])
        records = [NewRecord(stream_name=a, type="Placed", data=b"{}")]
        with self.assertRaises(ConsistencyChecksFailedError) as cm:
            client.append_records(
                records,
                checks=[
                    StreamStateCheck(stream_name=decision, expected_state=StreamState.NO_STREAM),
                    StreamStateCheck(stream_name=a, expected_state=StreamState.NO_STREAM),
                ],
            )
        failures = cm.exception.failures
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].check_index, 0)
        self.assertEqual(failures[0].stream_state_failure.stream_name, decision)
        self.assertEqual(failures[0].stream_state_failure.actual_state, 0)
        self.assertEqual(failures[0].stream_state_failure.expected_state, -1)
        self.assertEqual(stream_ids(a), [])
        # With the right expectation the same records go in.
        result = client.append_records(
            records,
            checks=[StreamStateCheck(stream_name=decision, expected_state=0)],
        )
        self.assertEqual([s.stream_position for s in result.stream_positions], [0])
        # And a retry of them is recognised, even though the check no longer holds.
        client.append_to_stream(decision, current_version=0, events=[ev(2)])
        again = client.append_records(
            records,
            checks=[StreamStateCheck(stream_name=decision, expected_state=0)],
        )
        self.assertEqual(again.commit_position, result.commit_position)
        self.assertEqual(len(stream_ids(a)), 1)


def main():
    global URL
    argv = list(sys.argv)
    if len(argv) > 1 and not argv[1].startswith("-"):
        URL = argv.pop(1)
    prog = unittest.main(argv=argv, exit=False, verbosity=2)
    r = prog.result
    bad = {getattr(test, "test_case", test).id() for test, _ in r.failures + r.errors}
    failed = len(bad)
    passed = r.testsRun - failed - len(r.skipped)
    print(f"multi-append scenarios: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
