//! Transactions with librdkafka's transactional producer: commit and abort
//! seen by read_committed and read_uncommitted consumers, a zombie fenced by a
//! second instance with the same transactional.id, the broker aborting a
//! transaction past its timeout, and a consume-transform-produce loop with
//! sendOffsetsToTransaction that stays exactly-once across a broker SIGKILL.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const SETS: &[&str] = &["group.initial.rebalance.delay.ms=0", "transaction.state.log.num.partitions=4", "offsets.topic.num.partitions=4"];

fn txn_producer(addr: &str, txn_id: &str, timeout_ms: u32) -> BaseProducer {
    let mut c = base_config(addr);
    c.set("transactional.id", txn_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("socket.timeout.ms", timeout_ms.min(60_000).to_string())
        .set("message.timeout.ms", timeout_ms.min(15_000).to_string())
        .set("linger.ms", "5");
    let p: BaseProducer = c.create().expect("create transactional producer");
    p.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    p
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &str) {
    loop {
        match p.send(BaseRecord::<(), str>::to(topic).partition(partition).payload(value)) {
            Ok(()) => return,
            Err((e, _)) if format!("{e}").contains("QueueFull") => {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Every value in `topic` (partitions `0..partitions`) as seen with this isolation level.
fn read_values(addr: &str, topic: &str, partitions: i32, committed: bool) -> Vec<String> {
    let mut c = consumer_config(addr);
    c.set("isolation.level", if committed { "read_committed" } else { "read_uncommitted" });
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
        ends.insert(p, high);
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Read until every partition's position passed its end (control batches included) or the deadline.
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            pos.insert(m.partition(), m.offset() + 1);
        }
        let positions = consumer.position().expect("position");
        let done = ends.iter().all(|(p, end)| {
            let at = positions.find_partition(topic, *p).and_then(|e| e.offset().to_raw()).unwrap_or(-1).max(*pos.get(p).unwrap_or(&0));
            at >= *end
        });
        if done {
            break;
        }
    }
    out.sort();
    out
}

#[test]
fn committed_and_aborted_transactions_as_each_isolation_level_sees_them() {
    let b = Broker::start(2, SETS);
    let addr = b.addr();
    let topic = unique("txn");
    create_topic(&addr, &topic, 2, &[]);
    let p = txn_producer(&addr, &unique("tid"), 60_000);
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(&p, &topic, i % 2, &format!("c1-{i:02}"));
    }
    p.commit_transaction(Duration::from_secs(30)).expect("commit");
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(&p, &topic, i % 2, &format!("ab-{i:02}"));
    }
    p.flush(Duration::from_secs(10)).unwrap();
    p.abort_transaction(Duration::from_secs(30)).expect("abort");
    p.begin_transaction().unwrap();
    for i in 0..5 {
        send(&p, &topic, i % 2, &format!("c2-{i:02}"));
    }
    p.commit_transaction(Duration::from_secs(30)).expect("commit 2");

    let committed = read_values(&addr, &topic, 2, true);
    assert_eq!(committed.len(), 15, "read_committed: {committed:?}\n{}", b.log_tail());
    assert!(committed.iter().all(|v| !v.starts_with("ab-")), "no aborted record: {committed:?}");
    let all = read_values(&addr, &topic, 2, false);
    assert_eq!(all.len(), 25, "read_uncommitted sees the aborted records too");
}

#[test]
fn a_second_instance_fences_the_first_and_aborts_its_transaction() {
    let b = Broker::start(2, SETS);
    let addr = b.addr();
    let topic = unique("txnf");
    create_topic(&addr, &topic, 1, &[]);
    let id = unique("tidf");
    let zombie = txn_producer(&addr, &id, 60_000);
    zombie.begin_transaction().unwrap();
    send(&zombie, &topic, 0, "zombie");
    zombie.flush(Duration::from_secs(10)).unwrap();
    let fresh = txn_producer(&addr, &id, 60_000);
    // The zombie can no longer commit.
    let r = zombie.commit_transaction(Duration::from_secs(15));
    assert!(r.is_err(), "the fenced producer's commit must fail");
    fresh.begin_transaction().unwrap();
    send(&fresh, &topic, 0, "fresh");
    fresh.commit_transaction(Duration::from_secs(30)).expect("commit by the new instance");
    assert_eq!(read_values(&addr, &topic, 1, true), vec!["fresh".to_string()]);
}

#[test]
fn the_broker_aborts_a_transaction_past_its_timeout() {
    let b = Broker::start(1, SETS);
    let addr = b.addr();
    let topic = unique("txnt");
    create_topic(&addr, &topic, 1, &[]);
    let p = txn_producer(&addr, &unique("tidt"), 2000);
    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "late");
    p.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(p.commit_transaction(Duration::from_secs(15)).is_err(), "a timed-out transaction cannot commit");
    // The abort marker is there: read_committed reads past it and sees nothing.
    let (_, high) = watermarks(&addr, &topic, 0);
    assert_eq!(high, 2, "one record and the abort marker");
    assert!(read_values(&addr, &topic, 1, true).is_empty());
}

/// Copies `input` to `output` in transactions of up to `batch` records, committing the
/// consumer's offsets in each transaction, until `stop_after` records were copied in this
/// run (then returns, leaving the last transaction open when `leave_open`) or the input is exhausted.
fn copy_loop(addr: &str, group: &str, txn_id: &str, input: &str, output: &str, stop_after: usize, leave_open: bool) -> usize {
    let mut cc = base_config(addr);
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = cc.create().expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let producer = txn_producer(addr, txn_id, 60_000);
    let mut copied = 0;
    let mut idle_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && copied < stop_after {
        let mut batch = Vec::new();
        while batch.len() < 20 {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => batch.push((m.partition(), m.offset(), String::from_utf8_lossy(m.payload().unwrap()).to_string())),
                Some(Err(e)) => panic!("consume: {e}"),
                None => break,
            }
        }
        if batch.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(5) {
                break;
            }
            continue;
        }
        idle_since = Instant::now();
        producer.begin_transaction().unwrap();
        for (p, o, v) in &batch {
            send(&producer, output, 0, &format!("{v}@{p}:{o}"));
        }
        copied += batch.len();
        if leave_open && copied >= stop_after {
            producer.flush(Duration::from_secs(10)).unwrap();
            // Crash here: the transaction's records are written, not committed. The consumer
            // leaves (its offsets were never committed); the producer is abandoned mid-transaction.
            drop(consumer);
            std::mem::forget(producer);
            return copied;
        }
        let positions = consumer.position().expect("position");
        producer
            .send_offsets_to_transaction(&positions, &consumer.group_metadata().expect("group metadata"), Duration::from_secs(30))
            .expect("send offsets");
        producer.commit_transaction(Duration::from_secs(30)).expect("commit");
    }
    copied
}

#[test]
fn consume_transform_produce_is_exactly_once_across_a_broker_kill() {
    let mut b = Broker::start(2, SETS);
    let addr = b.addr();
    let (input, output) = (unique("eos-in"), unique("eos-out"));
    create_topic(&addr, &input, 2, &[]);
    create_topic(&addr, &output, 1, &[]);
    let records: Vec<TestRecord> = (0..200).map(|i| TestRecord::value(format!("r{i:03}")).to_partition(i % 2)).collect();
    produce_ok(&producer_config(&addr), &input, &records);
    let (group, txn_id) = (unique("eos-g"), unique("eos-t"));

    // First run: commits some transactions, then dies with one open.
    copy_loop(&addr, &group, &txn_id, &input, &output, 80, true);
    b.kill9();
    b.restart();
    let addr = b.addr();
    // Second run: the same transactional id and group pick up where the committed state says.
    copy_loop(&addr, &group, &txn_id, &input, &output, usize::MAX, false);

    let out = read_values(&addr, &output, 1, true);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for v in &out {
        *seen.entry(v.split('@').next().unwrap().to_string()).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "records copied twice: {dups:?}");
    assert_eq!(seen.len(), 200, "every input record copied once; got {}\n{}", seen.len(), b.log_tail());
}

#[test]
fn raw_add_partitions_verify_and_describe() {
    use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let b = Broker::start(1, SETS);
    let addr = b.addr();
    let topic = unique("txnraw");
    create_topic(&addr, &topic, 2, &[]);
    let mut sock = raw::connect(b.socket_addr());
    let tid = unique("tid-raw");
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(&tid))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r = wait_for("the transaction coordinator", Duration::from_secs(20), || {
        let r = raw::call(&mut sock, &init, 4);
        (r.error_code == 0).then_some(r)
    });
    let (pid, epoch) = (r.producer_id, r.producer_epoch);
    let too_long = init.clone().with_transaction_timeout_ms(3_600_000);
    assert_eq!(raw::call(&mut sock, &too_long, 4).error_code, 50, "INVALID_TRANSACTION_TIMEOUT");
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(&tid)))
        .with_v3_and_below_producer_id(pid)
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(s(&topic))).with_partitions(vec![0])]);
    let r = raw::call(&mut sock, &add, 3);
    assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);
    // A stale epoch is fenced.
    let stale = add.clone().with_v3_and_below_producer_epoch(epoch - 1);
    assert_eq!(raw::call(&mut sock, &stale, 3).results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 90);
    // v4 verify_only: partition 0 is in the transaction, 1 is not.
    let verify = AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(s(&tid)))
        .with_producer_id(pid)
        .with_producer_epoch(epoch)
        .with_verify_only(true)
        .with_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(s(&topic))).with_partitions(vec![0, 1])])]);
    let r = raw::call(&mut sock, &verify, 4);
    let codes: Vec<i16> = r.results_by_transaction[0].topic_results[0].results_by_partition.iter().map(|p| p.partition_error_code).collect();
    assert_eq!(codes, vec![0, 48], "NONE for the added partition, INVALID_TXN_STATE for the other");
    let d = raw::call(&mut sock, &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(&tid))]), 0);
    let st = &d.transaction_states[0];
    assert_eq!((st.error_code, st.transaction_state.as_str(), st.producer_id), (0, "Ongoing", pid));
    assert_eq!(st.topics[0].partitions, vec![0]);
    let l = raw::call(&mut sock, &ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing")]), 0);
    assert!(l.transaction_states.iter().any(|t| t.transactional_id.as_str() == tid));
    // Ending with the wrong producer id, then committing for real.
    let end = EndTxnRequest::default().with_transactional_id(TransactionalId(s(&tid))).with_producer_id(pid).with_producer_epoch(epoch).with_committed(true);
    assert_eq!(raw::call(&mut sock, &end.clone().with_producer_id(ProducerId(pid.0 + 1000)), 3).error_code, 49, "INVALID_PRODUCER_ID_MAPPING");
    assert_eq!(raw::call(&mut sock, &end, 3).error_code, 0);
    assert_eq!(raw::call(&mut sock, &end, 3).error_code, 0, "a retried commit succeeds");
    assert_eq!(raw::call(&mut sock, &end.clone().with_committed(false), 3).error_code, 48, "aborting a committed transaction: INVALID_TXN_STATE");
    // The commit marker is on partition 0.
    assert_eq!(watermarks(&addr, &topic, 0).1, 1);
}
