//! Garbage on disk, end to end: a broker restarted over a bit-flipped finalized
//! segment and over zeroed / garbage index files.
//!
//! The damaged batch is never served: a fetch below it gets the good batches
//! before it, a fetch at it gets KAFKA_STORAGE_ERROR for that partition only,
//! later segments and other partitions keep serving, and the broker stays up.
//! Invalid index files are rebuilt at start-up, exactly as they were.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const KAFKA_STORAGE_ERROR: i16 = 56;
const BATCHES: usize = 30;
const PER_BATCH: usize = 3;

/// (base offset, position, length) of each whole batch in a segment file.
fn batches(seg: &[u8]) -> Vec<(i64, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 61 <= seg.len() {
        let base = i64::from_be_bytes(seg[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(seg[at + 8..at + 12].try_into().unwrap()) as usize + 12;
        if at + len > seg.len() {
            break;
        }
        out.push((base, at, len));
        at += len;
    }
    out
}

/// The partition's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

fn base_of(seg: &Path) -> i64 {
    seg.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// One Fetch v11 of one partition: (error code, record bytes returned).
fn fetch(broker: &Broker, topic: &str, partition: i32, offset: i64) -> (i16, usize) {
    let mut s = raw::connect(broker.socket_addr());
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = raw::call(&mut s, &req, 11);
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, |r| r.len()))
}

fn value(round: usize, partition: i32, i: usize) -> Vec<u8> {
    format!("r{round:03}-p{partition}-{i}-{}", "x".repeat(150)).into_bytes()
}

#[test]
fn damaged_segments_and_index_files_are_detected_and_never_served() {
    let mut broker = Broker::start(1, &[]);
    let addr = broker.addr();
    let topic = unique("garbage");
    create_topic(&addr, &topic, 2, &[("segment.bytes", "4096"), ("index.interval.bytes", "512")]);
    let cfg = producer_config(&addr);
    for round in 0..BATCHES {
        let recs: Vec<TestRecord> = (0..2)
            .flat_map(|p| (0..PER_BATCH).map(move |i| TestRecord::value(value(round, p, i)).to_partition(p)))
            .collect();
        produce_ok(&cfg, &topic, &recs);
    }
    broker.terminate();
    let pdir = |p: i32| broker.data_dir().join(format!("{topic}-{p}"));

    // Partition 0: a flipped byte inside the CRC of the second batch of its first segment.
    let segs0 = segments(&pdir(0));
    assert!(segs0.len() >= 3, "several segments: {segs0:?}");
    let data = std::fs::read(&segs0[0]).unwrap();
    let b = batches(&data);
    assert!(b.len() >= 3, "several batches in the first segment: {b:?}");
    let (bad_offset, pos, len) = b[1];
    let mut damaged = data.clone();
    damaged[pos + len - 5] ^= 0x5a;
    std::fs::write(&segs0[0], &damaged).unwrap();

    // Partition 1: a zeroed offset index and a garbage time index.
    let segs1 = segments(&pdir(1));
    assert!(segs1.len() >= 3, "several segments: {segs1:?}");
    let index0 = segs1[0].with_extension("index");
    let timeindex1 = segs1[1].with_extension("timeindex");
    let (orig_index0, orig_timeindex1) = (std::fs::read(&index0).unwrap(), std::fs::read(&timeindex1).unwrap());
    assert!(orig_index0.len() >= 8, "the first segment has index entries");
    std::fs::write(&index0, vec![0u8; orig_index0.len()]).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..36)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&timeindex1, garbage).unwrap();

    broker.restart();

    // Partition 0: the good batch before the damage, a storage error at it, later segments fine.
    let (err, bytes) = fetch(&broker, &topic, 0, 0);
    assert_eq!((err, bytes), (0, b[0].2), "a fetch below the damage gets the good batch before it, nothing more");
    let (err, bytes) = fetch(&broker, &topic, 0, bad_offset);
    assert_eq!((err, bytes), (KAFKA_STORAGE_ERROR, 0), "a fetch at the damaged batch");
    let (err, bytes) = fetch(&broker, &topic, 0, base_of(&segs0[1]));
    assert_eq!(err, 0, "the next segment is served");
    assert!(bytes > 0);
    let got = consume_n(&addr, &topic, &[(0, rdkafka::Offset::Offset(base_of(&segs0[1])))], 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "a consumer reads past the damaged segment");

    // Partition 1: everything, intact; its index files rebuilt as they were.
    let got = consume_all(&addr, &topic, &[1], Duration::from_secs(60));
    assert_eq!(got.len(), BATCHES * PER_BATCH, "every record of the partition with rebuilt indexes");
    assert_contiguous(&got, 1, 0);
    for (k, c) in got.iter().enumerate() {
        assert_eq!(c.value.as_deref(), Some(&value(k / PER_BATCH, 1, k % PER_BATCH)[..]), "record {k}");
    }
    assert_eq!(std::fs::read(&index0).unwrap(), orig_index0, "offset index rebuilt");
    assert_eq!(std::fs::read(&timeindex1).unwrap(), orig_timeindex1, "time index rebuilt");

    broker.assert_alive();
    let log = broker.log();
    assert!(log.contains("corrupt batch in a segment file"), "the damage is reported");
    assert!(log.contains("invalid index file"), "the invalid index files are reported");
    // The damaged batch is still refused after another restart (it is detected at read time).
    broker.terminate();
    broker.restart();
    assert_eq!(fetch(&broker, &topic, 0, bad_offset).0, KAFKA_STORAGE_ERROR);
    assert_eq!(fetch(&broker, &topic, 1, 0).0, 0);
}
