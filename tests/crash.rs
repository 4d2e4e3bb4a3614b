//! Durability: SIGKILL mid-stream, graceful SIGTERM, and restarts with a
//! different core count. Every record the broker acknowledged must be there
//! after a restart, at exactly its acknowledged offset.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::ResourceSpecifier;
use rdkafka::producer::Producer;

const PARTITIONS: i32 = 4;

/// Payload: "c{cycle}-s{seq:08}-" then filler of varying length.
fn payload(cycle: u32, seq: u64) -> Vec<u8> {
    let mut v = format!("c{cycle}-s{seq:010}-").into_bytes();
    let filler = 40 + (seq * 7919 % 400) as usize;
    v.extend((0..filler).map(|j| b'a' + ((seq as usize + j) % 26) as u8));
    v
}

fn parse_payload(v: &[u8]) -> (u32, u64) {
    let s = std::str::from_utf8(v).unwrap_or_else(|_| panic!("payload is not UTF-8: {v:?}"));
    let mut it = s.split('-');
    let c = it.next().and_then(|c| c.strip_prefix('c')).and_then(|c| c.parse().ok());
    let q = it.next().and_then(|q| q.strip_prefix('s')).and_then(|q| q.parse().ok());
    match (c, q) {
        (Some(c), Some(q)) => (c, q),
        _ => panic!("payload not produced by this test: {s:?}"),
    }
}

/// Everything we know about what was sent and acknowledged.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<(i32, i64), Vec<u8>>,
    sent: HashSet<Vec<u8>>,
}

impl Ledger {
    /// Consumes the whole topic and checks it against the ledger; returns the
    /// high watermark of each partition.
    fn verify(&self, addr: &str, topic: &str, ctx: &str) -> Vec<i64> {
        let parts: Vec<i32> = (0..PARTITIONS).collect();
        let got = consume_all(addr, topic, &parts, Duration::from_secs(120));
        let mut seen = HashSet::new();
        let mut by_pos = BTreeMap::new();
        for c in &got {
            let v = c.value.clone().unwrap_or_else(|| panic!("{ctx}: null value at {}/{}", c.partition, c.offset));
            assert!(self.sent.contains(&v), "{ctx}: record at {}/{} was never sent: {:?}", c.partition, c.offset, String::from_utf8_lossy(&v));
            assert!(seen.insert(v.clone()), "{ctx}: payload {:?} appears twice", String::from_utf8_lossy(&v));
            by_pos.insert((c.partition, c.offset), v);
        }
        let mut his = Vec::new();
        for p in 0..PARTITIONS {
            assert_contiguous(&got, p, 0);
            // Send order is kept within a partition (one connection, no retries).
            let order: Vec<(u32, u64)> = got.iter().filter(|c| c.partition == p).map(|c| parse_payload(c.value.as_ref().unwrap())).collect();
            for w in order.windows(2) {
                assert!(w[0] < w[1], "{ctx}: partition {p} out of send order: {:?} then {:?}", w[0], w[1]);
            }
            his.push(order.len() as i64);
        }
        let mut missing = Vec::new();
        for ((p, o), v) in &self.acked {
            match by_pos.get(&(*p, *o)) {
                Some(g) if g == v => {}
                Some(g) => panic!(
                    "{ctx}: acknowledged record at {p}/{o} changed: acked {:?}, found {:?}",
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(g)
                ),
                None => missing.push((*p, *o)),
            }
        }
        assert!(missing.is_empty(), "{ctx}: {} acknowledged records lost, e.g. {:?}; high watermarks {his:?}", missing.len(), &missing[..missing.len().min(10)]);
        his
    }

    /// Produces one marker per partition and checks it lands at the high
    /// watermark (i.e. the log continues right after what survived).
    fn produce_markers(&mut self, addr: &str, topic: &str, cycle: u32, his: &[i64], ctx: &str) {
        let recs: Vec<TestRecord> = (0..PARTITIONS)
            .map(|p| TestRecord::value(payload(cycle, 9_000_000_000 + p as u64)).to_partition(p))
            .collect();
        let acks = produce_ok(&producer_config(addr), topic, &recs);
        for (r, (p, o)) in recs.into_iter().zip(acks) {
            assert_eq!(o, his[p as usize], "{ctx}: first offset produced to partition {p} after restart");
            self.sent.insert(r.value.clone().unwrap());
            self.acked.insert((p, o), r.value.unwrap());
        }
    }
}

/// Produces with acks=all until `kill_after` acknowledgements have arrived,
/// then SIGKILLs the broker with deliveries still in flight; records every
/// acknowledgement (including ones that were already on their way).
fn produce_and_kill(broker: &mut Broker, topic: &str, cycle: u32, kill_after: usize, ledger: &mut Ledger) {
    let addr = broker.addr();
    let mut cfg = producer_config(&addr);
    cfg.set("acks", "all")
        .set("enable.idempotence", "false")
        .set("message.send.max.retries", "0")
        .set("linger.ms", "2")
        .set("batch.num.messages", "100")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "10000")
        .set("queue.buffering.max.messages", "100000");
    let (p, rx) = collecting_producer(&cfg);
    let mut pending: BTreeMap<usize, (i32, Vec<u8>)> = BTreeMap::new();
    let mut acks_this_cycle = 0usize;
    let record = |idx: usize, res: DeliveryOutcome, pending: &mut BTreeMap<usize, (i32, Vec<u8>)>, ledger: &mut Ledger| -> usize {
        let (part, v) = pending.remove(&idx).expect("report for unknown record");
        if let Ok((rp, ro)) = res {
            assert_eq!(rp, part, "acknowledged on another partition");
            let prev = ledger.acked.insert((rp, ro), v);
            assert!(prev.is_none(), "cycle {cycle}: offset {rp}/{ro} acknowledged twice");
            1
        } else {
            0
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq = 0u64;
    loop {
        assert!(Instant::now() < deadline, "cycle {cycle}: only {acks_this_cycle} acks in 120 s");
        // Keep plenty in flight, but bounded.
        if pending.len() < 4000 {
            let part = (seq % PARTITIONS as u64) as i32;
            let v = payload(cycle, seq);
            let r = TestRecord::value(v.clone()).to_partition(part);
            send_record(&p, topic, &r, seq as usize).expect("enqueue");
            ledger.sent.insert(v.clone());
            pending.insert(seq as usize, (part, v));
            seq += 1;
        }
        p.poll(Duration::ZERO);
        while let Ok((idx, res)) = rx.try_recv() {
            if let Err(e) = &res {
                panic!("cycle {cycle}: delivery failed before the kill: {e}");
            }
            acks_this_cycle += record(idx, res, &mut pending, ledger);
        }
        if acks_this_cycle >= kill_after && p.in_flight_count() > 0 {
            break;
        }
        if pending.len() >= 4000 {
            p.poll(Duration::from_millis(1));
        }
    }
    broker.kill9();
    // Acks the broker sent before dying may still arrive; failures are fine.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        p.poll(Duration::from_millis(50));
        while let Ok((idx, res)) = rx.try_recv() {
            acks_this_cycle += record(idx, res, &mut pending, ledger);
        }
    }
    drop(p); // purges what is left
    while let Ok((idx, res)) = rx.try_recv() {
        acks_this_cycle += record(idx, res, &mut pending, ledger);
    }
    let failed = seq as usize - acks_this_cycle - pending.len();
    eprintln!("cycle {cycle}: sent {seq}, acknowledged {acks_this_cycle}, failed by the kill {failed}, no report {}", pending.len());
    if failed + pending.len() == 0 {
        eprintln!("cycle {cycle}: note: every in-flight record was acknowledged before the kill");
    }
}

/// Three SIGKILL/restart cycles under acks=all load.
#[test]
fn sigkill_under_load_loses_no_acknowledged_record() {
    let mut broker = Broker::start(2, &["log.segment.bytes=262144"]);
    let addr = broker.addr();
    let topic = unique("crash");
    create_topic(&addr, &topic, PARTITIONS, &[]);

    let mut ledger = Ledger::default();
    for cycle in 0..3u32 {
        produce_and_kill(&mut broker, &topic, cycle, 3000 + cycle as usize * 1000, &mut ledger);
        broker.restart();
        assert_eq!(partition_count(&addr, &topic), Some(PARTITIONS as usize), "topic after restart {cycle}");
        let ctx = format!("after kill #{}", cycle + 1);
        let his = ledger.verify(&addr, &topic, &ctx);
        ledger.produce_markers(&addr, &topic, cycle, &his, &ctx);
    }
    ledger.verify(&addr, &topic, "final");
    broker.terminate();
}

fn produce_batch(addr: &str, topic: &str, cycle: u32, n: u64, partitions: i32, ledger: &mut Ledger, acks: &str) {
    let mut cfg = producer_config(addr);
    cfg.set("acks", acks).set("message.send.max.retries", "0");
    let recs: Vec<TestRecord> = (0..n)
        .map(|s| TestRecord::value(payload(cycle, s)).to_partition((s % partitions as u64) as i32))
        .collect();
    let res = produce_ok(&cfg, topic, &recs);
    for (r, (p, o)) in recs.into_iter().zip(res) {
        ledger.sent.insert(r.value.clone().unwrap());
        ledger.acked.insert((p, o), r.value.unwrap());
    }
}

/// SIGTERM flushes and exits 0; the restarted broker has every record and
/// the topic's configuration.
#[test]
fn sigterm_is_graceful_and_keeps_everything() {
    let mut broker = Broker::start(2, &[]);
    let addr = broker.addr();
    let topic = unique("graceful");
    create_topic(&addr, &topic, PARTITIONS, &[("retention.ms", "86400000"), ("segment.bytes", "100000")]);
    let mut ledger = Ledger::default();
    produce_batch(&addr, &topic, 0, 3000, PARTITIONS, &mut ledger, "1");
    let before: Vec<(i64, i64)> = (0..PARTITIONS).map(|p| watermarks(&addr, &topic, p)).collect();

    broker.terminate();
    broker.restart();

    let after: Vec<(i64, i64)> = (0..PARTITIONS).map(|p| watermarks(&addr, &topic, p)).collect();
    assert_eq!(after, before, "watermarks across a graceful restart");
    let his = ledger.verify(&addr, &topic, "after SIGTERM");
    assert_eq!(his.iter().sum::<i64>(), 3000, "record count after SIGTERM restart");
    ledger.produce_markers(&addr, &topic, 1, &his, "after SIGTERM");

    let admin_c = admin(&addr);
    let res = futures_lite::future::block_on(admin_c.describe_configs([&ResourceSpecifier::Topic(&topic)], &admin_opts()))
        .expect("describe_configs");
    let cr = res[0].as_ref().expect("describe_configs result");
    assert_eq!(cr.get("retention.ms").and_then(|e| e.value.clone()).as_deref(), Some("86400000"), "topic config survives restart");
    assert_eq!(cr.get("segment.bytes").and_then(|e| e.value.clone()).as_deref(), Some("100000"));
    broker.terminate();
}

/// Partitions are owned by cores; a restart with another core count must
/// still find every partition's data (2 → 1 → 2 cores).
#[test]
fn restart_with_different_core_counts_keeps_data() {
    let mut broker = Broker::start(2, &["log.segment.bytes=65536"]);
    let addr = broker.addr();
    let topic = unique("cores");
    create_topic(&addr, &topic, PARTITIONS, &[]);
    let mut ledger = Ledger::default();
    produce_batch(&addr, &topic, 0, 1200, PARTITIONS, &mut ledger, "all");

    broker.terminate();
    broker.restart_with_cores(1);
    let his = ledger.verify(&addr, &topic, "2 → 1 cores");
    ledger.produce_markers(&addr, &topic, 0, &his, "2 → 1 cores");
    produce_batch(&addr, &topic, 1, 400, PARTITIONS, &mut ledger, "all");

    broker.terminate();
    broker.restart_with_cores(2);
    let his = ledger.verify(&addr, &topic, "1 → 2 cores");
    assert_eq!(his.iter().sum::<i64>(), 1200 + 400 + PARTITIONS as i64);
    ledger.produce_markers(&addr, &topic, 1, &his, "1 → 2 cores");
    ledger.verify(&addr, &topic, "final");
    broker.terminate();
}
