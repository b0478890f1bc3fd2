"""Drives a Strata server with the official KurrentDB Python client (kurrentdbclient), through
the KurrentDB client protocol: appends (Append and BatchAppend), idempotent retries, expected
versions, reads, catch-up subscriptions, consumer groups with parking and replay, deletes.

Usage: python kurrentdb_smoke.py kurrentdb://HOST:PORT?tls=false
"""
import re, sys, uuid
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    NotFoundError, StreamIsDeletedError, WrongCurrentVersionError)

def expect(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc:
        return
    raise AssertionError(f"expected {exc.__name__}")

c = KurrentDBClient(sys.argv[1] if len(sys.argv) > 1 else "kurrentdb://localhost:2113?tls=false")
s, g = f"smoke-{uuid.uuid4()}", f"g-{uuid.uuid4().hex}"
e1 = NewEvent(type="Created", data=b'{"n":1}')
e2 = NewEvent(type="Updated", data=b'{"n":2}', metadata=b'{"m":1}')
e3 = NewEvent(type="Updated", data=b'{"n":3}')
p1 = c.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e1)  # Append
p2 = c.append_to_stream(s, current_version=0, events=[e2])                   # BatchAppend
assert 0 < p1 < p2, (p1, p2)
fresh = NewEvent(type="Created", data=b'{"n":0}')
for ev in (fresh, [fresh]):  # wrong expected version through both RPCs
    expect(WrongCurrentVersionError, c.append_to_stream, s,
           current_version=StreamState.NO_STREAM, events=ev)
# A retried append (same event IDs, same expectation) is idempotent: same position, no copy.
assert c.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e1) == p1
got = c.get_stream(s)
assert [e.id for e in got] == [e1.id, e2.id] and got[1].stream_position == 1
assert got[1].commit_position == p2 and got[1].metadata == b'{"m":1}'
assert got[1].type == "Updated" and got[1].content_type == "application/json"
assert got[1].recorded_at is not None and c.get_current_version(s) == 1
expect(NotFoundError, c.get_stream, f"missing-{uuid.uuid4()}")
ids = [e.id for e in c.read_all(commit_position=p1, limit=100)]
assert ids.index(e1.id) < ids.index(e2.id)
with c.subscribe_to_stream(s, timeout=10) as sub:  # catch-up, then live
    seen = []
    for ev in sub:
        seen.append(ev.id)
        if len(seen) == 2:
            c.append_to_stream(s, current_version=1, events=[e3])
        if len(seen) == 3:
            break
assert seen == [e1.id, e2.id, e3.id]
with c.subscribe_to_all(commit_position=p1, filter_include=[re.escape(s)],
                        filter_by_stream_name=True, timeout=10) as sub:
    assert next(iter(sub)).id == e2.id  # exclusive of p1
c.create_subscription_to_stream(g, s)  # persistent, from start (inclusive)
info = c.get_subscription_info(g, s)
assert info.group_name == g and info.event_source == s
ps, seen = c.read_subscription_to_stream(g, s, timeout=10), []
for ev in ps:
    ps.ack(ev)
    seen.append(ev.id)
    if len(seen) == 3:
        break
ps.stop()
assert seen == [e1.id, e2.id, e3.id]
assert any(i.group_name == g for i in c.list_subscriptions())
# Nack with park: the event goes to the parked stream; replaying it delivers it again.
g2 = f"p-{uuid.uuid4().hex}"
c.create_subscription_to_stream(g2, s, stream_position=2)
ps = c.read_subscription_to_stream(g2, s, timeout=10)
first = next(iter(ps))
assert first.id == e3.id, first
ps.nack(first.id, action="park")
deadline = __import__("time").time() + 10
while c.get_subscription_info(g2, s).parked_message_count != 1:
    assert __import__("time").time() < deadline, "the nacked event was not parked"
c.replay_parked_events(g2, s)
again = next(iter(ps))
assert again.id == e3.id, again
ps.ack(again)
ps.stop()
c.delete_subscription(g2, s)
# A group on $all with the client's default filter (a negative look-ahead regex).
g3 = f"a-{uuid.uuid4().hex}"
c.create_subscription_to_all(g3, commit_position=p1)
pa = c.read_subscription_to_all(g3, timeout=10)
assert next(iter(pa)).id == e1.id  # inclusive of p1
pa.stop()
c.delete_subscription(g3)
assert c.get_commit_position() >= p2
c.delete_subscription(g, s)
c.delete_stream(s, current_version=2)
expect(NotFoundError, c.get_stream, s)
c.tombstone_stream(s, current_version=StreamState.ANY)
expect(StreamIsDeletedError, c.get_stream, s)
c.close()
print("compat: 1 passed, 0 failed")
