//! Crash torture: a real broker process SIGKILLed again and again under load.
//!
//! Each cycle runs, against one broker with two cores:
//! - a plain producer (acks=all, no retries, a compression codec and linger
//!   picked per cycle) writing keyed records with headers and timestamps to a
//!   4-partition topic and to a 2-partition topic whose small `retention.bytes`
//!   keeps retention deleting segments;
//! - an idempotent producer (acks=all) that lives across the kills, so its
//!   retries after a restart exercise the broker's rebuilt sequence state;
//! - a consumer group member reading the first topic along and committing.
//!
//! Segments are small (64 KiB, 32 KiB for the retention topic), so kills land
//! during segment rolls and index writes. The kill is one of: SIGKILL under load,
//! SIGTERM followed shortly by SIGKILL (a crash during shutdown), or SIGKILL then
//! a second SIGKILL during the restart's recovery. After each restart the cycle
//! checks that:
//! - every acknowledged record is present exactly once, at its acknowledged
//!   offset, with its key, value, headers and timestamp (every record's content
//!   is derived from its id, so every record read is checked byte for byte);
//! - offsets are dense, records keep their send order within a partition, and
//!   nothing appears that was never sent;
//! - the log start never goes backwards and the log end never falls below what
//!   an earlier cycle already read;
//! - committed group offsets never go backwards and never pass the log end;
//! - indexes agree with the log: reads from random acknowledged offsets (from
//!   disk, after the restart) return exactly that record, and timestamp lookups
//!   find the right offset.
//!
//! `TORTURE_CYCLES` sets the number of cycles (default 6 for CI), `TORTURE_SEED`
//! the seed of the random choices (printed at the start). The long run:
//! `TORTURE_CYCLES=1000 cargo test --release --test torture -- --nocapture`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

/// Cycles between full re-reads of every topic (the other cycles read what is new).
const FULL_CHECK_EVERY: u32 = 10;
/// Cycles after which the topics are deleted and made afresh, bounding the data.
const ROTATE_EVERY: u32 = 100;
const GROUP: &str = "torture-group";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// A record's identity; its key, value, headers and timestamp derive from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id {
    topic: u8,
    cycle: u32,
    seq: u64,
}

fn record(id: Id, base_ts: i64) -> TestRecord {
    let mut v = format!("T{}-c{}-s{}-", id.topic, id.cycle, id.seq).into_bytes();
    let filler = if id.seq % 97 == 13 { 20_000 + (id.seq % 5000) as usize } else { (id.seq * 7919 % 500) as usize };
    v.extend((0..filler).map(|j| b'a' + ((id.seq as usize + j * 7) % 26) as u8));
    let mut r = TestRecord::value(v).with_timestamp(base_ts + id.cycle as i64 * 1_000_000 + id.seq as i64);
    if id.seq % 5 != 0 {
        r = r.with_key(format!("k{}", id.seq * 31 % 97));
    }
    if id.seq % 3 != 0 {
        let h = format!("h-{}-{}", id.cycle, id.seq);
        r = r.with_header("h1", Some(h.as_bytes())).with_header("h2", None);
    }
    r
}

fn parse_id(v: &[u8]) -> Option<Id> {
    let s = std::str::from_utf8(v.get(..v.len().min(64))?).ok()?;
    let mut it = s.split('-');
    let topic = it.next()?.strip_prefix('T')?.parse().ok()?;
    let cycle = it.next()?.strip_prefix('c')?.parse().ok()?;
    let seq = it.next()?.strip_prefix('s')?.parse().ok()?;
    Some(Id { topic, cycle, seq })
}

/// Checks a consumed record byte for byte against what its id says was sent.
fn check_content(c: &Consumed, base_ts: i64) -> Result<Id, String> {
    let value = c.value.as_deref().ok_or_else(|| format!("null value at {}/{}", c.partition, c.offset))?;
    let id = parse_id(value).ok_or_else(|| format!("record at {}/{} not written by this test: {:?}", c.partition, c.offset, String::from_utf8_lossy(&value[..value.len().min(80)])))?;
    let want = record(id, base_ts);
    let headers: Vec<(String, Option<Vec<u8>>)> = want.headers.clone();
    if want.value.as_deref() != Some(value) || want.key != c.key || headers != c.headers || want.timestamp != c.timestamp {
        return Err(format!(
            "record {id:?} at {}/{} differs from what was sent: key {:?} vs {:?}, headers {:?} vs {:?}, timestamp {:?} vs {:?}, value {} vs {} bytes",
            c.partition,
            c.offset,
            c.key,
            want.key,
            c.headers,
            want.headers,
            c.timestamp,
            want.timestamp,
            value.len(),
            want.value.as_ref().map_or(0, |v| v.len())
        ));
    }
    Ok(id)
}

/// What the test knows about one topic.
struct TopicState {
    name: String,
    index: u8,
    partitions: i32,
    retention: bool,
    /// Acknowledged (partition, offset) -> record.
    acked: BTreeMap<(i32, i64), Id>,
    /// Every record handed to a producer, with its partition.
    sent: HashMap<Id, i32>,
    /// Where each record was found in the log.
    found: HashMap<Id, (i32, i64)>,
    /// Per partition: everything below this was read and checked.
    verified_to: Vec<i64>,
    /// Per partition: the record just below `verified_to` (send-order check).
    last_id: Vec<Option<Id>>,
    log_start: Vec<i64>,
}

impl TopicState {
    fn new(name: String, index: u8, partitions: i32, retention: bool) -> Self {
        let n = partitions as usize;
        TopicState {
            name,
            index,
            partitions,
            retention,
            acked: BTreeMap::new(),
            sent: HashMap::new(),
            found: HashMap::new(),
            verified_to: vec![0; n],
            last_id: vec![None; n],
            log_start: vec![0; n],
        }
    }

    fn ack(&mut self, id: Id, p: i32, o: i64, ctx: &str) {
        assert_eq!(self.sent.get(&id), Some(&p), "{ctx}: {id:?} acknowledged on partition {p}");
        if let Some(prev) = self.acked.insert((p, o), id) {
            panic!("{ctx}: offset {p}/{o} acknowledged twice: {prev:?} and {id:?}");
        }
    }

    /// Reads what is new (or everything) and checks it; see the module docs.
    fn verify(&mut self, broker: &Broker, base_ts: i64, full: bool, ctx: &str) -> Vec<Consumed> {
        let addr = broker.addr();
        let mut ranges = Vec::new();
        let c = new_consumer(&addr);
        for p in 0..self.partitions {
            let (lo, hi) = c
                .fetch_watermarks(&self.name, p, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{ctx}: watermarks of {}/{p}: {e}", self.name));
            let i = p as usize;
            assert!(lo >= self.log_start[i], "{ctx}: {}/{p} log start went back from {} to {lo}", self.name, self.log_start[i]);
            if !self.retention {
                assert_eq!(lo, 0, "{ctx}: {}/{p} log start moved without retention", self.name);
            }
            assert!(hi >= self.verified_to[i], "{ctx}: {}/{p} log end {hi} below the {} already read", self.name, self.verified_to[i]);
            if let Some(((_, o), id)) = self.acked.range((p, 0)..(p, i64::MAX)).next_back() {
                assert!(hi > *o, "{ctx}: {}/{p} log end {hi} but {id:?} was acknowledged at {o}", self.name);
            }
            let from = if full { lo } else { lo.max(self.verified_to[i]) };
            ranges.push((p, from, hi));
            self.log_start[i] = lo;
        }
        let got = read_ranges(&addr, &self.name, &ranges);
        for &(p, from, hi) in &ranges {
            let i = p as usize;
            // Retention may delete segments while we read (the reader then restarts at the
            // new log start, re-reading some records): what went below the log start in the
            // meantime may be missing, nothing else.
            let from = if self.retention {
                let (lo_now, _) = c
                    .fetch_watermarks(&self.name, p, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("{ctx}: watermarks of {}/{p}: {e}", self.name));
                assert!(lo_now >= self.log_start[i], "{ctx}: {}/{p} log start went back", self.name);
                self.log_start[i] = lo_now;
                from.max(lo_now.min(hi))
            } else {
                from
            };
            let mut by_offset: BTreeMap<i64, &Consumed> = BTreeMap::new();
            for c in got.iter().filter(|c| c.partition == p && c.offset >= from) {
                if let Some(prev) = by_offset.insert(c.offset, c) {
                    assert_eq!(prev, c, "{ctx}: {}/{p}/{}: two reads of one offset differ", self.name, c.offset);
                }
            }
            let recs: Vec<&Consumed> = by_offset.into_values().collect();
            assert_eq!(recs.len() as i64, hi - from, "{ctx}: {}/{p} [{from}, {hi}) read {} records", self.name, recs.len());
            let mut prev = if from == self.verified_to[i] { self.last_id[i] } else { None };
            for (k, c) in recs.iter().enumerate() {
                assert_eq!(c.offset, from + k as i64, "{ctx}: {}/{p} offsets not dense", self.name);
                let id = check_content(c, base_ts).unwrap_or_else(|e| panic!("{ctx}: {}: {e}", self.name));
                assert_eq!(id.topic, self.index, "{ctx}: {}/{}: record of another topic: {id:?}", self.name, c.offset);
                assert_eq!(self.sent.get(&id), Some(&p), "{ctx}: {}/{}: {id:?} was never sent to this partition", self.name, c.offset);
                if let Some(&(fp, fo)) = self.found.get(&id) {
                    assert_eq!((fp, fo), (p, c.offset), "{ctx}: {}: {id:?} found at {p}/{} and earlier at {fp}/{fo}", self.name, c.offset);
                }
                self.found.insert(id, (p, c.offset));
                if let Some(pr) = prev {
                    assert!(pr < id, "{ctx}: {}/{p}: {id:?} at {} after {pr:?}: send order broken", self.name, c.offset);
                }
                prev = Some(id);
            }
            for ((_, o), id) in self.acked.range((p, from)..(p, hi)) {
                let c = recs[(o - from) as usize];
                let at = parse_id(c.value.as_deref().unwrap_or_default());
                assert_eq!(at, Some(*id), "{ctx}: {}/{p}/{o}: acknowledged {id:?}, found {at:?}", self.name);
            }
            if hi > from {
                self.last_id[i] = prev;
            }
            self.verified_to[i] = hi;
        }
        // Acknowledged records above the log start must all have been read at some time.
        for ((p, o), id) in &self.acked {
            if *o >= self.log_start[*p as usize] {
                assert_eq!(self.found.get(id), Some(&(*p, *o)), "{ctx}: {}: acknowledged {id:?} at {p}/{o} is missing", self.name);
            }
        }
        got
    }

    /// Reads single records at random acknowledged offsets (the restart emptied the
    /// in-memory tail, so these go through the offset index to disk).
    fn probe_offsets(&self, addr: &str, rng: &mut Rng, n: usize, ctx: &str) {
        let live: Vec<(&(i32, i64), &Id)> = self.acked.iter().filter(|((p, o), _)| *o >= self.log_start[*p as usize]).collect();
        for _ in 0..n.min(live.len()) {
            let ((p, o), id) = live[rng.below(live.len() as u64) as usize];
            let got = consume_n(addr, &self.name, &[(*p, Offset::Offset(*o))], 1, Duration::from_secs(20));
            let first = got.first().unwrap_or_else(|| panic!("{ctx}: {}: nothing read at {p}/{o}", self.name));
            assert_eq!(first.offset, *o, "{ctx}: {}: read at {p}/{o} started at {}", self.name, first.offset);
            assert_eq!(parse_id(first.value.as_deref().unwrap_or_default()), Some(*id), "{ctx}: {}: record at {p}/{o}", self.name);
        }
    }
}

/// Reads `[from, to)` of each listed partition (until every partition has reached
/// its `to`), bounded in time. May return an offset twice (after a reset to the log
/// start when retention deleted what was being read).
fn read_ranges(addr: &str, topic: &str, ranges: &[(i32, i64, i64)]) -> Vec<Consumed> {
    let mut out = Vec::new();
    let todo: Vec<(i32, i64, i64)> = ranges.iter().copied().filter(|(_, f, t)| t > f).collect();
    if todo.is_empty() {
        return out;
    }
    let c = new_consumer(addr);
    let mut tpl = TopicPartitionList::new();
    for (p, f, _) in &todo {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*f)).unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut reached: HashMap<i32, i64> = todo.iter().map(|(p, f, _)| (*p, *f)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while todo.iter().any(|(p, _, t)| reached[p] < *t) {
        assert!(Instant::now() < deadline, "reading {topic}: reached {reached:?} of {todo:?} in 120 s");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let r = to_consumed(&m);
                if let Some((_, _, t)) = todo.iter().find(|(p, _, _)| *p == r.partition) {
                    if r.offset < *t {
                        let e = reached.get_mut(&r.partition).unwrap();
                        *e = (*e).max(r.offset + 1);
                        out.push(r);
                    }
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// A consumer group member reading a topic along, committing synchronously.
struct GroupReader {
    stop: Arc<AtomicBool>,
    /// Per partition: the highest offset a commit reported success for.
    committed: Arc<Mutex<BTreeMap<i32, i64>>>,
    bad: Arc<Mutex<Vec<String>>>,
    read: Arc<Mutex<u64>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl GroupReader {
    fn start(addr: &str, topic: &str, base_ts: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(Mutex::new(BTreeMap::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let read = Arc::new(Mutex::new(0u64));
        let mut cfg = base_config(addr);
        cfg.set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", "100")
            .set("reconnect.backoff.ms", "20")
            .set("reconnect.backoff.max.ms", "200")
            .set("check.crcs", "true");
        let c: BaseConsumer = cfg.create().expect("group consumer");
        c.subscribe(&[topic]).expect("subscribe");
        let (s, cm, b, r) = (stop.clone(), committed.clone(), bad.clone(), read.clone());
        let handle = std::thread::spawn(move || {
            let mut since_commit = 0;
            let mut last_commit = Instant::now();
            while !s.load(Ordering::Relaxed) {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        use rdkafka::message::Message;
                        let cons = Consumed {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(|k| k.to_vec()),
                            value: m.payload().map(|v| v.to_vec()),
                            headers: Vec::new(),
                            timestamp: m.timestamp().to_millis(),
                            log_append_time: false,
                        };
                        let id = cons.value.as_deref().and_then(parse_id);
                        let ok = id.is_some_and(|id| {
                            let want = record(id, base_ts);
                            want.value == cons.value && want.key == cons.key && want.timestamp == cons.timestamp
                        });
                        if !ok {
                            b.lock().unwrap().push(format!("group member read a bad record at {}/{}", cons.partition, cons.offset));
                        }
                        *r.lock().unwrap() += 1;
                        since_commit += 1;
                    }
                    Some(Err(_)) | None => {}
                }
                if since_commit > 0 && (since_commit >= 200 || last_commit.elapsed() > Duration::from_millis(300)) {
                    let Ok(pos) = c.position() else { continue };
                    if c.commit(&pos, CommitMode::Sync).is_ok() {
                        let mut cm = cm.lock().unwrap();
                        for e in pos.elements() {
                            if let Offset::Offset(o) = e.offset() {
                                let v = cm.entry(e.partition()).or_insert(o);
                                *v = (*v).max(o);
                            }
                        }
                        since_commit = 0;
                    }
                    last_commit = Instant::now();
                }
            }
        });
        GroupReader { stop, committed, bad, read, handle: Some(handle) }
    }

    /// Committed offsets, as a fresh client fetches them, must not be below any commit
    /// that succeeded nor past the log end.
    fn check(&self, addr: &str, topic: &TopicState, seen: &mut BTreeMap<i32, i64>, ctx: &str) {
        let bad = self.bad.lock().unwrap().clone();
        assert!(bad.is_empty(), "{ctx}: {bad:?}");
        let acked_commits = self.committed.lock().unwrap().clone();
        let mut cfg = base_config(addr);
        cfg.set("group.id", GROUP).set("enable.auto.commit", "false");
        let c: BaseConsumer = cfg.create().expect("offsets client");
        let mut tpl = TopicPartitionList::new();
        for p in 0..topic.partitions {
            tpl.add_partition(&topic.name, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{ctx}: committed offsets: {e}"));
        for e in got.elements() {
            let p = e.partition();
            let now = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            let floor = acked_commits.get(&p).copied().unwrap_or(-1).max(seen.get(&p).copied().unwrap_or(-1));
            assert!(now >= floor, "{ctx}: committed offset of {}/{p} went back to {now} (a commit of {floor} had succeeded)", topic.name);
            assert!(now <= topic.verified_to[p as usize], "{ctx}: committed offset {now} of {}/{p} is past the log end {}", topic.name, topic.verified_to[p as usize]);
            seen.insert(p, now.max(floor));
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("group reader thread");
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    UnderLoad,
    DuringShutdown,
    DuringRecovery,
}

struct Idem {
    p: CollectingProducer,
    rx: std::sync::mpsc::Receiver<(usize, DeliveryOutcome)>,
    pending: HashMap<usize, Id>,
    next: usize,
}

fn idempotent_producer(addr: &str, compression: &str) -> Idem {
    let mut cfg = producer_config(addr);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", compression)
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .set("request.timeout.ms", "10000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200")
        .set("retry.backoff.ms", "20")
        .set("retry.backoff.max.ms", "200");
    let (p, rx) = collecting_producer(&cfg);
    Idem { p, rx, pending: HashMap::new(), next: 0 }
}

struct Topics {
    plain: TopicState,
    idem: TopicState,
    ret: TopicState,
}

fn make_topics(addr: &str, generation: u32) -> Topics {
    let t = Topics {
        plain: TopicState::new(unique(&format!("torture-plain-{generation}")), 0, 4, false),
        idem: TopicState::new(unique(&format!("torture-idem-{generation}")), 1, 4, false),
        ret: TopicState::new(unique(&format!("torture-ret-{generation}")), 2, 2, true),
    };
    create_topic(addr, &t.plain.name, 4, &[]);
    create_topic(addr, &t.idem.name, 4, &[]);
    create_topic(addr, &t.ret.name, 2, &[("retention.bytes", "100000"), ("segment.bytes", "32768")]);
    t
}

#[test]
fn sigkill_torture_keeps_every_acknowledged_record() {
    let cycles: u32 = std::env::var("TORTURE_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let seed: u64 = std::env::var("TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("torture: {cycles} cycles, seed {seed} (replay the same choices with TORTURE_SEED={seed})");
    let mut rng = Rng(seed);
    let base_ts = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 / 1000) * 1000;
    let mut broker = Broker::start(
        2,
        &["log.segment.bytes=65536", "log.index.interval.bytes=1024", "log.retention.check.interval.ms=200", "group.initial.rebalance.delay.ms=0"],
    );
    let addr = broker.addr();
    let mut topics = make_topics(&addr, 0);
    let mut reader = GroupReader::start(&addr, &topics.plain.name, base_ts);
    let mut committed_seen = BTreeMap::new();
    let mut idem = idempotent_producer(&addr, *rng.pick(&["none", "lz4", "zstd"]));
    let mut idem_seq = 0u64;
    let started = Instant::now();
    let mut kills = [0u32; 3];
    let mut totals = (0u64, 0u64); // (acknowledged, sent)

    for cycle in 1..=cycles {
        if cycle % ROTATE_EVERY == 0 {
            // Bound the data: drop the topics and start over (deletes under later kills too).
            drain_idem(&mut idem, &mut topics.idem, Duration::from_secs(120), "rotation");
            reader.stop();
            let a = admin(&addr);
            let names = [topics.plain.name.as_str(), topics.idem.name.as_str(), topics.ret.name.as_str()];
            let res = futures_lite::future::block_on(a.delete_topics(&names, &admin_opts())).expect("delete topics");
            assert!(res.iter().all(|r| r.is_ok()), "delete topics: {res:?}");
            topics = make_topics(&addr, cycle / ROTATE_EVERY);
            reader = GroupReader::start(&addr, &topics.plain.name, base_ts);
            committed_seen.clear();
            idem = idempotent_producer(&addr, *rng.pick(&["none", "lz4", "zstd"]));
        }
        let ctx = format!("cycle {cycle} (seed {seed})");
        let kill = match rng.below(100) {
            0..=69 => Kill::UnderLoad,
            70..=84 => Kill::DuringShutdown,
            _ => Kill::DuringRecovery,
        };
        let compression = *rng.pick(&["none", "gzip", "snappy", "lz4", "zstd"]);
        let linger = *rng.pick(&["0", "1", "5"]);
        let load_ms = 150 + rng.below(1200);
        let mut cfg = producer_config(&addr);
        cfg.set("acks", "all")
            .set("message.send.max.retries", "0")
            .set("compression.type", compression)
            .set("linger.ms", linger)
            .set("batch.num.messages", *rng.pick(&["10", "100", "1000"]))
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", "20000");
        let (plain, rx) = collecting_producer(&cfg);
        let mut pending: HashMap<usize, (u8, Id)> = HashMap::new();
        let mut idx = 0usize;
        let (mut seq_plain, mut seq_ret) = (0u64, 0u64);
        let mut acked_plain = 0u64;
        let load_start = Instant::now();
        let take = |res: DeliveryOutcome, which: u8, id: Id, topics: &mut Topics, ctx: &str| -> bool {
            let st = if which == 0 { &mut topics.plain } else { &mut topics.ret };
            match res {
                Ok((p, o)) => {
                    st.ack(id, p, o, ctx);
                    true
                }
                Err(_) => false,
            }
        };
        // Load until the chosen time has passed and something was acknowledged.
        loop {
            let elapsed = load_start.elapsed();
            assert!(elapsed < Duration::from_secs(60), "{ctx}: no acknowledgement in 60 s\n{}", broker.log_tail());
            if elapsed >= Duration::from_millis(load_ms) && acked_plain > 0 {
                break;
            }
            for _ in 0..20 {
                if pending.len() >= 3000 {
                    break;
                }
                let (which, id, part) = if idx % 3 == 2 {
                    seq_ret += 1;
                    (1u8, Id { topic: 2, cycle, seq: seq_ret }, (seq_ret % 2) as i32)
                } else {
                    seq_plain += 1;
                    (0u8, Id { topic: 0, cycle, seq: seq_plain }, (seq_plain % 4) as i32)
                };
                let st = if which == 0 { &mut topics.plain } else { &mut topics.ret };
                st.sent.insert(id, part);
                send_record(&plain, &st.name, &record(id, base_ts).to_partition(part), idx).expect("enqueue");
                pending.insert(idx, (which, id));
                idx += 1;
            }
            if idem.pending.len() < 3000 {
                for _ in 0..10 {
                    idem_seq += 1;
                    let id = Id { topic: 1, cycle, seq: idem_seq };
                    let part = (idem_seq % 4) as i32;
                    topics.idem.sent.insert(id, part);
                    let i = idem.next;
                    idem.next += 1;
                    send_record(&idem.p, &topics.idem.name, &record(id, base_ts).to_partition(part), i).expect("enqueue idempotent");
                    idem.pending.insert(i, id);
                }
            }
            plain.poll(Duration::from_millis(1));
            while let Ok((i, res)) = rx.try_recv() {
                let (which, id) = pending.remove(&i).expect("report for an unknown record");
                if let Err(e) = &res {
                    panic!("{ctx}: delivery failed before the kill: {e}\n{}", broker.log_tail());
                }
                if take(res, which, id, &mut topics, &ctx) && which == 0 {
                    acked_plain += 1;
                }
            }
            poll_idem(&mut idem, &mut topics.idem, &ctx, false);
        }
        let t_kill = Instant::now();
        match kill {
            Kill::UnderLoad => broker.kill9(),
            Kill::DuringShutdown => {
                broker.terminate_then_kill_after(Duration::from_millis(rng.below(40)));
            }
            Kill::DuringRecovery => {
                broker.kill9();
                broker.restart_and_kill_after(Duration::from_millis(rng.below(400)));
            }
        }
        kills[kill as usize] += 1;
        // Acknowledgements sent before the kill may still be on their way.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            plain.poll(Duration::from_millis(20));
            poll_idem(&mut idem, &mut topics.idem, &ctx, true);
        }
        drop(plain);
        while let Ok((i, res)) = rx.try_recv() {
            let (which, id) = pending.remove(&i).expect("report for an unknown record");
            take(res, which, id, &mut topics, &ctx);
        }
        broker.restart();
        let t_up = Instant::now();
        // The idempotent producer retries what it had in flight; let it finish.
        drain_idem(&mut idem, &mut topics.idem, Duration::from_secs(120), &ctx);
        let t_drained = Instant::now();

        let full = cycle % FULL_CHECK_EVERY == 0 || cycle == cycles;
        let plain_recs = topics.plain.verify(&broker, base_ts, full, &ctx);
        topics.idem.verify(&broker, base_ts, full, &ctx);
        topics.ret.verify(&broker, base_ts, full, &ctx);
        topics.plain.probe_offsets(&addr, &mut rng, 2, &ctx);
        topics.idem.probe_offsets(&addr, &mut rng, 1, &ctx);
        if full {
            probe_timestamps(&addr, &topics.plain, &plain_recs, &mut rng, &ctx);
        }
        let t_verified = Instant::now();
        reader.check(&addr, &topics.plain, &mut committed_seen, &ctx);
        let phases = format!(
            "load {:.1} s, kill+restart {:.1} s, drain {:.1} s, verify {:.1} s, group {:.1} s",
            (t_kill - load_start).as_secs_f64(),
            (t_up - t_kill).as_secs_f64(),
            (t_drained - t_up).as_secs_f64(),
            (t_verified - t_drained).as_secs_f64(),
            t_verified.elapsed().as_secs_f64()
        );
        let acked = topics.plain.acked.len() + topics.idem.acked.len() + topics.ret.acked.len();
        let sent = topics.plain.sent.len() + topics.idem.sent.len() + topics.ret.sent.len();
        totals = (acked as u64, sent as u64);
        eprintln!(
            "{ctx}: {kill:?}, {compression}, linger {linger}: {acked} acknowledged of {sent} sent so far; group read {}; {phases}; {:.0} s",
            *reader.read.lock().unwrap(),
            started.elapsed().as_secs_f64()
        );
    }
    drain_idem(&mut idem, &mut topics.idem, Duration::from_secs(120), "end");
    reader.stop();
    broker.terminate();
    broker.restart();
    topics.plain.verify(&broker, base_ts, true, "after a clean restart");
    topics.idem.verify(&broker, base_ts, true, "after a clean restart");
    topics.ret.verify(&broker, base_ts, true, "after a clean restart");
    broker.terminate();
    eprintln!(
        "torture: {cycles} cycles in {:.0} s (kills under load {}, during shutdown {}, during recovery {}); \
         {} records acknowledged in the current topics of {} sent, none lost",
        started.elapsed().as_secs_f64(),
        kills[0],
        kills[1],
        kills[2],
        totals.0,
        totals.1
    );
}

fn poll_idem(idem: &mut Idem, st: &mut TopicState, ctx: &str, after_kill: bool) {
    idem.p.poll(Duration::ZERO);
    while let Ok((i, res)) = idem.rx.try_recv() {
        let id = idem.pending.remove(&i).expect("report for an unknown idempotent record");
        match res {
            Ok((p, o)) => st.ack(id, p, o, ctx),
            Err(e) if !after_kill => panic!("{ctx}: idempotent delivery failed with the broker up: {e}"),
            Err(_) => {}
        }
    }
}

fn drain_idem(idem: &mut Idem, st: &mut TopicState, timeout: Duration, ctx: &str) {
    let deadline = Instant::now() + timeout;
    while !idem.pending.is_empty() {
        assert!(Instant::now() < deadline, "{ctx}: {} idempotent records unresolved after {timeout:?}", idem.pending.len());
        idem.p.poll(Duration::from_millis(20));
        poll_idem(idem, st, ctx, true);
    }
    let _ = idem.p.flush(Duration::from_secs(1));
}

/// ListOffsets by timestamp on partitions whose timestamps rise with the offset:
/// the answer must be exactly the record carrying that timestamp, compressed
/// batches included (the broker opens them, as Kafka does).
fn probe_timestamps(addr: &str, st: &TopicState, recs: &[Consumed], rng: &mut Rng, ctx: &str) {
    let c = new_consumer(addr);
    for p in 0..st.partitions {
        let part: Vec<&Consumed> = recs.iter().filter(|r| r.partition == p).collect();
        if part.is_empty() {
            continue;
        }
        let r = part[rng.below(part.len() as u64) as usize];
        let ts = r.timestamp.expect("timestamp");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&st.name, p, Offset::Offset(ts)).unwrap();
        let got = c.offsets_for_times(tpl, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{ctx}: offsets_for_times: {e}"));
        let o = got.elements().first().map(|e| e.offset());
        assert_eq!(o, Some(Offset::Offset(r.offset)), "{ctx}: {}/{p}: timestamp {ts} should find offset {}", st.name, r.offset);
    }
}
