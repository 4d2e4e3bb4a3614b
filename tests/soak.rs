//! Soak: a steady produce rate (acks=all) while a consumer group's members come
//! and go, for `SOAK_SECS` seconds (120 in CI; the documented long run is 1800).
//!
//! Every 5 s it samples the broker's resident memory and open file descriptors;
//! per window it records produce-ack latency percentiles. At the end it checks
//! that memory and descriptors are flat after the warm-up (no leak; the in-memory
//! tails are full by then and retention keeps the disk bounded) and that the group
//! consumed every acknowledged record despite the churn. Latency is reported, not
//! asserted (a shared machine). `SOAK_RATE` sets records per second (1 KiB each),
//! `SOAK_REPORT` a file to write the summary to.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

const PARTITIONS: i32 = 6;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// (resident bytes, open file descriptors) of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss_kb * 1024, fds)
}

fn value(seq: u64) -> Vec<u8> {
    let mut v = format!("soak-{seq:012}-").into_bytes();
    v.resize(1024, b'a' + (seq % 26) as u8);
    v
}

fn seq_of(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v.get(5..17)?).ok()?.parse().ok()
}

/// One group member on its own thread, until told to stop (then it leaves the group).
fn member(addr: &str, topic: &str, group: &str, seen: Arc<Mutex<HashSet<u64>>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut cfg = base_config(addr);
    cfg.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100");
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let c: BaseConsumer = cfg.create().expect("group member");
        c.subscribe(&[&topic]).expect("subscribe");
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                if let Some(s) = m.payload().and_then(seq_of) {
                    seen.lock().unwrap().insert(s);
                }
            }
        }
        c.unsubscribe();
        // Dropping the consumer commits and leaves the group.
    })
}

fn percentiles(mut v: Vec<u32>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0;
    format!(
        "{} acks, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        v.len(),
        q(0.50),
        q(0.99),
        q(0.999),
        *v.last().unwrap() as f64 / 1000.0
    )
}

#[test]
fn soak_memory_and_descriptors_stay_flat() {
    let secs = env_u64("SOAK_SECS", 120);
    let rate = env_u64("SOAK_RATE", 2000);
    let mut broker = Broker::start(2, &["log.retention.check.interval.ms=5000", "group.initial.rebalance.delay.ms=0"]);
    let addr = broker.addr();
    let pid = broker.pid().expect("broker pid");
    let topic = unique("soak");
    create_topic(&addr, &topic, PARTITIONS, &[("segment.bytes", "16777216"), ("retention.bytes", "67108864")]);
    let group = unique("soak-group");

    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut members: Vec<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> = (0..3)
        .map(|_| {
            let stop = Arc::new(AtomicBool::new(false));
            (stop.clone(), member(&addr, &topic, &group, seen.clone(), stop))
        })
        .collect();

    let mut cfg = producer_config(&addr);
    cfg.set("acks", "all").set("linger.ms", "5").set("message.timeout.ms", "60000").set("queue.buffering.max.messages", "1000000");
    let (p, rx) = collecting_producer(&cfg);
    let start = Instant::now();
    let window = Duration::from_secs((secs / 6).clamp(10, 300));
    let mut windows: Vec<Vec<u32>> = vec![Vec::new()];
    let mut sent_at: std::collections::HashMap<usize, Instant> = std::collections::HashMap::new();
    let mut acked: Vec<u64> = Vec::new();
    let mut failed = 0usize;
    let mut samples: Vec<(f64, u64, usize)> = Vec::new();
    let mut next_sample = start;
    let mut next_churn = start + Duration::from_secs(15);
    let mut churns = 0;
    let mut seq = 0u64;
    let take = |idx: usize, r: DeliveryOutcome, sent_at: &mut std::collections::HashMap<usize, Instant>, windows: &mut Vec<Vec<u32>>, acked: &mut Vec<u64>, failed: &mut usize| {
        let t = sent_at.remove(&idx).expect("report for an unknown record");
        match r {
            Ok(_) => {
                windows.last_mut().unwrap().push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                acked.push(idx as u64);
            }
            Err(_) => *failed += 1,
        }
    };
    while start.elapsed() < Duration::from_secs(secs) {
        // Steady rate: send what the clock says is due.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while seq < due {
            let r = TestRecord::value(value(seq)).to_partition((seq % PARTITIONS as u64) as i32);
            send_record(&p, &topic, &r, seq as usize).expect("enqueue");
            sent_at.insert(seq as usize, Instant::now());
            seq += 1;
        }
        p.poll(Duration::from_millis(2));
        while let Ok((idx, r)) = rx.try_recv() {
            take(idx, r, &mut sent_at, &mut windows, &mut acked, &mut failed);
        }
        if start.elapsed() >= window * windows.len() as u32 {
            windows.push(Vec::new());
        }
        if Instant::now() >= next_sample {
            broker.assert_alive();
            let (rss, fds) = rss_and_fds(pid);
            samples.push((start.elapsed().as_secs_f64(), rss, fds));
            next_sample += Duration::from_secs(5);
        }
        if Instant::now() >= next_churn {
            // Churn: the oldest member leaves, a new one joins.
            let (stop, h) = members.remove(0);
            stop.store(true, Ordering::Relaxed);
            h.join().expect("member thread");
            let stop = Arc::new(AtomicBool::new(false));
            members.push((stop.clone(), member(&addr, &topic, &group, seen.clone(), stop)));
            churns += 1;
            next_churn += Duration::from_secs(15);
        }
    }
    let drain_until = Instant::now() + Duration::from_secs(60);
    while !sent_at.is_empty() && Instant::now() < drain_until {
        p.poll(Duration::from_millis(20));
        while let Ok((idx, r)) = rx.try_recv() {
            take(idx, r, &mut sent_at, &mut windows, &mut acked, &mut failed);
        }
    }
    assert!(sent_at.is_empty(), "{} records without a delivery report 60 s after the end", sent_at.len());
    assert_eq!(failed, 0, "{failed} records failed under a steady rate");

    // The group must get everything acknowledged, churn or not (records older than
    // retention excepted: the log start may have passed them).
    let (low_marks, _): (Vec<i64>, Vec<i64>) = (0..PARTITIONS).map(|p| watermarks(&addr, &topic, p)).unzip();
    let retained_from = |s: u64| -> bool {
        // Record s went to partition s % P as that partition's (s / P)-th record.
        (s / PARTITIONS as u64) as i64 >= low_marks[(s % PARTITIONS as u64) as usize]
    };
    let want: Vec<u64> = acked.iter().copied().filter(|s| retained_from(*s)).collect();
    let until = Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let s = seen.lock().unwrap();
        let missing = want.iter().filter(|x| !s.contains(x)).count();
        drop(s);
        if missing == 0 || Instant::now() > until {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for (stop, h) in members {
        stop.store(true, Ordering::Relaxed);
        h.join().expect("member thread");
    }
    assert_eq!(missing, 0, "the group never consumed {missing} of {} acknowledged records", want.len());

    // Flat memory and descriptors after the warm-up (the first third, at least 60 s: the
    // in-memory tails, 8 MiB per partition, fill in about 25 s at the default rate).
    let warm = (secs as f64 / 3.0).max(60.0).min(secs as f64 * 0.6);
    let after: Vec<&(f64, u64, usize)> = samples.iter().filter(|s| s.0 >= warm).collect();
    assert!(after.len() >= 3, "too few samples after the warm-up: {samples:?}");
    let half = after.len() / 2;
    let avg = |xs: &[&(f64, u64, usize)]| xs.iter().map(|s| s.1 as f64).sum::<f64>() / xs.len() as f64;
    let (early, late) = (avg(&after[..half.max(1)]), avg(&after[half..]));
    let max_fds_early = after[..half.max(1)].iter().map(|s| s.2).max().unwrap();
    let last_fds = after.last().unwrap().2;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let mut report = format!(
        "soak: {secs} s at {rate} records/s (1 KiB, acks=all, {PARTITIONS} partitions, retention.bytes 64 MiB), \
         {churns} group member changes; {} acknowledged, {failed} failed, all consumed by the group\n\
         broker RSS after warm-up: {:.0} MiB (first half) -> {:.0} MiB (second half), peak {:.0} MiB; open fds {} -> {}\n",
        acked.len(),
        mib(early),
        mib(late),
        mib(samples.iter().map(|s| s.1).max().unwrap_or(0) as f64),
        after[0].2,
        last_fds
    );
    for (i, w) in windows.into_iter().enumerate() {
        report.push_str(&format!("ack latency, window {} ({} s each): {}\n", i + 1, window.as_secs(), percentiles(w)));
    }
    eprint!("{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(path, &report).expect("write soak report");
    }
    assert!(late <= early * 1.10 + 32.0 * 1024.0 * 1024.0, "broker memory grew after the warm-up: {report}");
    assert!(last_fds <= max_fds_early + 16, "open file descriptors grew: {report}");
    broker.terminate();
}
