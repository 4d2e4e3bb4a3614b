//! `corestream txn list|describe|producers` against a real broker, with
//! librdkafka's transactional producer making the transactions: an open
//! transaction is listed as Ongoing with its partitions and its producers'
//! open-transaction start offsets, and after the commit as CompleteCommit;
//! several ids on a two-core broker are listed and described in order;
//! errors (unknown id, topic, partition or state, no broker) are one line on
//! stderr and a non-zero exit.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const SETS: &[&str] = &["transaction.state.log.num.partitions=4"];
/// Bound for one CLI run (its own retries stop after 30 s).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `corestream txn ARGS... -b ADDR` (bounded in time).
fn txn_cli(addr: &str, args: &[&str]) -> Out {
    let mut c = Command::new(BIN);
    c.arg("txn").args(args).args(["-b", addr]);
    c.env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
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
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corestream txn {args:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        status,
        stdout: String::from_utf8_lossy(&ro.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&re.join().unwrap()).into_owned(),
    }
}

fn txn_ok(addr: &str, args: &[&str]) -> Out {
    let out = txn_cli(addr, args);
    assert!(out.status.success(), "corestream txn {args:?} failed: {out}");
    assert!(out.stderr.is_empty(), "corestream txn {args:?} wrote to stderr: {out}");
    out
}

/// A failing run: non-zero exit, exactly one line on stderr, no panic. Returns that line.
fn txn_err(addr: &str, args: &[&str]) -> (Out, String) {
    let out = txn_cli(addr, args);
    assert!(!out.status.success(), "corestream txn {args:?} should fail: {out}");
    assert_eq!(out.status.code(), Some(1), "exit code of a failure, not a crash: {out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {out}");
    assert!(lines[0].starts_with("error: "), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    let line = lines[0].to_string();
    (out, line)
}

/// `txn list` rows: transactional id -> (producer id, state).
fn listed(out: &str) -> BTreeMap<String, (i64, String)> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "txn list line {l:?}");
            (f[0].to_string(), (f[1].parse().unwrap_or_else(|_| panic!("producer id in {l:?}")), f[2].to_string()))
        })
        .collect()
}

/// The `Key: value` fields of one `txn describe` line.
fn described(line: &str) -> BTreeMap<String, String> {
    line.split('\t')
        .map(|f| {
            let (k, v) = f.split_once(": ").unwrap_or_else(|| panic!("field {f:?} of {line:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `txn producers` rows (after the header): (partition, producer id, epoch, last sequence, last timestamp, txn start offset).
fn producer_rows(out: &str) -> Vec<(i32, i64, i32, i32, String, String)> {
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("PARTITION\tPRODUCER-ID\tEPOCH\tLAST-SEQUENCE\tLAST-TIMESTAMP\tTXN-START-OFFSET"),
        "header of {out:?}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "txn producers line {l:?}");
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap(), f[4].to_string(), f[5].to_string())
        })
        .collect()
}

fn txn_producer(addr: &str, txn_id: &str) -> BaseProducer {
    let mut c = base_config(addr);
    c.set("transactional.id", txn_id)
        .set("transaction.timeout.ms", "60000")
        .set("message.timeout.ms", "15000")
        .set("linger.ms", "5");
    let p: BaseProducer = c.create().expect("create transactional producer");
    p.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    p
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match p.send(BaseRecord::<(), str>::to(topic).partition(partition).payload(value)) {
            Ok(()) => return,
            Err((e, _)) if format!("{e}").contains("QueueFull") && Instant::now() < deadline => {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Now in milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn txn_cli_shows_an_open_transaction_then_its_commit() {
    let b = Broker::start(1, SETS);
    let addr = b.addr();
    let topic = unique("txncli");
    create_topic(&addr, &topic, 2, &[]);
    let tid = unique("tid");

    // No transaction yet (not even the transaction state topic): an empty list.
    let out = txn_ok(&addr, &["list"]);
    assert_eq!(out.stdout, "", "no transactions yet");

    let p = txn_producer(&addr, &tid);
    // A committed transaction on partition 0: records at offsets 0 and 1, the marker at 2.
    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "c0");
    send(&p, &topic, 0, "c1");
    p.commit_transaction(Duration::from_secs(30)).expect("commit the first transaction");
    // An open one on both partitions: it starts at offset 3 of partition 0 and 0 of partition 1.
    let before_start = now_ms();
    p.begin_transaction().unwrap();
    for i in 0..3 {
        send(&p, &topic, 0, &format!("o0-{i}"));
    }
    for i in 0..2 {
        send(&p, &topic, 1, &format!("o1-{i}"));
    }
    p.flush(Duration::from_secs(15)).expect("flush the open transaction's records");

    // list: the id, its producer id, Ongoing.
    let all = listed(&txn_ok(&addr, &["list"]).stdout);
    let (pid, state) = all.get(&tid).unwrap_or_else(|| panic!("{tid} not listed: {all:?}"));
    let pid = *pid;
    assert_eq!(state, "Ongoing");
    assert!(pid >= 0, "producer id {pid}");
    assert_eq!(all.len(), 1, "only our transaction: {all:?}");
    // The state filter.
    assert!(listed(&txn_ok(&addr, &["list", "--state", "Ongoing"]).stdout).contains_key(&tid));
    assert!(listed(&txn_ok(&addr, &["list", "--state", "Ongoing", "--state", "Empty"]).stdout).contains_key(&tid));
    assert!(listed(&txn_ok(&addr, &["list", "--state", "CompleteCommit"]).stdout).is_empty());

    // describe: state, producer, timeout, start time, partitions.
    let out = txn_ok(&addr, &["describe", &tid]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line per id: {out}");
    let d = described(lines[0]);
    assert_eq!(d["TransactionalId"], tid);
    assert_eq!(d["Coordinator"], "1", "node id of the single broker");
    assert_eq!(d["State"], "Ongoing");
    assert_eq!(d["ProducerId"], pid.to_string());
    let epoch: i16 = d["ProducerEpoch"].parse().expect("epoch");
    assert!(epoch >= 0, "epoch {epoch}");
    assert_eq!(d["TimeoutMs"], "60000");
    assert!(d["StartTime"].ends_with('Z') && d["StartTime"].len() == "2024-01-01T00:00:00.000Z".len(), "{d:?}");
    let duration: i64 = d["DurationMs"].parse().expect("duration");
    assert!((0..=now_ms() - before_start + 5_000).contains(&duration), "duration {duration} ms: {d:?}");
    assert_eq!(d["Partitions"], format!("{topic}:0,1"));

    // producers: the producer on both partitions, with its open transaction's first offset.
    let out = txn_ok(&addr, &["producers", &topic]);
    let rows = producer_rows(&out.stdout);
    let ours: Vec<_> = rows.iter().filter(|r| r.1 == pid).collect();
    assert_eq!(ours.len(), 2, "one row per partition: {out}");
    assert_eq!((ours[0].0, ours[0].2, ours[0].3, ours[0].5.as_str()), (0, epoch as i32, 4, "3"), "partition 0: {out}");
    assert_eq!((ours[1].0, ours[1].2, ours[1].3, ours[1].5.as_str()), (1, epoch as i32, 1, "0"), "partition 1: {out}");
    assert!(ours.iter().all(|r| r.4.ends_with('Z')), "last timestamps: {out}");
    // -p: only that partition.
    let rows = producer_rows(&txn_ok(&addr, &["producers", &topic, "-p", "1"]).stdout);
    assert_eq!(rows.iter().map(|r| (r.0, r.1, r.5.as_str())).collect::<Vec<_>>(), [(1, pid, "0")]);

    // Commit: CompleteCommit (the coordinator completes after writing the markers).
    p.commit_transaction(Duration::from_secs(30)).expect("commit the open transaction");
    wait_for("CompleteCommit in txn list", Duration::from_secs(20), || {
        let all = listed(&txn_ok(&addr, &["list"]).stdout);
        (all.get(&tid) == Some(&(pid, "CompleteCommit".to_string()))).then_some(())
    });
    assert!(listed(&txn_ok(&addr, &["list", "--state", "Ongoing"]).stdout).is_empty());
    assert!(listed(&txn_ok(&addr, &["list", "--state", "CompleteCommit"]).stdout).contains_key(&tid));
    let d = described(txn_ok(&addr, &["describe", &tid]).stdout.trim_end());
    assert_eq!(d["State"], "CompleteCommit");
    assert_eq!(d["ProducerId"], pid.to_string());
    assert_eq!(d["Partitions"], "-", "a completed transaction has no partitions: {d:?}");
    assert_eq!(d["DurationMs"], "-", "a completed transaction is not open: {d:?}");
    // No open transaction left on either partition.
    let rows = producer_rows(&txn_ok(&addr, &["producers", &topic]).stdout);
    let ours: Vec<_> = rows.iter().filter(|r| r.1 == pid).map(|r| (r.0, r.5.as_str())).collect();
    assert_eq!(ours, [(0, "-"), (1, "-")]);
}

#[test]
fn txn_cli_errors_are_one_line_and_a_failure_exit() {
    let b = Broker::start(1, SETS);
    let addr = b.addr();
    let topic = unique("txncli-err");
    create_topic(&addr, &topic, 1, &[]);
    let tid = unique("tid-err");
    let p = txn_producer(&addr, &tid);
    p.begin_transaction().unwrap();
    send(&p, &topic, 0, "v");
    p.commit_transaction(Duration::from_secs(30)).expect("commit");

    // An unknown id alone; then next to a known one, which is still printed.
    let missing = unique("no-such-tid");
    let (_, e) = txn_err(&addr, &["describe", &missing]);
    assert!(e.contains(&missing) && e.contains("not found"), "{e}");
    let (out, e) = txn_err(&addr, &["describe", &tid, &missing]);
    assert!(e.contains(&missing) && !e.contains(&tid), "{e}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(described(lines[0])["TransactionalId"], tid);

    // An unknown state.
    let (_, e) = txn_err(&addr, &["list", "--state", "Bogus"]);
    assert!(e.contains("unknown transaction state Bogus"), "{e}");

    // An unknown topic (not auto-created by asking) and partition.
    let no_topic = unique("no-such-topic");
    let (_, e) = txn_err(&addr, &["producers", &no_topic]);
    assert!(e.contains(&no_topic) && e.contains("does not exist"), "{e}");
    assert_eq!(partition_count(&addr, &no_topic), None, "txn producers must not create the topic");
    let (_, e) = txn_err(&addr, &["producers", &topic, "-p", "7"]);
    assert!(e.contains("has no partition 7"), "{e}");

    // No broker at the address: a quick failure.
    let dead = format!("127.0.0.1:{}", free_port());
    for args in [&["list"][..], &["describe", &tid][..], &["producers", &topic][..]] {
        let started = Instant::now();
        let (_, e) = txn_err(&dead, args);
        assert!(e.contains("cannot connect") && e.contains(&dead), "{e}");
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    }
}

#[test]
fn txn_cli_lists_and_describes_several_ids_across_cores() {
    let b = Broker::start(2, SETS);
    let addr = b.addr();
    let topic = unique("txncli-multi");
    create_topic(&addr, &topic, 2, &[]);
    // Four ids over four `__transaction_state` partitions on two cores: most likely both
    // cores' coordinators answer (the broker gathers ListTransactions from all of them).
    let ids: Vec<String> = (0..4).map(|i| unique(&format!("tid-multi{i}"))).collect();
    let producers: Vec<BaseProducer> = ids.iter().map(|id| txn_producer(&addr, id)).collect();
    for (i, p) in producers.iter().enumerate() {
        p.begin_transaction().unwrap();
        send(p, &topic, i as i32 % 2, &format!("v{i}"));
        p.flush(Duration::from_secs(15)).expect("flush");
    }
    producers[0].commit_transaction(Duration::from_secs(30)).expect("commit");
    producers[1].abort_transaction(Duration::from_secs(30)).expect("abort");
    // 2 and 3 stay open.
    let want = |i: usize| match i {
        0 => "CompleteCommit",
        1 => "CompleteAbort",
        _ => "Ongoing",
    };
    wait_for("the four transactions in their states", Duration::from_secs(20), || {
        let all = listed(&txn_ok(&addr, &["list"]).stdout);
        ids.iter().enumerate().all(|(i, id)| all.get(id).is_some_and(|(_, s)| s == want(i))).then_some(())
    });
    let all = listed(&txn_ok(&addr, &["list"]).stdout);
    assert_eq!(all.len(), 4, "{all:?}");
    let ongoing = listed(&txn_ok(&addr, &["list", "--state", "Ongoing"]).stdout);
    assert_eq!(ongoing.keys().collect::<BTreeSet<_>>(), BTreeSet::from([&ids[2], &ids[3]]));
    let aborted = listed(&txn_ok(&addr, &["list", "--state", "CompleteAbort"]).stdout);
    assert_eq!(aborted.keys().collect::<Vec<_>>(), [&ids[1]]);
    // Rows are sorted by id.
    let out = txn_ok(&addr, &["list"]).stdout;
    let rows: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(rows, sorted);

    // describe: one line per id, in the order given (a repeated id once).
    let order = [&ids[3], &ids[0], &ids[2], &ids[1], &ids[3]];
    let mut args = vec!["describe"];
    args.extend(order.iter().map(|s| s.as_str()));
    let out = txn_ok(&addr, &args);
    let ds: Vec<BTreeMap<String, String>> = out.stdout.lines().map(described).collect();
    assert_eq!(ds.iter().map(|d| d["TransactionalId"].as_str()).collect::<Vec<_>>(), [&ids[3], &ids[0], &ids[2], &ids[1]], "{out}");
    for d in &ds {
        let i = ids.iter().position(|id| *id == d["TransactionalId"]).unwrap();
        assert_eq!(d["State"], want(i), "{d:?}");
        assert_eq!(d["ProducerId"], all[&ids[i]].0.to_string(), "{d:?}");
        let parts = if i >= 2 { format!("{topic}:{}", i % 2) } else { "-".to_string() };
        assert_eq!(d["Partitions"], parts, "{d:?}");
    }
    for p in &producers[2..] {
        p.abort_transaction(Duration::from_secs(30)).expect("abort");
    }
}
