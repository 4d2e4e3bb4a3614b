//! Retention by size and by time (log.retention.check.interval.ms makes the
//! broker check often), with a control topic that must keep everything.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const RECORD: usize = 1000;

fn records(n: usize, ts: Option<i64>, tag: &str) -> Vec<TestRecord> {
    (0..n)
        .map(|i| {
            let mut v = format!("{tag}-{i:05}-").into_bytes();
            v.resize(RECORD, b'r');
            let r = TestRecord::value(v).to_partition(0);
            match ts {
                Some(t) => r.with_timestamp(t + i as i64),
                None => r,
            }
        })
        .collect()
}

/// Produces in several requests, so that the log gets many batches (and,
/// with small segments, many segments).
fn produce_chunks(addr: &str, topic: &str, recs: &[TestRecord]) {
    let mut cfg = producer_config(addr);
    cfg.set("linger.ms", "0").set("batch.num.messages", "10");
    for chunk in recs.chunks(20) {
        produce_ok(&cfg, topic, chunk);
    }
}

/// Consumes the partition from its low watermark and checks the survivors
/// are exactly the tail of what was written.
fn check_tail(addr: &str, topic: &str, tag: &str, n: i64) -> i64 {
    let (lo, hi) = watermarks(addr, topic, 0);
    assert_eq!(hi, n, "{topic}: retention must not change the high watermark");
    let got = consume_all(addr, topic, &[0], Duration::from_secs(30));
    assert_eq!(got.len() as i64, hi - lo, "{topic}: records between the watermarks");
    for (i, c) in got.iter().enumerate() {
        let off = lo + i as i64;
        assert_eq!(c.offset, off, "{topic}: offsets after retention");
        let want = format!("{tag}-{off:05}-");
        assert!(c.value.as_ref().unwrap().starts_with(want.as_bytes()), "{topic}: wrong record at offset {off}");
    }
    lo
}

#[test]
fn retention_by_size_and_time_and_control() {
    let mut broker = Broker::start(
        2,
        &["log.retention.check.interval.ms=300", "log.segment.bytes=16384"],
    );
    let addr = broker.addr();
    let by_size = unique("ret-bytes");
    let by_time = unique("ret-ms");
    let control = unique("ret-none");
    create_topic(&addr, &by_size, 1, &[("retention.bytes", "50000")]);
    create_topic(&addr, &by_time, 1, &[("retention.ms", "60000")]);
    create_topic(&addr, &control, 1, &[]);

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    produce_chunks(&addr, &by_size, &records(200, None, "s"));
    // A day old: every closed segment is past retention.ms at once.
    produce_chunks(&addr, &by_time, &records(200, Some(now - 86_400_000), "t"));
    produce_chunks(&addr, &control, &records(200, None, "c"));

    let lo_size = wait_for("size retention to delete old segments", Duration::from_secs(30), || {
        let (lo, _) = watermarks(&addr, &by_size, 0);
        (lo > 0).then_some(lo)
    });
    let lo_time = wait_for("time retention to delete old segments", Duration::from_secs(30), || {
        let (lo, _) = watermarks(&addr, &by_time, 0);
        (lo > 0).then_some(lo)
    });
    // Let a few more checks run: the size-retained topic must keep at least
    // retention.bytes (Kafka deletes a segment only if what stays is still
    // >= retention.bytes).
    std::thread::sleep(Duration::from_secs(2));
    let lo_size = check_tail(&addr, &by_size, "s", 200).max(lo_size);
    let kept = (200 - lo_size) as usize * RECORD;
    assert!(kept >= 40_000, "size retention deleted too much: kept ~{kept} bytes of records (low watermark {lo_size})");
    // What stays is under retention.bytes + one deletable segment + the
    // active segment (~83 KB): ~100 records is generous.
    assert!(200 - lo_size <= 100, "size retention deleted too little: {} records kept", 200 - lo_size);
    let lo_time = check_tail(&addr, &by_time, "t", 200).max(lo_time);
    assert!(lo_time >= 100, "time retention left too much: low watermark {lo_time} of 200 with 16 KB segments");
    assert_eq!(check_tail(&addr, &control, "c", 200), 0, "control topic (default 7-day retention, fresh records) lost data");

    // Deleted stays deleted across a restart; nothing else is lost.
    broker.terminate();
    broker.restart();
    let after = check_tail(&addr, &by_size, "s", 200);
    assert!(after >= lo_size, "low watermark went back after restart: {after} < {lo_size}");
    assert_eq!(check_tail(&addr, &control, "c", 200), 0);
    // And the log continues at the old end.
    let acks = produce_ok(&producer_config(&addr), &by_size, &records(1, None, "s"));
    assert_eq!(acks, vec![(0, 200)]);
}
