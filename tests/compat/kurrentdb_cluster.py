"""The official KurrentDB Python client against a three-node Strata cluster, through a
connection string that names all three nodes (the client finds the leader by gossip). Appends
events one at a time, each with its own ID; an append that fails is sent again with the same
ID (idempotent), as an application would. Prints "acked N" after each acknowledgement so that
the test driving it can kill the leader midway, then reads the stream back from the cluster.

Usage: python kurrentdb_cluster.py 'kurrentdb://H1:P1,H2:P2,H3:P3?tls=false' COUNT
Prints "acked N" lines, then "result: {json}" with the acknowledged and the read event IDs.
"""
import json, sys, time, uuid
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

uri, count = sys.argv[1], int(sys.argv[2])
client = KurrentDBClient(uri)
stream = f"cluster-{uuid.uuid4()}"
acked, failures = [], []
for n in range(count):
    event = NewEvent(type="Counted", data=json.dumps({"n": n}).encode(), id=uuid.uuid4())
    deadline = time.time() + 30
    while True:
        try:
            client.append_to_stream(stream, current_version=StreamState.ANY, events=[event])
            acked.append(str(event.id))
            break
        except Exception as e:  # the outcome is open: send it again, same event ID
            failures.append(f"{type(e).__name__}: {e}"[:200])
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    print(f"acked {n + 1}", flush=True)
read = [str(e.id) for e in client.get_stream(stream)]
print("result: " + json.dumps({"acked": acked, "read": read, "failures": failures}), flush=True)
