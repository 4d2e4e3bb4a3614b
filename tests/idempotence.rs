//! Idempotent producers: librdkafka with `enable.idempotence=true` against a
//! two-core broker, and the sequence rules over the raw protocol — a retried
//! batch is answered with its original offset and written once, even after a
//! SIGKILL and a clean restart; gaps and stale epochs are refused; producer ids
//! are never handed out twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use corestream::protocol::batch;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn idempotent_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[&str]) -> Bytes {
    let kv: Vec<batch::KeyValue<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    let mut b = batch::build_batch(&kv, 1_700_000_000_000);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    batch::fix_crc(&mut b).expect("crc");
    b.freeze()
}

/// Produces one batch to partition 0; returns (error code, base offset).
fn produce(sock: &mut std::net::TcpStream, topic: &str, batch: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))])]);
    let r = raw::call(sock, &req, 9);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn init_producer_id(sock: &mut std::net::TcpStream) -> i64 {
    let r = raw::call(sock, &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000).with_producer_id(ProducerId(-1)).with_producer_epoch(-1), 4);
    assert_eq!(r.error_code, 0, "InitProducerId");
    assert_eq!(r.producer_epoch, 0);
    r.producer_id.0
}

#[test]
fn retries_are_deduplicated_across_crash_and_restart() {
    let mut b = Broker::start(1, &[]);
    let addr = b.addr();
    let topic = unique("idem");
    create_topic(&addr, &topic, 1, &[]);
    let mut sock = raw::connect(b.socket_addr());
    let pid = init_producer_id(&mut sock);
    assert_ne!(init_producer_id(&mut sock), pid, "every call gets a new producer id");

    let first = idempotent_batch(pid, 0, 0, &["a", "b", "c"]);
    let second = idempotent_batch(pid, 0, 3, &["d", "e"]);
    assert_eq!(produce(&mut sock, &topic, first.clone()), (0, 0));
    assert_eq!(produce(&mut sock, &topic, second.clone()), (0, 3));
    // Retries of either batch: their original offsets, nothing written.
    assert_eq!(produce(&mut sock, &topic, first.clone()), (0, 0));
    assert_eq!(produce(&mut sock, &topic, second.clone()), (0, 3));
    assert_eq!(watermarks(&addr, &topic, 0).1, 5);
    // A gap, an overlap, an older epoch, a new epoch not starting at 0.
    assert_eq!(produce(&mut sock, &topic, idempotent_batch(pid, 0, 7, &["x"])).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    assert_eq!(produce(&mut sock, &topic, idempotent_batch(pid, 0, 4, &["x", "y"])).0, 45);
    assert_eq!(produce(&mut sock, &topic, idempotent_batch(pid, 1, 5, &["x"])).0, 45);
    assert_eq!(produce(&mut sock, &topic, idempotent_batch(pid, 1, 0, &["f"])), (0, 5), "a bumped epoch starts over at 0");
    assert_eq!(produce(&mut sock, &topic, idempotent_batch(pid, 0, 5, &["x"])).0, 47, "INVALID_PRODUCER_EPOCH");
    let third = idempotent_batch(pid, 1, 1, &["g", "h"]);
    assert_eq!(produce(&mut sock, &topic, third.clone()), (0, 6));
    drop(sock);

    // After a SIGKILL the state is rebuilt from the log: the retry is still a duplicate.
    b.kill9();
    b.restart();
    let mut sock = raw::connect(b.socket_addr());
    assert_eq!(produce(&mut sock, &topic, third.clone()), (0, 6));
    assert_eq!(watermarks(&b.addr(), &topic, 0).1, 8);
    let pid2 = init_producer_id(&mut sock);
    assert!(pid2 > pid, "producer ids are never reused across restarts ({pid2} after {pid})");
    drop(sock);

    // After a clean stop the state comes from the snapshot.
    b.terminate();
    b.restart();
    let mut sock = raw::connect(b.socket_addr());
    assert_eq!(produce(&mut sock, &topic, third), (0, 6));
    assert_eq!(produce(&mut sock, &topic, idempotent_batch(pid, 1, 3, &["i"])), (0, 8));
    assert_eq!(watermarks(&b.addr(), &topic, 0).1, 9);
}

#[test]
fn librdkafka_idempotent_producer_writes_each_record_once_in_order() {
    let b = Broker::start(2, &[]);
    let addr = b.addr();
    let topic = unique("idem-rd");
    create_topic(&addr, &topic, 4, &[]);
    let mut cfg = producer_config(&addr);
    cfg.set("enable.idempotence", "true").set("linger.ms", "2").set("batch.num.messages", "50");
    const N: usize = 4000;
    let records: Vec<TestRecord> = (0..N).map(|i| TestRecord::value(format!("v{i}")).with_key(format!("k{}", i % 16))).collect();
    let placed = produce_ok(&cfg, &topic, &records);
    assert_eq!(placed.len(), N);
    let got = consume_all(&addr, &topic, &[0, 1, 2, 3], Duration::from_secs(30));
    assert_eq!(got.len(), N, "every record once");
    // Per key, values come in the order they were sent.
    let mut last: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for r in &got {
        let v: usize = String::from_utf8_lossy(r.value.as_deref().unwrap())[1..].parse().unwrap();
        if let Some(prev) = last.insert(r.key.clone().unwrap(), v) {
            assert!(v > prev, "key order kept");
        }
    }
}
