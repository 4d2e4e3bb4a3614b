//! Consumer groups (classic protocol) with real clients: librdkafka consumers
//! subscribing with a `group.id`, a member crashing (SIGKILL of a child
//! process), committed offsets surviving a broker SIGKILL, static membership,
//! the `corestream group ...` CLI, and kafka-python's KafkaConsumer.
//!
//! Every broker here runs with `group.initial.rebalance.delay.ms=0` so that
//! joins complete at once, and every wait is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

/// Broker settings for every test here.
const GROUP_SETS: &[&str] = &["group.initial.rebalance.delay.ms=0"];

fn start_broker() -> Broker {
    Broker::start(2, GROUP_SETS)
}

// ---------------------------------------------------------------------------
// Group members
// ---------------------------------------------------------------------------

/// Consumer context of a group member: counts rebalance callbacks, and
/// optionally commits the offsets of everything consumed so far when
/// partitions are revoked (so that the next owner resumes right after them).
struct Track {
    name: String,
    commit_on_revoke: bool,
    assigns: AtomicUsize,
    revokes: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Track {
    fn rebalances(&self) -> usize {
        self.assigns.load(Ordering::SeqCst) + self.revokes.load(Ordering::SeqCst)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}: {e}", self.name));
    }
}

impl ClientContext for Track {}

impl ConsumerContext for Track {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(_) => {
                self.assigns.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Revoke(tpl) => {
                self.revokes.fetch_add(1, Ordering::SeqCst);
                if self.commit_on_revoke && tpl.count() > 0 && !c.assignment_lost() {
                    match c.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) => {}
                        // Nothing consumed (so nothing stored) yet.
                        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                        Err(e) => self.error(format!("commit on revoke of {} partition(s) failed: {e}", tpl.count())),
                    }
                }
            }
            Rebalance::Error(e) => self.error(format!("rebalance error: {e}")),
        }
    }
}

type Member = BaseConsumer<Track>;

/// Configuration of a group member: offsets are stored as messages are
/// handed to the application, never committed automatically.
fn member_config(addr: &str, group: &str, client_id: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = consumer_config(addr);
    c.set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "true")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

fn member(addr: &str, group: &str, name: &str, extra: &[(&str, &str)], commit_on_revoke: bool) -> Member {
    let track = Track {
        name: name.to_string(),
        commit_on_revoke,
        assigns: AtomicUsize::new(0),
        revokes: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
    };
    member_config(addr, group, name, extra)
        .create_with_context(track)
        .unwrap_or_else(|e| panic!("create consumer {name}: {e}"))
}

/// The member's current assignment (partitions of `topic`).
fn assigned(c: &Member, topic: &str) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter(|e| e.topic() == topic)
                .map(|e| e.partition())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the sets are pairwise disjoint, each non-empty, and together
/// exactly `0..partitions`.
fn is_partitioning(sets: &[&BTreeSet<i32>], partitions: i32) -> bool {
    let mut union = BTreeSet::new();
    for s in sets {
        if s.is_empty() {
            return false;
        }
        for p in s.iter() {
            if !union.insert(*p) {
                return false;
            }
        }
    }
    union == (0..partitions).collect()
}

/// Drops (closes) a consumer on a helper thread, bounded in time.
fn close<C: ConsumerContext + 'static>(c: BaseConsumer<C>, what: &str) {
    bounded(what, Duration::from_secs(30), move || drop(c));
}

/// Closes group members one after another the way separate applications close:
/// while one closes, the others go on polling, so each serves the rebalance that
/// the leaving causes. A member left unpolled with a rebalance event waiting can
/// hang in its own close later (librdkafka's close then waits forever on the
/// rebalance callback: confluentinc/librdkafka#4884; seen here about once in 40
/// runs), so no test closes a member while the others sit idle.
///
/// With `settle` (topic, partition count), the next member is closed only once
/// the remaining ones own every partition of the topic between them for a
/// moment: a member closed in the middle of a rebalance leaves before its revoke
/// callback can commit (librdkafka sends LeaveGroup first), and its records are
/// then read again, as Kafka's at-least-once handoff allows. Returns the
/// positions of the records the remaining members received meanwhile.
fn close_in_turn(members: Vec<Member>, label: &str, settle: Option<(&str, i32)>) -> Vec<(i32, i64)> {
    fn poll_all(members: &std::collections::VecDeque<(usize, Member)>, received: &mut Vec<(i32, i64)>) {
        for (_, m) in members {
            if let Some(Ok(msg)) = m.poll(Duration::from_millis(10)) {
                received.push((msg.partition(), msg.offset()));
            }
        }
    }
    let mut rest: std::collections::VecDeque<(usize, Member)> = members.into_iter().enumerate().collect();
    let mut received = Vec::new();
    while let Some((i, m)) = rest.pop_front() {
        let what = format!("close {label}-{i}");
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(what.clone())
            .spawn(move || {
                drop(m);
                let _ = tx.send(());
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.try_recv() {
                Ok(()) => break,
                Err(mpsc::TryRecvError::Disconnected) => match handle.join() {
                    Err(p) => std::panic::resume_unwind(p),
                    Ok(()) => panic!("{what}: the closing thread ended without a result"),
                },
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(Instant::now() < deadline, "{what}: did not finish within 30s");
            if rest.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
            poll_all(&rest, &mut received);
        }
        let _ = handle.join();
        let Some((topic, partitions)) = settle.filter(|_| !rest.is_empty()) else { continue };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut settled_since: Option<Instant> = None;
        while settled_since.is_none_or(|t| t.elapsed() < Duration::from_millis(500)) {
            poll_all(&rest, &mut received);
            let sets: Vec<BTreeSet<i32>> = rest.iter().map(|(_, m)| assigned(m, topic)).collect();
            let good = is_partitioning(&sets.iter().collect::<Vec<_>>(), partitions);
            settled_since = if good { settled_since.or(Some(Instant::now())) } else { None };
            assert!(Instant::now() < deadline, "after {what}: the remaining members did not take over every partition within 30s: {sets:?}");
        }
    }
    received
}

/// The committed offsets of `group` for `partitions` of `topic`, as a
/// consumer outside the group sees them (None: nothing committed).
fn committed(addr: &str, group: &str, topic: &str, partitions: &[i32]) -> BTreeMap<i32, Option<i64>> {
    let (addr, group, topic, partitions) = (addr.to_string(), group.to_string(), topic.to_string(), partitions.to_vec());
    bounded("committed_offsets", Duration::from_secs(60), move || {
        let mut cfg = consumer_config(&addr);
        cfg.set("group.id", &group);
        let c: BaseConsumer = cfg.create().expect("create consumer");
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&topic, *p);
        }
        let res = c
            .committed_offsets(tpl, OP_TIMEOUT)
            .unwrap_or_else(|e| panic!("committed_offsets of group {group}: {e}"));
        let out = res
            .elements()
            .iter()
            .map(|e| {
                let o = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), o)
            })
            .collect();
        drop(c);
        out
    })
}

fn keyed_records(n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord::value(format!("value-{i}")).with_key(format!("key-{i}")))
        .collect()
}

// ---------------------------------------------------------------------------
// a. Three members share a topic: every record read exactly once
// ---------------------------------------------------------------------------

/// What a set of members read: (partition, offset) -> reader, duplicates
/// (partition, offset, first reader, second reader), records whose content
/// is not what was produced there, consumer errors.
#[derive(Default)]
struct Reads {
    seen: HashMap<(i32, i64), usize>,
    dups: Vec<(i32, i64, usize, usize)>,
    wrong: Vec<String>,
    errors: Vec<String>,
}

impl Reads {
    /// Polls each member once; `by_pos` maps a position to the index of the
    /// record produced there (its value is `value-{index}`).
    fn poll(&mut self, members: &[Member], by_pos: &HashMap<(i32, i64), usize>) {
        for (i, m) in members.iter().enumerate() {
            match m.poll(Duration::from_millis(10)) {
                None => {}
                Some(Ok(msg)) => {
                    let pos = (msg.partition(), msg.offset());
                    match by_pos.get(&pos) {
                        Some(&idx) if msg.payload() == Some(format!("value-{idx}").as_bytes()) => {}
                        _ => self.wrong.push(format!("{pos:?}: {:?}", msg.payload().map(String::from_utf8_lossy))),
                    }
                    if let Some(prev) = self.seen.insert(pos, i) {
                        self.dups.push((pos.0, pos.1, prev, i));
                    }
                }
                Some(Err(e)) => self.errors.push(format!("member-{i}: {e}")),
            }
        }
    }
}

fn three_members_read_everything_once(extra: &[(&str, &str)]) {
    const PARTITIONS: i32 = 6;
    const RECORDS: usize = 600;
    let broker = start_broker();
    let addr = broker.addr();
    let topic = unique("grp-share");
    create_topic(&addr, &topic, PARTITIONS, &[]);
    let records = keyed_records(RECORDS);
    let positions = produce_ok(&producer_config(&addr), &topic, &records);
    let by_pos: HashMap<(i32, i64), usize> = positions.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    assert_eq!(by_pos.len(), RECORDS, "acknowledged positions are not unique");
    let used: BTreeSet<i32> = positions.iter().map(|(p, _)| *p).collect();
    assert_eq!(used.len(), PARTITIONS as usize, "600 keys should reach every partition: {used:?}");

    let group = unique("grp-share");
    let members: Vec<Member> = (0..3)
        .map(|i| member(&addr, &group, &format!("member-{i}"), extra, true))
        .collect();
    // Members join one after another while records are being read, so
    // partitions change hands part-way: the previous owner commits what it
    // read when they are revoked, and the next owner starts right there.
    // Reading is paced (one record per member per round, a few ms per round)
    // so that the joins land mid-stream.
    const JOIN_AFTER: [usize; 3] = [0, 100, 200];
    let mut joined = 0;
    let mut reads = Reads::default();
    // Phase 1: everything is read and the group settles with all three
    // members owning partitions.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut settled_since: Option<Instant> = None;
    loop {
        while joined < members.len() && reads.seen.len() >= JOIN_AFTER[joined] {
            members[joined].subscribe(&[&topic]).expect("subscribe");
            joined += 1;
        }
        reads.poll(&members[..joined], &by_pos);
        std::thread::sleep(Duration::from_millis(5));
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| assigned(m, &topic)).collect();
        let good = reads.seen.len() >= RECORDS && is_partitioning(&sets.iter().collect::<Vec<_>>(), PARTITIONS);
        match (good, settled_since) {
            (true, None) => settled_since = Some(Instant::now()),
            (false, _) => settled_since = None,
            _ => {}
        }
        // Stay settled for a while: late duplicates would show up here.
        if settled_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "group did not settle within 90s: read {} of {RECORDS} records, assignments {sets:?}, \
                 {} duplicates (first {:?}), errors {:?} {:?}",
                reads.seen.len(),
                reads.dups.len(),
                reads.dups.first(),
                reads.errors,
                members.iter().flat_map(|m| m.context().errors()).collect::<Vec<_>>()
            );
        }
    }

    let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| assigned(m, &topic)).collect();
    let rebalances: Vec<usize> = members.iter().map(|m| m.context().rebalances()).collect();
    let callback_errors: Vec<String> = members.iter().flat_map(|m| m.context().errors()).collect();
    let Reads { seen, dups, wrong, errors: poll_errors } = reads;
    let per_member: Vec<usize> = (0..3).map(|i| seen.values().filter(|v| **v == i).count()).collect();
    // Each leaving member commits what it read when its partitions are revoked,
    // so the members that take them over find nothing left to read.
    let redelivered = close_in_turn(members, "member", Some((&topic, PARTITIONS)));

    assert!(callback_errors.is_empty(), "rebalance callback errors: {callback_errors:?}");
    assert!(poll_errors.is_empty(), "consumer errors: {poll_errors:?}");
    assert!(wrong.is_empty(), "records with unexpected content: {wrong:?}");
    assert!(
        dups.is_empty(),
        "{} records read more than once (partition, offset, first reader, second reader), e.g. {:?}; \
         rebalance callbacks per member {rebalances:?}",
        dups.len(),
        &dups[..dups.len().min(10)]
    );
    assert!(
        redelivered.is_empty(),
        "{} records were delivered again to the members taking over from those that left, e.g. {:?}",
        redelivered.len(),
        &redelivered[..redelivered.len().min(10)]
    );
    let want: BTreeSet<(i32, i64)> = positions.iter().copied().collect();
    let got: BTreeSet<(i32, i64)> = seen.keys().copied().collect();
    assert_eq!(got, want, "the group must read every record");
    assert!(is_partitioning(&sets.iter().collect::<Vec<_>>(), PARTITIONS), "final assignments {sets:?}");
    eprintln!("assignments {sets:?}; records per member {per_member:?}; rebalance callbacks {rebalances:?}");
}

#[test]
fn three_members_share_partitions_default_assignor() {
    three_members_read_everything_once(&[]);
}

#[test]
fn three_members_share_partitions_cooperative_sticky() {
    three_members_read_everything_once(&[("partition.assignment.strategy", "cooperative-sticky")]);
}

// ---------------------------------------------------------------------------
// b. A member that dies (SIGKILL) loses its partitions after its session timeout
// ---------------------------------------------------------------------------

const CHILD_ENV: &str = "CORESTREAM_GROUPS_TEST_CHILD";

/// Not a test by itself: the group member run in a child process by
/// `crashed_member_partitions_move_to_survivors`, which SIGKILLs it. It
/// prints `ASSIGNED p,p,...` whenever its assignment changes.
#[test]
#[ignore = "helper run as a child process by crashed_member_partitions_move_to_survivors"]
fn child_group_member() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut it = spec.split('|');
    let (addr, group, topic) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let m = member(addr, group, "doomed-member", &[], false);
    m.subscribe(&[topic]).expect("subscribe");
    let mut last = None;
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let _ = m.poll(Duration::from_millis(100));
        let a = assigned(&m, topic);
        if last.as_ref() != Some(&a) {
            let list: Vec<String> = a.iter().map(|p| p.to_string()).collect();
            println!("ASSIGNED {}", list.join(","));
            let _ = std::io::stdout().flush();
            last = Some(a);
        }
    }
}

#[test]
fn crashed_member_partitions_move_to_survivors() {
    const PARTITIONS: i32 = 6;
    let broker = start_broker();
    let addr = broker.addr();
    let topic = unique("grp-crash");
    create_topic(&addr, &topic, PARTITIONS, &[]);
    let group = unique("grp-crash");

    let survivors: Vec<Member> = (0..2).map(|i| member(&addr, &group, &format!("survivor-{i}"), &[], false)).collect();
    for m in &survivors {
        m.subscribe(&[&topic]).expect("subscribe");
    }

    // The doomed member: this test binary again, running child_group_member.
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["child_group_member", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{addr}|{group}|{topic}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn child member");
    let (tx, rx) = mpsc::channel::<BTreeSet<i32>>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // libtest prints "test child_group_member ... " without a newline before the
            // test's own output, so the first line the child prints follows it: search, not
            // prefix-match (a missed first line left the child's assignment unseen).
            if let Some(list) = line.find("ASSIGNED ").map(|i| &line[i + "ASSIGNED ".len()..]) {
                let set = list.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
                if tx.send(set).is_err() {
                    break;
                }
            }
        }
    });
    let child_err = Arc::new(Mutex::new(Vec::new()));
    {
        let mut err = child.stderr.take().unwrap();
        let child_err = Arc::clone(&child_err);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                child_err.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let child_log = |child_err: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&child_err.lock().unwrap()).into_owned();

    // All three own partitions.
    let mut doomed: BTreeSet<i32> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled_since: Option<Instant> = None;
    loop {
        for m in &survivors {
            let _ = m.poll(Duration::from_millis(50));
        }
        while let Ok(a) = rx.try_recv() {
            doomed = a;
        }
        let s: Vec<BTreeSet<i32>> = survivors.iter().map(|m| assigned(m, &topic)).collect();
        let good = is_partitioning(&[&s[0], &s[1], &doomed], PARTITIONS);
        match (good, settled_since) {
            (true, None) => settled_since = Some(Instant::now()),
            (false, _) => settled_since = None,
            _ => {}
        }
        if settled_since.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("child member exited early with {st}\n{}", child_log(&child_err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "three members did not share the partitions within 60s: survivors {s:?}, child {doomed:?}\nchild stderr:\n{}",
                child_log(&child_err)
            );
        }
    }
    let before: Vec<BTreeSet<i32>> = survivors.iter().map(|m| assigned(m, &topic)).collect();

    // Crash: no LeaveGroup, no more heartbeats.
    child.kill().expect("SIGKILL child member");
    let _ = child.wait();
    let killed = Instant::now();

    let deadline = killed + Duration::from_secs(30);
    let after = loop {
        for m in &survivors {
            let _ = m.poll(Duration::from_millis(50));
        }
        let s: Vec<BTreeSet<i32>> = survivors.iter().map(|m| assigned(m, &topic)).collect();
        if is_partitioning(&[&s[0], &s[1]], PARTITIONS) {
            break s;
        }
        if Instant::now() > deadline {
            panic!(
                "30s after the crash of the member holding {doomed:?}, the survivors hold {s:?} \
                 (before the crash: {before:?}); session.timeout.ms is 6000"
            );
        }
    };
    let took = killed.elapsed();
    let errors: Vec<String> = survivors.iter().flat_map(|m| m.context().errors()).collect();
    close_in_turn(survivors, "survivor", None);
    assert!(errors.is_empty(), "rebalance errors: {errors:?}");
    eprintln!("crashed member held {doomed:?}; survivors {before:?} -> {after:?} after {took:?}");
}

// ---------------------------------------------------------------------------
// c. Committed offsets survive a broker SIGKILL
// ---------------------------------------------------------------------------

#[test]
fn committed_offsets_survive_broker_sigkill() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: i64 = 30;
    let mut broker = start_broker();
    let addr = broker.addr();
    let topic = unique("grp-durable");
    create_topic(&addr, &topic, PARTITIONS, &[]);
    let recs: Vec<TestRecord> = (0..PARTITIONS)
        .flat_map(|p| (0..PER_PARTITION).map(move |i| TestRecord::value(format!("p{p}-{i}")).to_partition(p)))
        .collect();
    produce_ok(&producer_config(&addr), &topic, &recs);
    let group = unique("grp-durable");

    // A member reads everything, then commits twice; the second commit wins.
    let a = member(&addr, &group, "first-member", &[], false);
    a.subscribe(&[&topic]).expect("subscribe");
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < (PARTITIONS as i64 * PER_PARTITION) as usize {
        assert!(Instant::now() < deadline, "first member read only {read} records within 60s");
        match a.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    let want: BTreeMap<i32, i64> = [(0, 7), (1, PER_PARTITION), (2, 13), (3, 0)].into_iter().collect();
    for round in [1, 2] {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &want {
            // Round 1 commits other offsets, which round 2 must replace.
            let o = if round == 1 { (o + 3) % PER_PARTITION } else { *o };
            tpl.add_partition_offset(&topic, *p, Offset::Offset(o)).unwrap();
        }
        a.commit(&tpl, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("commit round {round} failed: {e}"));
    }
    let parts: Vec<i32> = (0..PARTITIONS).collect();
    let expect: BTreeMap<i32, Option<i64>> = want.iter().map(|(p, o)| (*p, Some(*o))).collect();
    assert_eq!(committed(&addr, &group, &topic, &parts), expect, "committed offsets before the crash");
    close(a, "close first member");

    broker.kill9();
    broker.restart();

    assert_eq!(committed(&addr, &group, &topic, &parts), expect, "committed offsets after SIGKILL + restart");

    // New records after the restart, so every partition has one past its commit.
    let more: Vec<TestRecord> = (0..PARTITIONS)
        .flat_map(|p| (PER_PARTITION..PER_PARTITION + 5).map(move |i| TestRecord::value(format!("p{p}-{i}")).to_partition(p)))
        .collect();
    let pos = produce_ok(&producer_config(&addr), &topic, &more);
    for (r, (p, o)) in more.iter().zip(&pos) {
        assert_eq!(Some(*p), r.partition);
        assert!(*o >= PER_PARTITION, "record produced after restart got offset {o} in partition {p}");
    }
    let end = PER_PARTITION + 5;

    // A new member of the group resumes at exactly the committed offsets.
    let b = member(&addr, &group, "second-member", &[], false);
    b.subscribe(&[&topic]).expect("subscribe");
    let total: i64 = want.values().map(|o| end - o).sum();
    let mut got: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < total {
        assert!(Instant::now() < deadline, "second member read only {n} of {total} records within 60s: {got:?}");
        match b.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got.entry(m.partition()).or_default().push(m.offset());
                n += 1;
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    // A little longer, to catch anything read twice.
    let extra_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < extra_until {
        if let Some(Ok(m)) = b.poll(Duration::from_millis(100)) {
            got.entry(m.partition()).or_default().push(m.offset());
        }
    }
    close(b, "close second member");
    for (p, o) in &want {
        let offs = got.get(p).cloned().unwrap_or_default();
        assert_eq!(offs.first(), Some(o), "partition {p}: first offset read after the restart (committed {o})");
        assert_eq!(offs, (*o..end).collect::<Vec<_>>(), "partition {p}: offsets read after the restart");
    }
}

// ---------------------------------------------------------------------------
// d. Static membership: a restarted static member causes no rebalance
// ---------------------------------------------------------------------------

#[test]
fn static_member_restart_does_not_rebalance() {
    const PARTITIONS: i32 = 4;
    let broker = start_broker();
    let addr = broker.addr();
    let topic = unique("grp-static");
    create_topic(&addr, &topic, PARTITIONS, &[]);
    let group = unique("grp-static");
    let statik = |name: &str, instance: &str| {
        member(
            &addr,
            &group,
            name,
            &[("group.instance.id", instance), ("session.timeout.ms", "30000")],
            false,
        )
    };

    // b joins first (it becomes the leader and stays so), then a.
    let b = statik("static-b", "instance-b");
    b.subscribe(&[&topic]).expect("subscribe b");
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(&b, &topic).len() != PARTITIONS as usize {
        assert!(Instant::now() < deadline, "b alone did not get all partitions within 30s");
        let _ = b.poll(Duration::from_millis(50));
    }
    let a = statik("static-a", "instance-a");
    a.subscribe(&[&topic]).expect("subscribe a");

    // Both own partitions, and nothing changed for 3s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled: Option<(Instant, usize)> = None;
    loop {
        let _ = a.poll(Duration::from_millis(50));
        let _ = b.poll(Duration::from_millis(50));
        let (sa, sb) = (assigned(&a, &topic), assigned(&b, &topic));
        let events = a.context().rebalances() + b.context().rebalances();
        let good = is_partitioning(&[&sa, &sb], PARTITIONS);
        settled = match (good, settled) {
            (true, Some((t, e))) if e == events => Some((t, e)),
            (true, _) => Some((Instant::now(), events)),
            (false, _) => None,
        };
        if settled.is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        assert!(Instant::now() < deadline, "a and b did not settle within 60s: a {sa:?}, b {sb:?}");
    }
    let a_before = assigned(&a, &topic);
    let b_before = assigned(&b, &topic);
    let b_events = b.context().rebalances();

    // Close a: a static member sends no LeaveGroup. Restart it at once with
    // the same group.instance.id, well within its session timeout.
    close(a, "close static member a");
    let a2 = statik("static-a-restarted", "instance-a");
    a2.subscribe(&[&topic]).expect("subscribe a again");
    let deadline = Instant::now() + Duration::from_secs(25);
    while assigned(&a2, &topic).is_empty() {
        let _ = a2.poll(Duration::from_millis(50));
        let _ = b.poll(Duration::from_millis(50));
        assert!(
            Instant::now() < deadline,
            "restarted static member got no assignment within 25s (b holds {:?})",
            assigned(&b, &topic)
        );
    }
    // Several heartbeats later nothing has moved.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let _ = a2.poll(Duration::from_millis(50));
        let _ = b.poll(Duration::from_millis(50));
    }
    let a_after = assigned(&a2, &topic);
    let b_after = assigned(&b, &topic);
    let b_events_after = b.context().rebalances();
    let errors: Vec<String> = a2.context().errors().into_iter().chain(b.context().errors()).collect();
    close_in_turn(vec![a2, b], "static member (a2, b)", None);
    assert!(errors.is_empty(), "rebalance errors: {errors:?}");
    assert_eq!(
        b_events_after, b_events,
        "the other member saw rebalance callbacks when the static member came back (b: {b_before:?} -> {b_after:?})"
    );
    assert_eq!(b_after, b_before, "the other member's assignment changed");
    assert_eq!(a_after, a_before, "the restarted static member must get its old assignment back");
}

// ---------------------------------------------------------------------------
// e. The `corestream group` CLI
// ---------------------------------------------------------------------------

struct Out {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` with `stdin`, killing it after `timeout`.
fn run(mut cmd: Command, stdin: &[u8], timeout: Duration) -> Out {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let mut sin = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let ro = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&ro.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&re.join().unwrap()).into_owned();
            panic!("{desc} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Out {
        status,
        stdout: String::from_utf8_lossy(&ro.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&re.join().unwrap()).into_owned(),
    }
}

/// `corestream group ARGS... -b ADDR`.
fn cli(addr: &str, args: &[&str]) -> Out {
    let mut c = Command::new(BIN);
    c.arg("group").args(args).args(["-b", addr]);
    c.env("RUST_LOG", "warn");
    run(c, b"", Duration::from_secs(90))
}

fn cli_ok(addr: &str, args: &[&str]) -> Out {
    let out = cli(addr, args);
    assert!(out.status.success(), "corestream group {args:?} failed: {out}");
    out
}

fn lines(s: &str) -> Vec<Vec<&str>> {
    s.lines().map(|l| l.split('\t').collect()).collect()
}

/// The offset table rows of `group describe` for `topic`:
/// partition -> (current, log end, lag, member).
fn describe_offsets(out: &str, topic: &str) -> BTreeMap<i32, (String, String, String, String)> {
    lines(out)
        .into_iter()
        .filter(|f| f.len() == 6 && f[0] == topic)
        .map(|f| (f[1].parse().unwrap(), (f[2].to_string(), f[3].to_string(), f[4].to_string(), f[5].to_string())))
        .collect()
}

#[test]
fn cli_group_list_describe_reset_delete() {
    const PARTITIONS: i32 = 3;
    let broker = start_broker();
    let addr = broker.addr();
    let topic = unique("grp-cli");
    create_topic(&addr, &topic, PARTITIONS, &[]);
    let recs: Vec<TestRecord> = (0..PARTITIONS)
        .flat_map(|p| (0..10).map(move |i| TestRecord::value(format!("v{i}")).to_partition(p)))
        .collect();
    produce_ok(&producer_config(&addr), &topic, &recs);
    let group = unique("grp-cli");
    let parts: Vec<i32> = (0..PARTITIONS).collect();

    // An active member that read everything and committed 4 / 10 / 0.
    let m = member(&addr, &group, "cli-test-member", &[], false);
    m.subscribe(&[&topic]).expect("subscribe");
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 30 {
        assert!(Instant::now() < deadline, "member read only {read} of 30 records within 60s");
        match m.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in [(0, 4), (1, 10), (2, 0)] {
        tpl.add_partition_offset(&topic, p, Offset::Offset(o)).unwrap();
    }
    m.commit(&tpl, CommitMode::Sync).expect("commit");

    // list: the group is there, stable.
    let out = cli_ok(&addr, &["list"]);
    let row = lines(&out.stdout).into_iter().find(|f| f[0] == group).unwrap_or_else(|| panic!("group list lacks {group}:\n{out}"));
    assert_eq!(row, vec![group.as_str(), "consumer", "Stable"], "group list row:\n{out}");

    // describe: state, member with its assignment, offsets and lag.
    let out = cli_ok(&addr, &["describe", &group]);
    let head = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        head,
        format!("Group: {group}\tState: Stable\tProtocolType: consumer\tProtocol: range\tMembers: 1"),
        "describe:\n{out}"
    );
    let member_row = lines(&out.stdout)
        .into_iter()
        .find(|f| f.len() == 4 && f[1] == "cli-test-member")
        .unwrap_or_else(|| panic!("describe shows no member with client id cli-test-member:\n{out}"));
    let member_id = member_row[0].to_string();
    assert!(!member_id.is_empty() && member_id != "-", "member id:\n{out}");
    assert!(!member_row[2].is_empty(), "member host:\n{out}");
    assert_eq!(member_row[3], format!("{topic}:0,1,2"), "member assignment:\n{out}");
    let offs = describe_offsets(&out.stdout, &topic);
    let row = |c: &str, e: &str, l: &str, m: &str| (c.to_string(), e.to_string(), l.to_string(), m.to_string());
    let want: BTreeMap<i32, _> = [
        (0, row("4", "10", "6", &member_id)),
        (1, row("10", "10", "0", &member_id)),
        (2, row("0", "10", "10", &member_id)),
    ]
    .into_iter()
    .collect();
    assert_eq!(offs, want, "describe offsets:\n{out}");

    // reset-offsets refuses while the group has a member.
    let out = cli(&addr, &["reset-offsets", &group, "--topic", &topic, "--to-earliest", "--execute"]);
    assert!(!out.status.success(), "reset-offsets --execute on an active group must fail:\n{out}");
    assert!(out.stderr.contains("active member"), "reset-offsets error must say the group is active:\n{out}");
    assert_eq!(
        committed(&addr, &group, &topic, &parts),
        [(0, Some(4)), (1, Some(10)), (2, Some(0))].into_iter().collect(),
        "a refused reset must not change the committed offsets"
    );

    // What the CLI's commit relies on: the broker refuses a commit from
    // outside a group that has members (Kafka: UNKNOWN_MEMBER_ID).
    let outside = {
        let (addr, group, topic) = (addr.clone(), group.clone(), topic.clone());
        bounded("commit from outside the group", Duration::from_secs(60), move || {
            let mut cfg = consumer_config(&addr);
            cfg.set("group.id", &group);
            let c: BaseConsumer = cfg.create().expect("create consumer");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(1)).unwrap();
            let r = c.commit(&tpl, CommitMode::Sync);
            drop(c);
            r
        })
    };
    match &outside {
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownMemberId) => {}
        other => panic!("a commit from outside an active group must fail with UNKNOWN_MEMBER_ID, got {other:?}"),
    }

    close(m, "close member");

    // Once the member has left, the group is Empty.
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli_ok(&addr, &["list"]);
        // Kafka keeps the protocol type of a group whose members all left;
        // corestream forgets it (shown as `-`). Clients accept both.
        if lines(&out.stdout)
            .into_iter()
            .any(|f| f.len() == 3 && f[0] == group && (f[1] == "consumer" || f[1] == "-") && f[2] == "Empty")
        {
            break;
        }
        last = out.to_string();
        assert!(Instant::now() < deadline, "group {group} not listed as Empty 30s after its member left; last `group list`: {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(last);
    let out = cli_ok(&addr, &["describe", &group]);
    assert!(out.stdout.contains("\tState: Empty\t"), "describe:\n{out}");
    assert!(out.stdout.contains(&format!("Group {group} has no active members.")), "describe:\n{out}");
    let offs = describe_offsets(&out.stdout, &topic);
    assert_eq!(offs.get(&0), Some(&row("4", "10", "6", "-")), "describe:\n{out}");

    // Dry run: prints the plan, commits nothing.
    let out = cli_ok(&addr, &["reset-offsets", &group, "--topic", &topic, "--to-earliest"]);
    let plan: Vec<Vec<&str>> = lines(&out.stdout).into_iter().filter(|f| f[0] == topic).collect();
    assert_eq!(
        plan,
        vec![vec![topic.as_str(), "0", "4", "0"], vec![topic.as_str(), "1", "10", "0"], vec![topic.as_str(), "2", "0", "0"]],
        "dry-run plan:\n{out}"
    );
    assert!(out.stderr.contains("dry run"), "dry run must say so:\n{out}");
    assert_eq!(
        committed(&addr, &group, &topic, &parts),
        [(0, Some(4)), (1, Some(10)), (2, Some(0))].into_iter().collect(),
        "a dry run must not commit"
    );

    // --execute variants.
    cli_ok(&addr, &["reset-offsets", &group, "--topic", &topic, "--to-earliest", "--execute"]);
    assert_eq!(committed(&addr, &group, &topic, &parts), [(0, Some(0)), (1, Some(0)), (2, Some(0))].into_iter().collect());
    cli_ok(&addr, &["reset-offsets", &group, "--topic", &topic, "--to-offset", "7", "--partition", "1", "--execute"]);
    assert_eq!(committed(&addr, &group, &topic, &parts), [(0, Some(0)), (1, Some(7)), (2, Some(0))].into_iter().collect());
    let out = cli_ok(&addr, &["reset-offsets", &group, "--topic", &topic, "--to-offset", "100", "-p", "2", "--execute"]);
    assert!(out.stderr.contains("warning"), "an offset past the end is clamped with a warning:\n{out}");
    assert_eq!(committed(&addr, &group, &topic, &parts), [(0, Some(0)), (1, Some(7)), (2, Some(10))].into_iter().collect());
    cli_ok(&addr, &["reset-offsets", &group, "--topic", &topic, "--to-latest", "--execute"]);
    assert_eq!(committed(&addr, &group, &topic, &parts), [(0, Some(10)), (1, Some(10)), (2, Some(10))].into_iter().collect());
    let out = cli_ok(&addr, &["describe", &group]);
    for p in 0..PARTITIONS {
        assert_eq!(describe_offsets(&out.stdout, &topic).get(&p), Some(&row("10", "10", "0", "-")), "describe:\n{out}");
    }

    // A reset of a missing topic or partition fails clearly.
    let out = cli(&addr, &["reset-offsets", &group, "--topic", "no-such-topic-here", "--to-earliest"]);
    assert!(!out.status.success() && out.stderr.contains("does not exist"), "{out}");
    let out = cli(&addr, &["reset-offsets", &group, "--topic", &topic, "-p", "9", "--to-earliest"]);
    assert!(!out.status.success() && out.stderr.contains("partition 9 does not exist"), "{out}");

    // delete: gone from the list, its offsets with it.
    let out = cli_ok(&addr, &["delete", &group]);
    assert!(out.stdout.contains(&format!("deleted group {group}")), "{out}");
    let out = cli_ok(&addr, &["list"]);
    assert!(!lines(&out.stdout).iter().any(|f| f[0] == group), "deleted group still listed:\n{out}");
    assert_eq!(committed(&addr, &group, &topic, &parts), [(0, None), (1, None), (2, None)].into_iter().collect());
    let out = cli(&addr, &["describe", &group]);
    assert!(!out.status.success() && out.stderr.contains("does not exist"), "describe of a deleted group:\n{out}");
    let out = cli(&addr, &["delete", &group]);
    assert!(!out.status.success() && out.stderr.contains("does not exist"), "deleting a deleted group:\n{out}");
}

// ---------------------------------------------------------------------------
// kafka-python: KafkaConsumer with a group_id resumes from a commit
// ---------------------------------------------------------------------------

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CORESTREAM_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

#[test]
fn kafka_python_group_commit_and_resume() {
    let py = python();
    let probe = Command::new(&py).args(["-c", "import kafka; print(kafka.__version__)"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "kafka-python is not importable by {}: {} (tests/run.sh installs it)",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run {}: {e} (tests/run.sh installs kafka-python)", py.display()),
    }
    let broker = start_broker();
    let addr = broker.addr();
    let topic = unique("grp-kpy");
    let group = unique("grp-kpy");
    create_topic(&addr, &topic, 3, &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/kafka_python_group_check.py");
    let mut c = Command::new(&py);
    c.arg(&script).arg(&addr).arg(&topic).arg(&group);
    let out = run(c, b"", Duration::from_secs(180));
    assert!(out.status.success(), "kafka_python_group_check.py failed: {out}");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}): {out}"));

    let pairs = |key: &str| -> Vec<(i64, i64)> {
        let mut p: Vec<(i64, i64)> = v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing: {v}"))
            .iter()
            .map(|r| (r["partition"].as_i64().unwrap(), r["offset"].as_i64().unwrap()))
            .collect();
        p.sort();
        p
    };
    let offsets = |key: &str| -> BTreeMap<String, i64> {
        v[key]
            .as_object()
            .unwrap_or_else(|| panic!("{key} missing: {v}"))
            .iter()
            .map(|(k, o)| (k.clone(), o.as_i64().unwrap_or(-1)))
            .collect()
    };
    let map = |items: &[(i32, i64)]| -> BTreeMap<String, i64> { items.iter().map(|(p, o)| (p.to_string(), *o)).collect() };

    // The first consumer read the first 10 records of each partition, once.
    let first: Vec<(i64, i64)> = (0..3).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    assert_eq!(pairs("first_consumed"), first, "first consumer");
    assert_eq!(offsets("first_committed"), map(&[(0, 4), (1, 10), (2, 7)]), "first consumer's committed()");
    // The second consumer of the group started exactly at the commits.
    assert_eq!(offsets("second_first_offsets"), map(&[(0, 4), (1, 10), (2, 7)]), "second consumer's first offsets");
    let second: Vec<(i64, i64)> = [(0, 4), (1, 10), (2, 7)]
        .into_iter()
        .flat_map(|(p, from)| (from..15).map(move |o| (p, o)))
        .collect();
    assert_eq!(pairs("second_consumed"), second, "second consumer");
    assert_eq!(offsets("second_committed"), map(&[(0, 15), (1, 15), (2, 15)]), "second consumer's committed()");
    // librdkafka sees the same commits.
    assert_eq!(
        committed(&addr, &group, &topic, &[0, 1, 2]),
        [(0, Some(15)), (1, Some(15)), (2, Some(15))].into_iter().collect(),
        "offsets committed by kafka-python, read by librdkafka"
    );
}
