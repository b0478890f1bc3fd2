"""Scenarios of catch-up subscriptions (streams and $all)."""
import scenario_support as support
from scenario_support import *  # noqa: F403  (helpers, client types and exceptions)

client: KurrentDBClient = None  # type: ignore[assignment]  # noqa: F405


def setUpModule():
    global client
    client = support.connect()


def tearDownModule():
    client.close()


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
