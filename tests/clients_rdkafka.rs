//! End-to-end produce/consume with librdkafka (through the rdkafka crate)
//! against a real broker process.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

/// A value whose bytes depend on (codec, i) and that compresses well; every
/// 10th one is 200 KB so that batches also span many compression blocks.
fn value_for(codec: &str, i: usize) -> Vec<u8> {
    let len = if i % 10 == 7 { 200_000 } else { 10 + (i * 37) % 3000 };
    let seed = format!("{codec}:{i}:");
    seed.bytes().cycle().take(len).enumerate().map(|(j, b)| if j % 97 == 0 { b'A' + (j / 97 % 26) as u8 } else { b }).collect()
}

/// Every compression codec, with keys, headers (including a null header
/// value), null keys/values and explicit timestamps, over 4 partitions on a
/// 2-core broker. A single consumer then reads all partitions (so some of its
/// fetches go to partitions owned by the other core) and every record must
/// come back exactly, at exactly its acknowledged offset.
#[test]
fn every_codec_roundtrips_exactly_across_cores() {
    let broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("codecs");
    create_topic(&addr, &topic, PARTITIONS, &[]);

    let base_ts: i64 = 1_700_000_000_000;
    let mut expected: BTreeMap<(i32, i64), TestRecord> = BTreeMap::new();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for (ci, codec) in codecs.iter().enumerate() {
        let mut cfg = producer_config(&addr);
        cfg.set("compression.type", *codec).set("linger.ms", "50").set("acks", "all");
        let records: Vec<TestRecord> = (0..40)
            .map(|i| {
                let mut r = TestRecord {
                    partition: Some((i % PARTITIONS as usize) as i32),
                    key: Some(format!("key-{codec}-{i}").into_bytes()),
                    value: Some(value_for(codec, i)),
                    headers: vec![
                        ("codec".to_string(), Some(codec.as_bytes().to_vec())),
                        ("idx".to_string(), Some(i.to_string().into_bytes())),
                        ("null-header".to_string(), None),
                    ],
                    timestamp: Some(base_ts + (ci * 1000 + i) as i64),
                };
                match i {
                    3 => r.key = None,
                    5 => r.value = None,
                    9 => r.value = Some(Vec::new()),
                    11 => r.headers.clear(),
                    // Duplicate header keys are legal and must keep their order.
                    13 => r.headers.push(("codec".to_string(), Some(b"second".to_vec()))),
                    _ => {}
                }
                r
            })
            .collect();
        let acks = produce_ok(&cfg, &topic, &records);
        for (r, (p, o)) in records.into_iter().zip(acks) {
            assert_eq!(Some(p), r.partition, "{codec}: acknowledged on another partition");
            assert!(o >= 0, "{codec}: acknowledged offset {o}");
            let prev = expected.insert((p, o), r);
            assert!(prev.is_none(), "{codec}: offset {p}/{o} acknowledged twice");
        }
    }

    let all: Vec<i32> = (0..PARTITIONS).collect();
    let got = consume_all(&addr, &topic, &all, Duration::from_secs(60));
    assert_eq!(got.len(), expected.len(), "consumed record count");
    for p in 0..PARTITIONS {
        assert_contiguous(&got, p, 0);
        let (lo, hi) = watermarks(&addr, &topic, p);
        let n = expected.keys().filter(|(pp, _)| *pp == p).count() as i64;
        assert_eq!((lo, hi), (0, n), "watermarks of partition {p}");
    }
    for c in &got {
        let want = expected
            .get(&(c.partition, c.offset))
            .unwrap_or_else(|| panic!("record at {}/{} was never acknowledged", c.partition, c.offset));
        let ctx = format!("record at {}/{}", c.partition, c.offset);
        assert_eq!(c.key, want.key, "{ctx}: key");
        assert!(c.value == want.value, "{ctx}: value differs (len {:?} vs {:?})", c.value.as_ref().map(|v| v.len()), want.value.as_ref().map(|v| v.len()));
        assert_eq!(c.headers, want.headers, "{ctx}: headers");
        assert_eq!(c.timestamp, want.timestamp, "{ctx}: timestamp");
        assert!(!c.log_append_time, "{ctx}: timestamp type should be CreateTime");
    }
}

/// acks=0, acks=1 and acks=all each deliver; with acks 1/all the reported
/// offsets are where the records are.
#[test]
fn acks_zero_one_and_all() {
    let broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("acks");
    create_topic(&addr, &topic, 2, &[]);

    let mut expected_values: Vec<(i32, Vec<u8>)> = Vec::new();
    let mut acked: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    for acks in ["0", "1", "all"] {
        let mut cfg = producer_config(&addr);
        cfg.set("acks", acks);
        let records: Vec<TestRecord> = (0..30)
            .map(|i| TestRecord::value(format!("acks={acks} #{i}")).to_partition((i % 2) as i32))
            .collect();
        let res = produce_ok(&cfg, &topic, &records);
        for (r, (p, o)) in records.iter().zip(res) {
            assert_eq!(Some(p), r.partition);
            expected_values.push((p, r.value.clone().unwrap()));
            if acks != "0" {
                assert!(o >= 0, "acks={acks}: offset {o}");
                acked.insert((p, o), r.value.clone().unwrap());
            }
        }
    }
    let got = wait_for("all 90 records", Duration::from_secs(30), || {
        let got = consume_all(&addr, &topic, &[0, 1], Duration::from_secs(30));
        (got.len() >= 90).then_some(got)
    });
    assert_eq!(got.len(), 90);
    for p in 0..2 {
        assert_contiguous(&got, p, 0);
        // Records of one producer to one partition keep their order.
        let vals: Vec<Vec<u8>> = got.iter().filter(|c| c.partition == p).map(|c| c.value.clone().unwrap()).collect();
        let want: Vec<Vec<u8>> = expected_values.iter().filter(|(pp, _)| *pp == p).map(|(_, v)| v.clone()).collect();
        assert_eq!(vals, want, "partition {p} contents/order");
    }
    for ((p, o), v) in &acked {
        let c = got.iter().find(|c| c.partition == *p && c.offset == *o).unwrap();
        assert_eq!(c.value.as_ref(), Some(v), "acked record at {p}/{o}");
    }
}

fn produce_one(cfg: &rdkafka::ClientConfig, topic: &str, r: TestRecord) -> DeliveryOutcome {
    produce_all(cfg, topic, &[r], Duration::from_secs(30)).pop().unwrap()
}

/// A record bigger than message.max.bytes is refused with
/// MessageSizeTooLarge, one below it is accepted, and producing to a
/// partition that does not exist fails (both through librdkafka and with a
/// raw Produce request, which bypasses librdkafka's own partition check).
#[test]
fn oversized_message_and_missing_partition_fail() {
    let broker = Broker::start(2, &["message.max.bytes=20000"]);
    let addr = broker.addr();
    let topic = unique("limits");
    create_topic(&addr, &topic, 2, &[]);

    let mut cfg = producer_config(&addr);
    cfg.set("compression.type", "none").set("message.send.max.retries", "0");

    let ok = produce_one(&cfg, &topic, TestRecord::value(vec![b'x'; 5_000]).to_partition(0));
    assert_eq!(ok.expect("5 KB record must be accepted"), (0, 0));

    let too_big = produce_one(&cfg, &topic, TestRecord::value(vec![b'y'; 50_000]).to_partition(0));
    match too_big {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {}
        other => panic!("50 KB record with message.max.bytes=20000: expected MessageSizeTooLarge, got {other:?}"),
    }
    let after = produce_one(&cfg, &topic, TestRecord::value(b"after".to_vec()).to_partition(0));
    assert_eq!(after.expect("small record after a rejected one"), (0, 1), "the rejected record must not take an offset");

    let missing = produce_one(&cfg, &topic, TestRecord::value(b"nope".to_vec()).to_partition(7));
    assert!(missing.is_err(), "producing to partition 7 of a 2-partition topic succeeded: {missing:?}");

    // Raw Produce v7 to partition 7: the broker itself must refuse it with
    // UNKNOWN_TOPIC_OR_PARTITION (3).
    let rec = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from_static(b"raw")),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(&mut batch, [&rec], &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    let batch = batch.freeze();
    let mk = |p: i32| {
        ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(p).with_records(Some(batch.clone()))])])
    };
    let mut s = raw::connect(broker.socket_addr());
    let resp = raw::call(&mut s, &mk(7), 7);
    let pr = &resp.responses[0].partition_responses[0];
    assert_eq!(pr.index, 7);
    assert_eq!(pr.error_code, 3, "raw produce to partition 7: error code");
    // The same request to partition 1 works, on the same connection.
    let resp = raw::call(&mut s, &mk(1), 7);
    let pr = &resp.responses[0].partition_responses[0];
    assert_eq!((pr.error_code, pr.base_offset), (0, 0), "raw produce to partition 1");

    let got = consume_all(&addr, &topic, &[0, 1], Duration::from_secs(30));
    let vals: Vec<(i32, i64, usize)> = got.iter().map(|c| (c.partition, c.offset, c.value.as_ref().map_or(0, |v| v.len()))).collect();
    assert_eq!(vals, vec![(0, 0, 5_000), (0, 1, 5), (1, 0, 3)]);
}

/// ListOffsets by timestamp returns the first offset whose timestamp is >=
/// the asked time (across batches and inside one), -1/End past the last one;
/// earliest/latest watermarks are right.
#[test]
fn list_offsets_by_time_and_watermarks() {
    let broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("times");
    create_topic(&addr, &topic, 2, &[]);

    let base: i64 = 1_600_000_000_000;
    let mut cfg = producer_config(&addr);
    cfg.set("linger.ms", "20");
    // Three separate produce calls → at least three batches in partition 0;
    // inside each, several records with increasing timestamps.
    for chunk in 0..3 {
        let recs: Vec<TestRecord> = (0..5)
            .map(|j| {
                let i = chunk * 5 + j;
                TestRecord::value(format!("t{i}")).to_partition(0).with_timestamp(base + i as i64 * 1000)
            })
            .collect();
        let acks = produce_ok(&cfg, &topic, &recs);
        for (j, (_, o)) in acks.iter().enumerate() {
            assert_eq!(*o, (chunk * 5 + j) as i64);
        }
    }
    // Partition 1 gets 3 records.
    produce_ok(&cfg, &topic, &(0..3).map(|i| TestRecord::value(format!("p1-{i}")).to_partition(1)).collect::<Vec<_>>());

    assert_eq!(watermarks(&addr, &topic, 0), (0, 15));
    assert_eq!(watermarks(&addr, &topic, 1), (0, 3));

    let addr2 = addr.clone();
    let topic2 = topic.clone();
    let results = bounded("offsets_for_times", Duration::from_secs(60), move || {
        let c = new_consumer(&addr2);
        let cases: Vec<(i64, Offset)> = vec![
            (0, Offset::Offset(0)),
            (base, Offset::Offset(0)),
            (base + 1, Offset::Offset(1)),
            (base + 2500, Offset::Offset(3)),
            (base + 4000, Offset::Offset(4)),
            (base + 4001, Offset::Offset(5)),
            (base + 7000, Offset::Offset(7)),
            (base + 14_000, Offset::Offset(14)),
            (base + 14_001, Offset::End),
        ];
        let mut out = Vec::new();
        for (ts, want) in cases {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic2, 0, Offset::Offset(ts)).unwrap();
            let res = c.offsets_for_times(tpl, OP_TIMEOUT).unwrap_or_else(|e| panic!("offsets_for_times({ts}): {e}"));
            let el = res.find_partition(&topic2, 0).expect("partition in result");
            assert!(el.error().is_ok(), "offsets_for_times({ts}): {:?}", el.error());
            out.push((ts - base, el.offset(), want));
        }
        out
    });
    for (rel, got, want) in results {
        assert_eq!(got, want, "offsets_for_times(base{rel:+})");
    }
}
