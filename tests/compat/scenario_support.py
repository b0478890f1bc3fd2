"""Shared by the KurrentDB Python client scenario modules (scenarios_*.py): the server URL,
helpers, and the runner that prints the summary line the Rust test looks for."""
import json  # noqa: F401  (re-exported to the scenario modules)
import re
import sys
import threading  # noqa: F401
import time
import unittest
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState  # noqa: F401
from kurrentdbclient.exceptions import (  # noqa: F401
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


def connect():
    """A client for the server under test (each scenario module opens its own)."""
    return KurrentDBClient(URL)


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


def run(label):
    """Runs the TestCases of __main__ against the URL given as the first argument; prints
    "<label>: N passed, M failed" and exits 0 only when M == 0."""
    global URL
    argv = list(sys.argv)
    if len(argv) > 1 and not argv[1].startswith("-"):
        URL = argv.pop(1)
    prog = unittest.main(module="__main__", argv=argv, exit=False, verbosity=2)
    r = prog.result
    bad = {getattr(test, "test_case", test).id() for test, _ in r.failures + r.errors}
    bad |= {test.id() for test in r.unexpectedSuccesses}
    failed = len(bad)
    passed = r.testsRun - failed - len(r.skipped)
    print(f"{label}: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 else 1)
