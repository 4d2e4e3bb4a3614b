#!/usr/bin/env python3
"""Exercises a corestream broker with kafka-python (a client that shares no
code with librdkafka) and prints what it saw as one JSON document on stdout.

usage: kafka_python_check.py BOOTSTRAP TOPIC

The Rust test (tests/other_clients.rs) checks the JSON; this script itself
fails (non-zero exit, reason on stderr) when a client call errors or times out.
"""
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

PARTITIONS = 3
COUNT = 30
DEADLINE_S = 60


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    out = {}

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kafka-python-check",
                             request_timeout_ms=15000)
    admin.create_topics([NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1)],
                        timeout_ms=15000)
    # list_topics() asks for authorized operations (Metadata v8+); a broker
    # must then fill them in as Kafka does. A failure here is reported in the
    # JSON (and failed by the Rust test) without hiding the checks below.
    try:
        out["listed"] = topic in admin.list_topics()
    except Exception as e:  # noqa: BLE001
        out["list_topics_error"] = "%s: %s" % (type(e).__name__, e)
    admin.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                             linger_ms=5, request_timeout_ms=15000, retries=0)
    futures = []
    for i in range(COUNT):
        key = ("key-%d" % i).encode()
        value = ("value-%d-" % i + "x" * (i * 13)).encode()
        headers = [("idx", str(i).encode()), ("client", b"kafka-python")]
        ts = 1_650_000_000_000 + i
        fut = producer.send(topic, key=key, value=value, headers=headers,
                            partition=i % PARTITIONS, timestamp_ms=ts)
        futures.append((i, key, value, ts, fut))
    producer.flush(timeout=30)
    produced = []
    for i, key, value, ts, fut in futures:
        md = fut.get(timeout=30)
        produced.append({"partition": md.partition, "offset": md.offset, "key": key.decode(),
                         "value": value.decode(), "timestamp": ts})
    producer.close(timeout=10)
    out["produced"] = produced

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=30000,
                             fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    consumed = []
    deadline = time.time() + DEADLINE_S
    while len(consumed) < COUNT and time.time() < deadline:
        batch = consumer.poll(timeout_ms=500)
        for _tp, msgs in batch.items():
            for m in msgs:
                consumed.append({"partition": m.partition, "offset": m.offset,
                                 "key": m.key.decode() if m.key is not None else None,
                                 "value": m.value.decode() if m.value is not None else None,
                                 "headers": [[k, v.decode()] for k, v in (m.headers or [])],
                                 "timestamp": m.timestamp})
    out["consumed"] = consumed
    out["end_offsets"] = {str(tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
    consumer.close()

    print(json.dumps(out))
    if len(consumed) < COUNT:
        print("only %d of %d records consumed within %ds" % (len(consumed), COUNT, DEADLINE_S),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
