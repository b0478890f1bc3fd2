"""Scenario suite: drives a Strata server with the official KurrentDB Python client
(kurrentdbclient) through the KurrentDB client protocol v1, one unittest per scenario.

Covers appends (Append and BatchAppend RPCs) with every expected-position kind and their
conflicts, idempotent retries, stream reads, $all reads with filters, stream metadata, soft
deletes and tombstones, catch-up subscriptions (stream and $all, checkpoints, caught-up) and
persistent subscriptions (stream and $all, ack/nack, parking, info, list, update, delete,
consumer strategies), and derived streams ($ce-, $et-) read, subscribed and consumed by
groups as links.

The scenarios live in scenarios_streams.py, scenarios_subscriptions.py, scenarios_groups.py
and scenarios_derived.py (the server runs with --derived-streams); scenario_support.py holds
the helpers and the runner.

Usage: python kurrentdb_scenarios.py kurrentdb://HOST:PORT?tls=false [unittest args]
Prints one final line: "compat scenarios: N passed, M failed"; exits 0 only when M == 0.
"""
from scenario_support import run
from scenarios_derived import Derived  # noqa: F401
from scenarios_groups import Persistent  # noqa: F401
from scenarios_streams import Appends, Deletes, Metadata, ReadAll, ReadStream  # noqa: F401
from scenarios_subscriptions import CatchUp  # noqa: F401

if __name__ == "__main__":
    run("compat scenarios")
