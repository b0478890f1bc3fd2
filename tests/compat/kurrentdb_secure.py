"""Drives a secure Strata server (TLS, authentication, access lists) with the official KurrentDB
Python client: as admin over TLS (append, read, $all, catch-up subscription, consumer group),
as an ordinary user (allowed on open streams; AccessDeniedError on $all, on a stream whose
$acl names someone else, and on managing consumer groups), and with a wrong password
(UnauthenticatedError).

Usage: python kurrentdb_secure.py ADMIN_URL ALICE_URL WRONG_URL PRIVATE_STREAM
(each a kurrentdb://user:password@host:port?tls=true&tlsCaFile=... connection string)
"""
import sys, uuid
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import AccessDeniedError, UnauthenticatedError

passed = 0


def check(name, fn):
    global passed
    fn()
    passed += 1
    print(f"ok {name}")


def expect(exc, fn, *a, **kw):
    try:
        r = fn(*a, **kw)
        if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
            list(r)
    except exc:
        return
    raise AssertionError(f"expected {exc.__name__}")


admin_url, alice_url, wrong_url, private = sys.argv[1:5]
admin = KurrentDBClient(admin_url)
s = f"secure-{uuid.uuid4()}"
e1 = NewEvent(type="Created", data=b'{"n":1}')
e2 = NewEvent(type="Updated", data=b'{"n":2}')


def admin_appends_and_reads():
    p1 = admin.append_to_stream(s, current_version=StreamState.NO_STREAM, events=e1)
    admin.append_to_stream(s, current_version=0, events=[e2])
    assert [e.id for e in admin.get_stream(s)] == [e1.id, e2.id]
    ids = [e.id for e in admin.read_all(commit_position=p1, limit=100)]
    assert e1.id in ids and e2.id in ids


def admin_subscribes():
    with admin.subscribe_to_stream(s, timeout=10) as sub:
        seen = []
        for ev in sub:
            seen.append(ev.id)
            if len(seen) == 2:
                break
    assert seen == [e1.id, e2.id]


def admin_runs_a_consumer_group():
    g = f"g-{uuid.uuid4().hex}"
    admin.create_subscription_to_stream(g, s)
    ps, seen = admin.read_subscription_to_stream(g, s, timeout=10), []
    for ev in ps:
        ps.ack(ev)
        seen.append(ev.id)
        if len(seen) == 2:
            break
    ps.stop()
    assert seen == [e1.id, e2.id]


alice = KurrentDBClient(alice_url)


def alice_works_on_open_streams():
    mine = f"alice-{uuid.uuid4()}"
    alice.append_to_stream(mine, current_version=StreamState.NO_STREAM, events=[NewEvent(type="A", data=b"{}")])
    assert len(list(alice.get_stream(mine))) == 1
    assert len(list(alice.get_stream(s))) == 2


def alice_is_denied_what_she_may_not_do():
    expect(AccessDeniedError, alice.read_all, limit=10)
    expect(AccessDeniedError, alice.get_stream, private)
    expect(AccessDeniedError, alice.append_to_stream, private,
           current_version=StreamState.ANY, events=[NewEvent(type="X", data=b"{}")])
    expect(AccessDeniedError, alice.create_subscription_to_stream, f"g-{uuid.uuid4().hex}", s)


def wrong_password_is_unauthenticated():
    def attempt():
        c = KurrentDBClient(wrong_url)
        c.get_stream(s)
    expect(UnauthenticatedError, attempt)


check("admin appends and reads over TLS", admin_appends_and_reads)
check("admin subscribes", admin_subscribes)
check("admin runs a consumer group", admin_runs_a_consumer_group)
check("alice works on open streams", alice_works_on_open_streams)
check("alice is denied what she may not do", alice_is_denied_what_she_may_not_do)
check("a wrong password is unauthenticated", wrong_password_is_unauthenticated)
admin.close()
alice.close()
print(f"compat secure: {passed} passed, 0 failed")
