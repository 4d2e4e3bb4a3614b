#!/usr/bin/env python3
"""Consumer groups with kafka-python: a KafkaConsumer with a group_id reads a
topic and commits chosen offsets, then a second KafkaConsumer of the same
group resumes from exactly those commits. Prints what it saw as one JSON
document on stdout.

usage: kafka_python_group_check.py BOOTSTRAP TOPIC GROUP

TOPIC must exist with 3 partitions and be empty. The Rust test
(tests/groups.rs) checks the JSON; this script itself fails (non-zero exit,
reason on stderr) when a client call errors or a wait times out.
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

PARTITIONS = 3
FIRST = 10     # records per partition before the first consumer
SECOND = 5     # records per partition added before the second consumer
COMMITS = {0: 4, 1: 10, 2: 7}
DEADLINE_S = 60


def produce(bootstrap, topic, start, count):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             request_timeout_ms=15000, retries=0)
    futures = [producer.send(topic, value=("p%d-%d" % (p, i)).encode(), partition=p)
               for p in range(PARTITIONS) for i in range(start, start + count)]
    producer.flush(timeout=30)
    for fut in futures:
        fut.get(timeout=30)
    producer.close(timeout=10)


def consumer(bootstrap, topic, group):
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         session_timeout_ms=10000, heartbeat_interval_ms=1000,
                         request_timeout_ms=30000, fetch_max_wait_ms=100)


def consume(c, want, what):
    """Polls until `want` records arrived (then one more second, to catch
    anything read twice); fails after DEADLINE_S."""
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < want:
        if time.time() > deadline:
            raise SystemExit("%s: only %d of %d records within %ds (assignment %s)"
                             % (what, len(got), want, DEADLINE_S, c.assignment()))
        for _tp, msgs in c.poll(timeout_ms=500).items():
            got.extend({"partition": m.partition, "offset": m.offset, "value": m.value.decode()}
                       for m in msgs)
    extra_until = time.time() + 1
    while time.time() < extra_until:
        for _tp, msgs in c.poll(timeout_ms=200).items():
            got.extend({"partition": m.partition, "offset": m.offset, "value": m.value.decode()}
                       for m in msgs)
    return got


def committed(c, topic):
    return {str(p): c.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}


def main():
    bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    produce(bootstrap, topic, 0, FIRST)
    c1 = consumer(bootstrap, topic, group)
    out["first_consumed"] = consume(c1, PARTITIONS * FIRST, "first consumer")
    c1.commit({tp: OffsetAndMetadata(COMMITS[tp.partition], "", -1) for tp in tps})
    out["first_committed"] = committed(c1, topic)
    c1.close(autocommit=False)

    produce(bootstrap, topic, FIRST, SECOND)
    c2 = consumer(bootstrap, topic, group)
    end = FIRST + SECOND
    want = sum(end - o for o in COMMITS.values())
    out["second_consumed"] = consume(c2, want, "second consumer")
    firsts = {}
    for r in out["second_consumed"]:
        firsts.setdefault(str(r["partition"]), r["offset"])
    out["second_first_offsets"] = firsts
    c2.commit()
    out["second_committed"] = committed(c2, topic)
    c2.close(autocommit=False)

    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
