"""Scenarios of persistent subscriptions (consumer groups)."""
import scenario_support as support
from scenario_support import *  # noqa: F403  (helpers, client types and exceptions)

client: KurrentDBClient = None  # type: ignore[assignment]  # noqa: F405


def setUpModule():
    global client
    client = support.connect()


def tearDownModule():
    client.close()


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
