//! Transaction commands: `corestream txn list|describe|producers`.
//!
//! librdkafka (and so the `rdkafka` crate) has no API for ListTransactions,
//! DescribeTransactions or DescribeProducers, so these commands speak the
//! Kafka protocol directly through the small blocking client in
//! [`super::raw`]. Like the other client commands they share no code with the
//! broker and work against any Kafka-compatible broker.
//!
//! Where the data comes from:
//! - `list`: ListTransactions sent to every broker of the cluster (each one
//!   answers for the transactional ids it coordinates), as Kafka's admin
//!   client does; `--state` becomes the request's state filter.
//! - `describe`: FindCoordinator (key type 1, transaction) for each id, then
//!   DescribeTransactions to each coordinator for its ids. Ids whose
//!   coordinator is loading, moving or not available yet are looked up again
//!   until [`super::raw::RETRY_TIMEOUT`].
//! - `producers`: Metadata for the topic's partition leaders, then
//!   DescribeProducers to each leader for its partitions.
//!
//! Output is tab-separated, one record per line:
//! - `txn list`: `TXN_ID<TAB>PRODUCER_ID<TAB>STATE`, sorted by transactional id.
//! - `txn describe`: one line per id, in the order given, of `Key: value`
//!   fields: `TransactionalId`, `Coordinator` (node id), `State`,
//!   `ProducerId`, `ProducerEpoch`, `TimeoutMs`, `StartTime` (of the current
//!   or last transaction, UTC, RFC 3339), `DurationMs` (how long the
//!   transaction has been open; `-` unless it is Ongoing or Prepare*) and
//!   `Partitions`, written as `topic:0,1 other:3`. `-` marks an absent value.
//! - `txn producers`: a header line, then `PARTITION PRODUCER-ID EPOCH
//!   LAST-SEQUENCE LAST-TIMESTAMP TXN-START-OFFSET` per active producer of
//!   each partition (`TXN-START-OFFSET` is the first offset of the producer's
//!   open transaction, `-` when it has none).
//!
//! Failures that concern only some ids or partitions are reported after the
//! others were printed, as one line on stderr with a non-zero exit.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::describe_producers_response::ProducerState;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::raw::{error_name, is_retriable, Cluster, Node, RawConnection, RETRY_TIMEOUT};

/// FindCoordinator key type of a transactional id.
const TXN_KEY_TYPE: i8 = 1;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's TRANSACTIONAL_ID_NOT_FOUND.
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// `corestream txn ...`
#[derive(clap::Subcommand, Debug)]
pub enum TxnCommand {
    /// List transactions: transactional id, producer id, state.
    List {
        /// Only transactions in this state (repeatable), e.g. `--state Ongoing`.
        /// Kafka's states: Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort, PrepareEpochFence, Dead.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        #[command(flatten)]
        conn: RawConnection,
    },
    /// Show transactions' state, producer id and epoch, timeout, start time and partitions.
    Describe {
        /// Transactional ids.
        #[arg(required = true, num_args = 1.., value_name = "TXN_ID")]
        ids: Vec<String>,
        #[command(flatten)]
        conn: RawConnection,
    },
    /// Show the active producers of a topic's partitions (DescribeProducers).
    Producers {
        /// Topic name.
        topic: String,
        /// Only this partition (repeatable); default: every partition.
        #[arg(long = "partition", short = 'p', value_name = "P", value_parser = clap::value_parser!(i32).range(0..))]
        partitions: Vec<i32>,
        #[command(flatten)]
        conn: RawConnection,
    },
}

/// Runs one `corestream txn ...` command.
pub fn run(cmd: TxnCommand) -> Result<()> {
    match cmd {
        TxnCommand::List { states, conn } => list(&conn, &states),
        TxnCommand::Describe { ids, conn } => describe(&conn, &ids),
        TxnCommand::Producers { topic, partitions, conn } => producers(&conn, &topic, &partitions),
    }
}

// ---------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------

/// One transaction as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: String,
    producer_id: i64,
    state: String,
}

fn list(conn: &RawConnection, states: &[String]) -> Result<()> {
    let mut cluster = Cluster::connect(conn)?;
    let brokers = cluster.brokers()?;
    let mut all: BTreeMap<String, Listed> = BTreeMap::new();
    for node in &brokers {
        for t in list_on(&mut cluster, node, states)? {
            all.insert(t.id.clone(), t);
        }
    }
    let lines: Vec<String> = all.values().map(format_listed).collect();
    write_lines(&lines)
}

fn format_listed(t: &Listed) -> String {
    format!("{}\t{}\t{}", t.id, t.producer_id, t.state)
}

/// ListTransactions on one broker, retrying retriable errors (a coordinator
/// still loading its transactions).
fn list_on(cluster: &mut Cluster, node: &Node, states: &[String]) -> Result<Vec<Listed>> {
    let req = ListTransactionsRequest::default().with_state_filters(states.iter().map(|s| StrBytes::from_string(s.clone())).collect());
    loop {
        let c = cluster.node(node)?;
        let resp = c.call_latest(&req, 0)?;
        if resp.error_code == 0 {
            if !resp.unknown_state_filters.is_empty() {
                let unknown: Vec<String> = resp.unknown_state_filters.iter().map(|s| s.to_string()).collect();
                bail!(
                    "unknown transaction state {} (Kafka's states: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, PrepareEpochFence, Dead)",
                    unknown.join(", ")
                );
            }
            return Ok(resp
                .transaction_states
                .iter()
                .map(|t| Listed {
                    id: t.transactional_id.0.to_string(),
                    producer_id: t.producer_id.0,
                    state: t.transaction_state.to_string(),
                })
                .collect());
        }
        if !(is_retriable(resp.error_code) && cluster.may_retry()) {
            bail!("broker {} (node {}): ListTransactions failed: {}", node.addr(), node.id, error_name(resp.error_code));
        }
    }
}

// ---------------------------------------------------------------------------
// describe
// ---------------------------------------------------------------------------

fn describe(conn: &RawConnection, ids: &[String]) -> Result<()> {
    // Each id once, in the order given.
    let mut seen = BTreeSet::new();
    let ids: Vec<String> = ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect();
    let mut cluster = Cluster::connect(conn)?;
    let mut results: BTreeMap<String, Result<(i32, TransactionState), String>> = BTreeMap::new();
    let mut pending = ids.clone();
    while !pending.is_empty() {
        let mut by_node: BTreeMap<Node, Vec<String>> = BTreeMap::new();
        for (id, r) in cluster.find_coordinators(TXN_KEY_TYPE, &pending)? {
            match r {
                Ok(node) => by_node.entry(node).or_default().push(id),
                Err(code) => {
                    results.insert(id, Err(format!("cannot find its coordinator: {}", error_name(code))));
                }
            }
        }
        let mut retry: Vec<(String, String)> = Vec::new();
        for (node, keys) in by_node {
            let req = DescribeTransactionsRequest::default()
                .with_transactional_ids(keys.iter().map(|k| TransactionalId(StrBytes::from_string(k.clone()))).collect());
            let resp = cluster.node(&node)?.call_latest(&req, 0)?;
            let mut answered = BTreeSet::new();
            for s in resp.transaction_states {
                let id = s.transactional_id.0.to_string();
                if !keys.contains(&id) || !answered.insert(id.clone()) {
                    continue;
                }
                match s.error_code {
                    0 => {
                        results.insert(id, Ok((node.id, s)));
                    }
                    TRANSACTIONAL_ID_NOT_FOUND => {
                        results.insert(id, Err("not found".to_string()));
                    }
                    code if is_retriable(code) => retry.push((id, error_name(code))),
                    code => {
                        results.insert(id, Err(error_name(code)));
                    }
                }
            }
            for k in keys.iter().filter(|k| !answered.contains(*k)) {
                retry.push((k.clone(), format!("no answer from its coordinator {} (node {})", node.addr(), node.id)));
            }
        }
        if retry.is_empty() || !cluster.may_retry() {
            for (id, why) in retry {
                results.insert(id, Err(format!("{why} (still after {RETRY_TIMEOUT:?})")));
            }
            break;
        }
        pending = retry.into_iter().map(|(id, _)| id).collect();
    }

    let now = now_ms();
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for id in &ids {
        match results.get(id) {
            Some(Ok((coordinator, s))) => lines.push(format_described(*coordinator, s, now)),
            Some(Err(e)) => errors.push(format!("transactional id {id}: {e}")),
            None => errors.push(format!("transactional id {id}: no answer")),
        }
    }
    write_lines(&lines)?;
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

fn format_described(coordinator: i32, s: &TransactionState, now_ms: i64) -> String {
    let start = s.transaction_start_time_ms;
    // How long the transaction has been open; a finished one (Empty, Complete*) has no duration.
    let open = matches!(s.transaction_state.as_str(), "Ongoing" | "PrepareCommit" | "PrepareAbort" | "PrepareEpochFence");
    let duration = if open && start >= 0 { (now_ms - start).max(0).to_string() } else { "-".to_string() };
    let parts: Vec<(String, Vec<i32>)> = s.topics.iter().map(|t| (t.topic.0.to_string(), t.partitions.clone())).collect();
    format!(
        "TransactionalId: {}\tCoordinator: {coordinator}\tState: {}\tProducerId: {}\tProducerEpoch: {}\tTimeoutMs: {}\tStartTime: {}\tDurationMs: {duration}\tPartitions: {}",
        s.transactional_id.0,
        s.transaction_state,
        s.producer_id.0,
        s.producer_epoch,
        s.transaction_timeout_ms,
        format_time_ms(start),
        format_partitions(&parts),
    )
}

/// `topic:0,1 other:3`, topics and partitions sorted; `-` when empty.
fn format_partitions(parts: &[(String, Vec<i32>)]) -> String {
    let mut by_topic: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for (t, ps) in parts {
        by_topic.entry(t.as_str()).or_default().extend(ps.iter().copied());
    }
    if by_topic.is_empty() {
        return "-".to_string();
    }
    by_topic
        .iter()
        .map(|(t, ps)| format!("{t}:{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// producers
// ---------------------------------------------------------------------------

fn producers(conn: &RawConnection, topic: &str, wanted: &[i32]) -> Result<()> {
    let mut cluster = Cluster::connect(conn)?;
    let mut rows: BTreeMap<i32, Vec<ProducerState>> = BTreeMap::new();
    let mut errors: BTreeMap<i32, String> = BTreeMap::new();
    let mut pending: Option<Vec<i32>> = None;
    loop {
        let md = cluster.metadata(&[topic])?;
        let Some(t) = md.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic)) else {
            bail!("broker {} did not return metadata for topic {topic}", cluster.bootstrap().name());
        };
        if t.error_code == UNKNOWN_TOPIC_OR_PARTITION {
            bail!("topic {topic} does not exist");
        }
        if t.error_code != 0 {
            if is_retriable(t.error_code) && cluster.may_retry() {
                continue;
            }
            bail!("topic {topic}: {}", error_name(t.error_code));
        }
        let all: BTreeSet<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        let todo = match &pending {
            Some(p) => p.clone(),
            None if wanted.is_empty() => all.iter().copied().collect(),
            None => {
                let want: BTreeSet<i32> = wanted.iter().copied().collect();
                if let Some(p) = want.iter().find(|p| !all.contains(p)) {
                    bail!("topic {topic} has no partition {p} (it has {})", all.len());
                }
                want.into_iter().collect()
            }
        };
        let brokers: BTreeMap<i32, Node> = md
            .brokers
            .iter()
            .map(|b| (b.node_id.0, Node { id: b.node_id.0, host: b.host.to_string(), port: b.port }))
            .collect();
        let mut by_leader: BTreeMap<Node, Vec<i32>> = BTreeMap::new();
        let mut retry: Vec<(i32, String)> = Vec::new();
        for p in &todo {
            let leader = t.partitions.iter().find(|x| x.partition_index == *p).map(|x| x.leader_id.0);
            match leader.and_then(|l| brokers.get(&l)) {
                Some(node) => by_leader.entry(node.clone()).or_default().push(*p),
                None => retry.push((*p, "no leader".to_string())),
            }
        }
        for (node, parts) in by_leader {
            let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(parts.clone())]);
            let resp = cluster.node(&node)?.call_latest(&req, 0)?;
            let mut answered = BTreeSet::new();
            for tr in resp.topics.iter().filter(|tr| tr.name.0.as_str() == topic) {
                for pr in &tr.partitions {
                    let p = pr.partition_index;
                    if !parts.contains(&p) || !answered.insert(p) {
                        continue;
                    }
                    let why = || {
                        let mut s = error_name(pr.error_code);
                        if let Some(m) = pr.error_message.as_ref().filter(|m| !m.is_empty()) {
                            s.push_str(&format!(": {m}"));
                        }
                        s
                    };
                    if pr.error_code == 0 {
                        rows.insert(p, pr.active_producers.clone());
                    } else if is_retriable(pr.error_code) {
                        retry.push((p, why()));
                    } else {
                        errors.insert(p, why());
                    }
                }
            }
            for p in parts.iter().filter(|p| !answered.contains(*p)) {
                retry.push((*p, format!("no answer from its leader {} (node {})", node.addr(), node.id)));
            }
        }
        if retry.is_empty() || !cluster.may_retry() {
            for (p, why) in retry {
                errors.insert(p, format!("{why} (still after {RETRY_TIMEOUT:?})"));
            }
            break;
        }
        pending = Some(retry.into_iter().map(|(p, _)| p).collect());
    }

    let mut lines = vec!["PARTITION\tPRODUCER-ID\tEPOCH\tLAST-SEQUENCE\tLAST-TIMESTAMP\tTXN-START-OFFSET".to_string()];
    for (p, list) in &rows {
        let mut list: Vec<&ProducerState> = list.iter().collect();
        list.sort_by_key(|s| s.producer_id.0);
        lines.extend(list.into_iter().map(|s| format_producer(*p, s)));
    }
    write_lines(&lines)?;
    if !errors.is_empty() {
        let e: Vec<String> = errors.iter().map(|(p, why)| format!("{topic}/{p}: {why}")).collect();
        bail!("{}", e.join("; "));
    }
    Ok(())
}

fn format_producer(partition: i32, s: &ProducerState) -> String {
    let txn_start = if s.current_txn_start_offset >= 0 { s.current_txn_start_offset.to_string() } else { "-".to_string() };
    format!(
        "{partition}\t{}\t{}\t{}\t{}\t{txn_start}",
        s.producer_id.0,
        s.producer_epoch,
        s.last_sequence,
        format_time_ms(s.last_timestamp)
    )
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Milliseconds since the epoch as `2024-03-01T12:00:00.123Z`; `-` for a
/// negative value (Kafka's "none").
fn format_time_ms(ms: i64) -> String {
    if ms < 0 {
        return "-".to_string();
    }
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", sod / 3600, sod % 3600 / 60, sod % 60, ms % 1000)
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn write_lines(lines: &[String]) -> Result<()> {
    let mut out = io::stdout().lock();
    for l in lines {
        if let Err(e) = writeln!(out, "{l}") {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The reader went away (e.g. `| head`): stop quietly.
                return Ok(());
            }
            bail!("cannot write to stdout: {e}");
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != io::ErrorKind::BrokenPipe {
            bail!("cannot write to stdout: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use kafka_protocol::messages::describe_transactions_response::TopicData;
    use kafka_protocol::messages::ProducerId;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        cmd: TxnCommand,
    }

    fn parse(args: &[&str]) -> Result<TxnCommand, clap::Error> {
        let mut v = vec!["corestream"];
        v.extend_from_slice(args);
        TestCli::try_parse_from(v).map(|c| c.cmd)
    }

    #[test]
    fn clap_definitions_are_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn cli_parsing() {
        match parse(&["list", "--state", "Ongoing", "--state", "PrepareCommit", "-b", "h:1"]).unwrap() {
            TxnCommand::List { states, conn } => {
                assert_eq!(states, ["Ongoing", "PrepareCommit"]);
                assert_eq!(conn.bootstrap, "h:1");
            }
            c => panic!("{c:?}"),
        }
        match parse(&["list"]).unwrap() {
            TxnCommand::List { states, conn } => {
                assert!(states.is_empty());
                assert_eq!(conn.bootstrap, "127.0.0.1:9092");
            }
            c => panic!("{c:?}"),
        }
        match parse(&["describe", "a", "b"]).unwrap() {
            TxnCommand::Describe { ids, .. } => assert_eq!(ids, ["a", "b"]),
            c => panic!("{c:?}"),
        }
        assert!(parse(&["describe"]).is_err(), "describe needs an id");
        match parse(&["producers", "t", "-p", "0", "--partition", "2"]).unwrap() {
            TxnCommand::Producers { topic, partitions, .. } => {
                assert_eq!(topic, "t");
                assert_eq!(partitions, [0, 2]);
            }
            c => panic!("{c:?}"),
        }
        assert!(parse(&["producers", "t", "-p", "-1"]).is_err());
        assert!(parse(&["producers"]).is_err());
    }

    #[test]
    fn time_formatting() {
        assert_eq!(format_time_ms(-1), "-");
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_time_ms(1_709_294_400_123), "2024-03-01T12:00:00.123Z");
        assert_eq!(format_time_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn partition_formatting() {
        assert_eq!(format_partitions(&[]), "-");
        let parts = vec![("b".to_string(), vec![3]), ("a".to_string(), vec![2, 0]), ("b".to_string(), vec![1])];
        assert_eq!(format_partitions(&parts), "a:0,2 b:1,3");
    }

    #[test]
    fn describe_line() {
        let s = TransactionState::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tid")))
            .with_transaction_state(StrBytes::from_static_str("Ongoing"))
            .with_transaction_timeout_ms(60_000)
            .with_transaction_start_time_ms(1_000)
            .with_producer_id(ProducerId(7))
            .with_producer_epoch(2)
            .with_topics(vec![TopicData::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![1, 0])]);
        assert_eq!(
            format_described(1, &s, 3_500),
            "TransactionalId: tid\tCoordinator: 1\tState: Ongoing\tProducerId: 7\tProducerEpoch: 2\tTimeoutMs: 60000\t\
             StartTime: 1970-01-01T00:00:01.000Z\tDurationMs: 2500\tPartitions: t:0,1"
        );
        let done = s.clone().with_transaction_state(StrBytes::from_static_str("CompleteCommit")).with_topics(vec![]);
        assert!(format_described(1, &done, 3_500).ends_with("StartTime: 1970-01-01T00:00:01.000Z\tDurationMs: -\tPartitions: -"));
        let idle = s.with_transaction_start_time_ms(-1).with_topics(vec![]);
        assert!(format_described(1, &idle, 3_500).ends_with("StartTime: -\tDurationMs: -\tPartitions: -"));
    }

    #[test]
    fn producer_line() {
        let s = ProducerState::default()
            .with_producer_id(ProducerId(1000))
            .with_producer_epoch(0)
            .with_last_sequence(4)
            .with_last_timestamp(0)
            .with_current_txn_start_offset(12);
        assert_eq!(format_producer(3, &s), "3\t1000\t0\t4\t1970-01-01T00:00:00.000Z\t12");
        assert_eq!(format_producer(3, &s.with_current_txn_start_offset(-1)), "3\t1000\t0\t4\t1970-01-01T00:00:00.000Z\t-");
    }
}
