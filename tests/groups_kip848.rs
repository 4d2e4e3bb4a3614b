//! The next-generation consumer group protocol (KIP-848) with librdkafka's
//! `group.protocol=consumer`: server-side assignment, members sharing a topic
//! without overlap, a member leaving and its partitions moving, and offsets
//! committed under member epochs surviving a broker SIGKILL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const SETS: &[&str] = &["group.initial.rebalance.delay.ms=0", "group.consumer.heartbeat.interval.ms=300"];

fn member(addr: &str, group: &str, auto_commit: bool) -> BaseConsumer {
    let mut c = base_config(addr);
    c.set("group.id", group)
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", if auto_commit { "true" } else { "false" })
        .set("auto.commit.interval.ms", "200")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false");
    c.create().expect("create consumer")
}

fn produce_values(addr: &str, topic: &str, partitions: i32, per_partition: usize, tag: &str) {
    let records: Vec<TestRecord> = (0..partitions)
        .flat_map(|p| (0..per_partition).map(move |i| TestRecord::value(format!("{tag}-{p}-{i}")).to_partition(p)))
        .collect();
    produce_ok(&producer_config(addr), topic, &records);
}

/// Runs `n` members of `group` in threads until together they saw `expected`
/// records or `timeout` passed; returns what each member saw as (partition, offset).
/// `before_produce` runs once every member holds at least `min_each` partitions
/// (or at once when `min_each` is 0), and is where the test produces.
#[allow(clippy::too_many_arguments)]
fn run_members(
    addr: &str,
    group: &str,
    topic: &str,
    n: usize,
    expected: usize,
    min_each: usize,
    timeout: Duration,
    before_produce: impl FnOnce(),
) -> Vec<Vec<(i32, i64)>> {
    type Seen = Arc<Mutex<Vec<Vec<(i32, i64)>>>>;
    let seen: Seen = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let holding: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; n]));
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..n {
        let (addr, group, topic, seen, done, holding) =
            (addr.to_string(), group.to_string(), topic.to_string(), seen.clone(), done.clone(), holding.clone());
        threads.push(std::thread::spawn(move || {
            let c = member(&addr, &group, true);
            c.subscribe(&[&topic]).expect("subscribe");
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) && start.elapsed() < timeout {
                let polled = c.poll(Duration::from_millis(100));
                holding.lock().unwrap()[i] = c.assignment().map(|a| a.count()).unwrap_or(0);
                if let Some(Ok(m)) = polled {
                    let mut s = seen.lock().unwrap();
                    s[i].push((m.partition(), m.offset()));
                    if s.iter().map(Vec::len).sum::<usize>() >= expected {
                        done.store(true, Ordering::SeqCst);
                    }
                }
            }
            // Keep polling briefly so the auto-commit of the last records goes out, then leave.
            let until = Instant::now() + Duration::from_millis(600);
            while Instant::now() < until {
                let _ = c.poll(Duration::from_millis(50));
            }
            let _ = c.commit_consumer_state(CommitMode::Sync);
            c.unsubscribe();
        }));
    }
    if min_each > 0 {
        wait_for("every member to hold partitions", timeout, || {
            let h = holding.lock().unwrap();
            h.iter().all(|&c| c >= min_each).then_some(())
        });
    }
    before_produce();
    for t in threads {
        t.join().expect("member thread");
    }
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// The group as ConsumerGroupDescribe reports it: (state, members, assignment size per member).
fn describe(addr: std::net::SocketAddr, group: &str) -> (String, Vec<usize>) {
    use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId};
    use kafka_protocol::protocol::StrBytes;
    let mut s = raw::connect(addr);
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let resp = raw::call(&mut s, &req, 0);
    let g = &resp.groups[0];
    assert_eq!(g.error_code, 0, "ConsumerGroupDescribe error");
    let sizes = g.members.iter().map(|m| m.assignment.topic_partitions.iter().map(|t| t.partitions.len()).sum()).collect();
    (g.group_state.to_string(), sizes)
}

#[test]
fn three_members_share_a_topic_exactly_once() {
    let b = Broker::start(2, SETS);
    let addr = b.addr();
    let topic = unique("kip848");
    create_topic(&addr, &topic, 6, &[]);
    let group = unique("g848");
    let sock = b.socket_addr();
    let seen = run_members(&addr, &group, &topic, 3, 300, 1, Duration::from_secs(60), || {
        // All three hold partitions: the coordinator split the topic (server-side assignment).
        let (state, sizes) = wait_for("a stable KIP-848 group", Duration::from_secs(30), || {
            let d = describe(sock, &group);
            (d.0 == "Stable").then_some(d)
        });
        assert_eq!(state, "Stable");
        assert_eq!(sizes, vec![2, 2, 2], "uniform assignment of 6 partitions to 3 members");
        produce_values(&addr, &topic, 6, 50, "a");
    });
    let all: Vec<(i32, i64)> = seen.iter().flatten().copied().collect();
    let distinct: BTreeSet<(i32, i64)> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 300, "every record read: {} distinct of {}\n{}", distinct.len(), all.len(), b.log_tail());
    assert_eq!(all.len(), 300, "no record read twice");
    assert!(seen.iter().all(|s| s.len() == 100), "each member read its two partitions: {:?}", seen.iter().map(Vec::len).collect::<Vec<_>>());
    // No partition was read by two members.
    let mut owner: BTreeMap<i32, usize> = BTreeMap::new();
    for (i, s) in seen.iter().enumerate() {
        for (p, _) in s {
            let o = *owner.entry(*p).or_insert(i);
            assert_eq!(o, i, "partition {p} read by members {o} and {i}");
        }
    }
}

#[test]
fn committed_offsets_survive_a_broker_kill_and_members_move_on() {
    let mut b = Broker::start(2, SETS);
    let addr = b.addr();
    let topic = unique("kip848c");
    let group = unique("g848c");
    create_topic(&addr, &topic, 4, &[]);
    produce_values(&addr, &topic, 4, 25, "first");
    let seen = run_members(&addr, &group, &topic, 2, 100, 0, Duration::from_secs(60), || ());
    assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), 100, "{}", b.log_tail());

    b.kill9();
    b.restart();
    let addr = b.addr();
    // The group's committed offsets are at the end of each partition.
    let c = member(&addr, &group, false);
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(&topic, p);
    }
    let committed = wait_for("committed offsets after restart", Duration::from_secs(30), || {
        c.committed_offsets(tpl.clone(), Duration::from_secs(5)).ok()
    });
    for e in committed.elements() {
        assert_eq!(e.offset(), Offset::Offset(25), "partition {} committed offset", e.partition());
    }
    drop(c);
    // New records only are read by a new member of the same group.
    produce_values(&addr, &topic, 4, 5, "second");
    let seen = run_members(&addr, &group, &topic, 1, 20, 0, Duration::from_secs(60), || ());
    let offsets: BTreeSet<i64> = seen[0].iter().map(|(_, o)| *o).collect();
    assert_eq!(seen[0].len(), 20, "{}", b.log_tail());
    assert!(offsets.iter().all(|o| (25..30).contains(o)), "only the new records: {offsets:?}");
}
