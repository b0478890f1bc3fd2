"""Scenarios of derived streams ($ce-<category>, $et-<event type>) as KurrentDB clients use
them: entries arrive as link events ($>), with the linked event when links are resolved; and
of the index filters ($idx-ce-<category>, $idx-et-<type>) on $all (read_index,
subscribe_to_index). The server must run with --derived-streams."""
import scenario_support as support
from scenario_support import *  # noqa: F403  (helpers, client types and exceptions)

client: KurrentDBClient = None  # type: ignore[assignment]  # noqa: F405


def setUpModule():
    global client
    client = support.connect()


def tearDownModule():
    client.close()


def category():
    """A fresh category name (no '-': the category is the stream name up to the first one)."""
    return f"cat{uuid.uuid4().hex}"


class Derived(unittest.TestCase):
    def _category(self, streams=2, per_stream=2):
        """Appends to `streams` streams of a new category, interleaved; returns the category,
        the streams and the events in log order, each as (stream, revision, event)."""
        cat = category()
        names = [f"{cat}-{i}" for i in range(streams)]
        order = []
        for rev in range(per_stream):
            for name in names:
                e = ev(rev)
                client.append_to_stream(name, current_version=StreamState.ANY, events=e)
                order.append((name, rev, e))
        return cat, names, order

    def assert_links(self, got, stream, order, first=0):
        """`got` are the resolved entries first.. of `stream` listing `order`."""
        self.assertEqual(ids(got), [e.id for _, _, e in order])
        for k, (item, (name, rev, _)) in enumerate(zip(got, order)):
            self.assertEqual((item.stream_name, item.stream_position), (name, rev))
            link = item.link
            self.assertIsNotNone(link, item)
            self.assertEqual(link.type, "$>")
            self.assertEqual(link.stream_name, stream)
            self.assertEqual(link.stream_position, first + k)
            self.assertEqual(link.data, f"{rev}@{name}".encode())
            self.assertEqual(item.ack_id, link.id)

    def test_category_read_with_resolved_links(self):
        cat, _, order = self._category()
        got = client.get_stream(f"$ce-{cat}", resolve_links=True)
        self.assert_links(got, f"$ce-{cat}", order)
        # Link IDs are the same on every read.
        again = client.get_stream(f"$ce-{cat}", resolve_links=True)
        self.assertEqual([e.link.id for e in got], [e.link.id for e in again])
        # Backwards, and from a revision.
        back = client.get_stream(f"$ce-{cat}", resolve_links=True, backwards=True)
        self.assertEqual(ids(back), ids(list(reversed(got))))
        tail = client.get_stream(f"$ce-{cat}", resolve_links=True, stream_position=2)
        self.assert_links(tail, f"$ce-{cat}", order[2:], first=2)

    def test_category_read_without_resolving_gives_links(self):
        cat, _, order = self._category(streams=1, per_stream=2)
        got = client.get_stream(f"$ce-{cat}")
        self.assertEqual([e.type for e in got], ["$>", "$>"])
        self.assertEqual([e.data for e in got], [f"{r}@{n}".encode() for n, r, _ in order])
        self.assertEqual([e.stream_name for e in got], [f"$ce-{cat}"] * 2)
        self.assertEqual([e.stream_position for e in got], [0, 1])
        self.assertTrue(all(e.link is None for e in got))
        self.assertTrue(all(e.commit_position > 0 for e in got))

    def test_event_type_subscription_with_resolved_links_into_live(self):
        etype = f"Placed{uuid.uuid4().hex}"
        first = NewEvent(type=etype, data=b"{}")
        client.append_to_stream(uniq("et"), current_version=StreamState.ANY, events=first)
        live = NewEvent(type=etype, data=b"{}")
        with client.subscribe_to_stream(f"$et-{etype}", resolve_links=True,
                                        timeout=SUB_TIMEOUT) as sub:
            got = take(sub, 1)
            client.append_to_stream(uniq("et"), current_version=StreamState.ANY, events=live)
            got += take(sub, 1)
        self.assertEqual(ids(got), [first.id, live.id])
        self.assertEqual([e.link.stream_position for e in got], [0, 1])
        self.assertEqual([e.type for e in got], [etype, etype])
        # From a revision (exclusive), as for any stream.
        with client.subscribe_to_stream(f"$et-{etype}", stream_position=0, resolve_links=True,
                                        timeout=SUB_TIMEOUT) as sub:
            self.assertEqual(ids(take(sub, 1)), [live.id])

    def test_links_to_a_deleted_stream_are_dangling(self):
        cat, names, order = self._category()
        client.delete_stream(names[0], current_version=1)
        # Resolving: the client drops links whose event is gone (KurrentDB sends the link
        # alone); the rest keep their revisions.
        got = client.get_stream(f"$ce-{cat}", resolve_links=True)
        kept = [(k, o) for k, o in enumerate(order) if o[0] == names[1]]
        self.assertEqual(ids(got), [o[2].id for _, o in kept])
        self.assertEqual([e.link.stream_position for e in got], [k for k, _ in kept])
        # Not resolving: every link is still there.
        self.assertEqual(len(client.get_stream(f"$ce-{cat}")), len(order))

    def test_streams_lists_the_streams_in_creation_order(self):
        cat = category()
        names = [f"{cat}-{i}" for i in range(3)]
        for n in names:
            client.append_to_stream(n, current_version=StreamState.NO_STREAM,
                                    events=[ev(0), ev(1)])
        got = [e for e in client.get_stream("$streams", resolve_links=True)
               if e.stream_name.startswith(cat)]
        self.assertEqual([e.stream_name for e in got], names)
        self.assertEqual([e.stream_position for e in got], [0, 0, 0])
        self.assertEqual([e.link.data for e in got], [f"0@{n}".encode() for n in names])
        self.assertEqual({e.link.stream_name for e in got}, {"$streams"})

    def test_derived_streams_are_read_only(self):
        with self.assertRaises(Exception) as cm:
            client.append_to_stream(f"$ce-{category()}", current_version=StreamState.ANY,
                                    events=ev(0))
        self.assertIn("$ce-", str(cm.exception))

    def test_consumer_group_on_a_category_acks_by_link_and_replays_parked(self):
        cat, _, order = self._category(streams=2, per_stream=2)
        stream = f"$ce-{cat}"
        g = uniq("g")
        client.create_subscription_to_stream(g, stream, resolve_links=True)
        sub = client.read_subscription_to_stream(g, stream, timeout=SUB_TIMEOUT)
        try:
            got = take(sub, len(order))
            self.assert_links(got, stream, order)
            # Park the first; ack the rest by their link IDs.
            sub.nack(got[0], action="park")
            for e in got[1:]:
                sub.ack(e)
            wait_until(lambda: client.get_subscription_info(g, stream).parked_message_count == 1,
                       "parked_message_count == 1")
            client.replay_parked_events(g, stream)
            again = take(sub, 1)[0]
            self.assertEqual((again.id, again.link.id), (got[0].id, got[0].link.id))
            sub.ack(again)
            wait_until(lambda: client.get_subscription_info(g, stream).parked_message_count == 0,
                       "parked_message_count == 0 after replay")
            # Live entries come too.
            live = ev(9)
            client.append_to_stream(f"{cat}-0", current_version=StreamState.ANY, events=live)
            nxt = take(sub, 1)[0]
            self.assertEqual((nxt.id, nxt.link.stream_position), (live.id, len(order)))
            sub.ack(nxt)
        finally:
            sub.stop()
        client.delete_subscription(g, stream)

    def test_consumer_group_without_resolving_gets_links(self):
        cat, _, order = self._category(streams=1, per_stream=2)
        stream = f"$ce-{cat}"
        g = uniq("g")
        client.create_subscription_to_stream(g, stream)
        sub = client.read_subscription_to_stream(g, stream, timeout=SUB_TIMEOUT)
        try:
            got = take(sub, 2)
            for e in got:
                sub.ack(e)
        finally:
            sub.stop()
        self.assertEqual([e.type for e in got], ["$>", "$>"])
        self.assertEqual([e.data for e in got], [f"{r}@{n}".encode() for n, r, _ in order])

    def test_read_index_of_a_category_and_an_event_type(self):
        cat, _, order = self._category(streams=2, per_stream=2)
        client.append_to_stream(uniq("other"), current_version=StreamState.ANY, events=ev(0))
        got = list(client.read_index(f"ce-{cat}"))
        self.assertEqual(ids(got), [e.id for _, _, e in order])
        self.assertEqual([(e.stream_name, e.stream_position) for e in got],
                         [(n, r) for n, r, _ in order])
        self.assertTrue(all(e.link is None for e in got))
        # From a commit position, inclusive, as $all reads are.
        p = got[2].commit_position
        self.assertEqual(ids(client.read_index(f"ce-{cat}", commit_position=p)), ids(got[2:]))
        self.assertEqual(ids(client.read_index(f"ce-{cat}", limit=1)), ids(got[:1]))
        etype = f"Paid{uuid.uuid4().hex}"
        paid = NewEvent(type=etype, data=b"{}")
        client.append_to_stream(f"{cat}-0", current_version=StreamState.ANY, events=paid)
        self.assertEqual(ids(client.read_index(f"et-{etype}")), [paid.id])
        self.assertEqual(ids(client.read_index(f"$idx-et-{etype}")), [paid.id])
        # A stream-name prefix that is a category answers the same.
        same = client.read_all(filter_include=[f"{cat}-"], filter_by_stream_name=True,
                               filter_by_prefix=True)
        self.assertEqual(ids(same), ids(got) + [paid.id])

    def test_subscribe_to_index_into_live(self):
        cat, _, order = self._category(streams=1, per_stream=2)
        live = ev(7)
        with client.subscribe_to_index(f"ce-{cat}", timeout=SUB_TIMEOUT) as sub:
            got = take(sub, 2)
            client.append_to_stream(f"{cat}-0", current_version=StreamState.ANY, events=live)
            got += take(sub, 1)
        self.assertEqual(ids(got), [e.id for _, _, e in order] + [live.id])
        p = got[0].commit_position
        with client.subscribe_to_index(f"ce-{cat}", commit_position=p,
                                       timeout=SUB_TIMEOUT) as sub:
            self.assertEqual(ids(take(sub, 2)), ids(got[1:]))

    def test_an_idle_index_subscription_sends_checkpoints(self):
        start = client.get_commit_position()
        self._category(streams=1, per_stream=3)
        idle = category()
        with client.subscribe_to_all(commit_position=start, include_checkpoints=True,
                                     filter_include=[f"$idx-ce-{idle}"],
                                     filter_by_stream_name=True, filter_by_prefix=True,
                                     timeout=SUB_TIMEOUT) as sub:
            first = take(sub, 1)[0]
        self.assertTrue(first.is_checkpoint, first)
        self.assertTrue(first.commit_position >= start, (start, first))
