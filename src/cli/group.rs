//! Consumer-group commands: `corestream group list|describe|delete|reset-offsets`.
//!
//! Like the other client commands (see [`super::client`]) these talk to any
//! Kafka-compatible broker through librdkafka and share no code with the
//! broker. The `rdkafka` crate is built without tokio: admin futures are
//! driven with [`futures_lite::future::block_on`], everything else uses the
//! synchronous client calls, each with a bounded timeout.
//!
//! Where the data comes from:
//! - `list` and the group part of `describe`: librdkafka's group listing
//!   (ListGroups, then DescribeGroups for the groups found). A member's
//!   assignment is decoded as a consumer-protocol assignment when the group's
//!   protocol type is `consumer`.
//! - committed offsets (`describe`, `reset-offsets`): OffsetFetch through a
//!   consumer handle carrying the group's `group.id` that never subscribes,
//!   so it never joins the group.
//! - log end offsets: ListOffsets (librdkafka's watermarks query).
//! - `reset-offsets --execute`: OffsetCommit from that non-member handle
//!   (generation -1, empty member id), which a broker accepts only while the
//!   group has no active members.
//! - `delete`: the DeleteGroups admin API.
//!
//! Output is tab-separated, one record per line:
//! - `group list`: `GROUP<TAB>PROTOCOL-TYPE<TAB>STATE`, sorted by group id.
//! - `group describe`: a `Group: ...` summary line, then a member table
//!   (`MEMBER-ID CLIENT-ID HOST ASSIGNMENT`, the assignment written as
//!   `topic:0,1,2 other:3`) and an offset table (`TOPIC PARTITION
//!   CURRENT-OFFSET LOG-END-OFFSET LAG MEMBER-ID`), each after a blank line
//!   and a header line; `-` marks an unknown value.
//! - `group reset-offsets`: `TOPIC PARTITION CURRENT-OFFSET NEW-OFFSET`,
//!   then a line on stderr saying whether the offsets were committed (only
//!   with `--execute`) or not (a dry run).
//! - `group delete`: `deleted group G` per group.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::groups::GroupInfo;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{admin_options, client_err, fetch_metadata, topic_partitions, CliContext, Connection, MetaClient};

/// How long to wait for cluster metadata and watermarks.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a group listing, committed offsets or a commit
/// (these may first have to find the group coordinator).
const GROUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Request and broker-side operation timeout for admin API calls.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a consumer handle may take before the command gives up
/// waiting for it (the process exits right after anyway).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// `corestream group ...`
#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups: id, protocol type, state.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show a group's state, members, assignments, committed offsets and lag.
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete one or more groups (they must have no active members).
    Delete {
        /// Group ids.
        #[arg(required = true, num_args = 1..)]
        groups: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Set a group's committed offsets for a topic (a dry run unless --execute).
    #[command(name = "reset-offsets")]
    ResetOffsets(ResetOffsetsArgs),
}

/// Where `reset-offsets` moves the committed offsets (exactly one).
#[derive(clap::Args, Debug, Clone, Copy)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// To each partition's earliest available offset.
    #[arg(long = "to-earliest")]
    pub to_earliest: bool,
    /// To each partition's log end offset (skip everything there is now).
    #[arg(long = "to-latest")]
    pub to_latest: bool,
    /// To this offset (clamped into each partition's available range).
    #[arg(long = "to-offset", value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
}

/// `corestream group reset-offsets GROUP --topic T ...`
#[derive(clap::Args, Debug)]
pub struct ResetOffsetsArgs {
    /// Group id.
    pub group: String,
    /// Topic whose offsets are reset.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Only this partition (repeatable; default: every partition of the topic).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Vec<i32>,
    #[command(flatten)]
    pub to: ResetTo,
    /// Commit the new offsets (without it, only print them).
    #[arg(long)]
    pub execute: bool,
    #[command(flatten)]
    pub conn: Connection,
}

/// Runs `corestream group ...`.
pub fn run(cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List { conn } => group_list(&conn),
        GroupCommand::Describe { group, conn } => group_describe(&conn, &group),
        GroupCommand::Delete { groups, conn } => group_delete(&conn, &groups),
        GroupCommand::ResetOffsets(args) => reset_offsets(&args),
    }
}

// ---------------------------------------------------------------------------
// Pure helpers (unit tested)
// ---------------------------------------------------------------------------

/// The target of a reset, resolved from [`ResetTo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
}

impl ResetTo {
    fn target(self) -> Result<ResetTarget> {
        match (self.to_earliest, self.to_latest, self.to_offset) {
            (true, false, None) => Ok(ResetTarget::Earliest),
            (false, true, None) => Ok(ResetTarget::Latest),
            (false, false, Some(n)) => Ok(ResetTarget::Offset(n)),
            _ => bail!("give exactly one of --to-earliest, --to-latest, --to-offset N"),
        }
    }
}

/// The new offset of a partition whose available range is `[low, high]`;
/// the bool says whether a requested offset had to be clamped.
pub fn reset_offset(target: ResetTarget, low: i64, high: i64) -> (i64, bool) {
    match target {
        ResetTarget::Earliest => (low, false),
        ResetTarget::Latest => (high, false),
        ResetTarget::Offset(n) if high >= low => {
            let c = n.clamp(low, high);
            (c, c != n)
        }
        ResetTarget::Offset(n) => (n, false),
    }
}

/// Decodes a consumer-protocol assignment (`ConsumerProtocolAssignment`,
/// version in the first two bytes) into `(topic, partitions)` pairs,
/// merged per topic and sorted. Empty bytes mean no assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() < 2 {
        return Err(format!("{} byte(s), too short for a version", bytes.len()));
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version < 0 {
        return Err(format!("invalid version {version}"));
    }
    // Later versions only add fields at the end: read what version 3 knows.
    let mut buf = Bytes::copy_from_slice(&bytes[2..]);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version.min(3))
        .map_err(|e| format!("undecodable (version {version}): {e}"))?;
    let mut merged: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for tp in a.assigned_partitions {
        merged
            .entry(tp.topic.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Ok(merged
        .into_iter()
        .map(|(t, ps)| (t, ps.into_iter().collect()))
        .collect())
}

/// Writes an assignment as `topic:0,1,2 other:3`, or `-` when empty.
pub fn format_assignment(a: &[(String, Vec<i32>)]) -> String {
    if a.iter().all(|(_, ps)| ps.is_empty()) {
        return "-".to_string();
    }
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
            format!("{t}:{}", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

// ---------------------------------------------------------------------------
// librdkafka plumbing
// ---------------------------------------------------------------------------

/// A consumer handle carrying the group's id; it never subscribes.
type GroupConsumer = BaseConsumer<CliContext>;

fn meta_client(conn: &Connection) -> Result<MetaClient> {
    conn.meta_client()
}

fn group_consumer(conn: &Connection, group: &str) -> Result<GroupConsumer> {
    conn.client_config(&[
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("allow.auto.create.topics", "false"),
    ])?
    .create_with_context(conn.context())
    .map_err(|e| anyhow!("cannot create Kafka consumer for group {group}: {e}"))
}

/// Closes a consumer handle, waiting at most [`CLOSE_TIMEOUT`] (closing
/// talks to the coordinator; a vanished broker must not hang the command).
fn close_bounded(consumer: Arc<GroupConsumer>) {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("close-consumer".into())
        .spawn(move || {
            drop(consumer);
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.recv_timeout(CLOSE_TIMEOUT);
    }
}

fn consumer_err(c: &GroupConsumer, what: impl Display, e: impl Display) -> anyhow::Error {
    // Serve the consumer's queue so that pending error events reach the context.
    let _ = c.poll(Duration::ZERO);
    match c.context().last_error() {
        Some(reason) => anyhow!("{what}: {e} (last broker error: {reason})"),
        None => anyhow!("{what}: {e}"),
    }
}

fn is_timeout(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut)
}

/// Every partition of every non-internal topic, sorted.
fn all_partitions(meta: &MetaClient, conn: &Connection) -> Result<Vec<(String, i32)>> {
    let md = fetch_metadata(meta, conn, None)?;
    let mut out = Vec::new();
    for t in md.topics() {
        if t.name().starts_with("__") || (t.error().is_some() && t.partitions().is_empty()) {
            continue;
        }
        for p in t.partitions() {
            out.push((t.name().to_string(), p.id()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A group member as DescribeGroups reported it.
struct MemberView {
    id: String,
    client_id: String,
    host: String,
    /// Decoded assignment, or why it could not be decoded.
    assignment: Result<Vec<(String, Vec<i32>)>, String>,
}

/// A group as ListGroups + DescribeGroups reported it.
struct GroupView {
    id: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
}

impl GroupView {
    fn from_info(g: &GroupInfo) -> GroupView {
        let protocol_type = g.protocol_type().to_string();
        let mut members: Vec<MemberView> = g
            .members()
            .iter()
            .map(|m| {
                let bytes = m.assignment().unwrap_or(&[]);
                let assignment = if protocol_type == "consumer" || protocol_type.is_empty() {
                    decode_assignment(bytes)
                } else if bytes.is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(format!("{} bytes of protocol type {protocol_type}", bytes.len()))
                };
                MemberView {
                    id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    assignment,
                }
            })
            .collect();
        members.sort_by(|a, b| (&a.client_id, &a.id).cmp(&(&b.client_id, &b.id)));
        GroupView {
            id: g.name().to_string(),
            state: g.state().to_string(),
            protocol_type,
            protocol: g.protocol().to_string(),
            members,
        }
    }
}

fn group_list_err(meta: &MetaClient, what: impl Display, e: KafkaError) -> anyhow::Error {
    if is_timeout(&e) {
        let e = format!(
            "{e}: no answer within {}s (does the broker support the ListGroups and DescribeGroups APIs?)",
            GROUP_TIMEOUT.as_secs()
        );
        return client_err(meta, what, e);
    }
    client_err(meta, what, e)
}

/// Every group the cluster lists, sorted by id.
fn list_groups(meta: &MetaClient) -> Result<Vec<GroupView>> {
    let list = meta
        .client()
        .fetch_group_list(None, GROUP_TIMEOUT)
        .map_err(|e| group_list_err(meta, "cannot list groups", e))?;
    let mut groups: Vec<GroupView> = list.groups().iter().map(GroupView::from_info).collect();
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    groups.dedup_by(|a, b| a.id == b.id);
    Ok(groups)
}

/// One group, or None if the cluster does not list it (or lists it as `Dead`).
fn find_group(meta: &MetaClient, group: &str) -> Result<Option<GroupView>> {
    let list = meta
        .client()
        .fetch_group_list(Some(group), GROUP_TIMEOUT)
        .map_err(|e| group_list_err(meta, format_args!("cannot describe group {group}"), e))?;
    Ok(list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map(GroupView::from_info)
        .filter(|g| g.state != "Dead"))
}

/// The group's committed offsets among `partitions` (partitions without a
/// committed offset are left out).
fn committed_offsets(
    consumer: &GroupConsumer,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>> {
    let mut out = BTreeMap::new();
    if partitions.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let res = consumer.committed_offsets(tpl, GROUP_TIMEOUT).map_err(|e| {
        let what = format!("cannot fetch committed offsets of group {group}");
        if is_timeout(&e) {
            let e = format!(
                "{e}: no answer within {}s (does the broker support FindCoordinator and OffsetFetch?)",
                GROUP_TIMEOUT.as_secs()
            );
            consumer_err(consumer, what, e)
        } else {
            consumer_err(consumer, what, e)
        }
    })?;
    for el in res.elements() {
        if el.error().is_err() {
            continue;
        }
        if let Offset::Offset(o) = el.offset() {
            if o >= 0 {
                out.insert((el.topic().to_string(), el.partition()), o);
            }
        }
    }
    Ok(out)
}

fn write_lines(lines: &[String]) -> Result<()> {
    let mut out = io::stdout().lock();
    for l in lines {
        if let Err(e) = writeln!(out, "{l}") {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            bail!("cannot write to stdout: {e}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// list / describe / delete
// ---------------------------------------------------------------------------

fn group_list(conn: &Connection) -> Result<()> {
    let meta = meta_client(conn)?;
    // A quick, precise error for an unreachable cluster.
    fetch_metadata(&meta, conn, None)?;
    let groups = list_groups(&meta)?;
    let lines: Vec<String> = groups
        .iter()
        .map(|g| {
            let pt = if g.protocol_type.is_empty() { "-" } else { g.protocol_type.as_str() };
            format!("{}\t{pt}\t{}", g.id, g.state)
        })
        .collect();
    write_lines(&lines)
}

fn group_describe(conn: &Connection, group: &str) -> Result<()> {
    let meta = meta_client(conn)?;
    let partitions = all_partitions(&meta, conn)?;
    let view = find_group(&meta, group)?;

    let consumer = Arc::new(group_consumer(conn, group)?);
    let committed = committed_offsets(&consumer, group, &partitions);
    close_bounded(consumer);
    let committed = committed?;

    if view.is_none() && committed.is_empty() {
        bail!("group {group} does not exist");
    }

    // Which member holds each partition.
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    if let Some(v) = &view {
        for m in &v.members {
            if let Ok(a) = &m.assignment {
                for (t, ps) in a {
                    for p in ps {
                        owner.insert((t.clone(), *p), m.id.clone());
                    }
                }
            }
        }
    }

    let mut lines = Vec::new();
    match &view {
        Some(v) => {
            let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
            lines.push(format!(
                "Group: {}\tState: {}\tProtocolType: {}\tProtocol: {}\tMembers: {}",
                v.id,
                v.state,
                or_dash(&v.protocol_type),
                or_dash(&v.protocol),
                v.members.len()
            ));
        }
        None => lines.push(format!(
            "Group: {group}\tState: Unknown (not listed by the broker)\tProtocolType: -\tProtocol: -\tMembers: 0"
        )),
    }

    lines.push(String::new());
    match &view {
        Some(v) if !v.members.is_empty() => {
            lines.push("MEMBER-ID\tCLIENT-ID\tHOST\tASSIGNMENT".to_string());
            for m in &v.members {
                let a = match &m.assignment {
                    Ok(a) => format_assignment(a),
                    Err(e) => format!("<{e}>"),
                };
                lines.push(format!("{}\t{}\t{}\t{a}", m.id, m.client_id, m.host));
            }
        }
        _ => lines.push(format!("Group {group} has no active members.")),
    }

    // Partitions with a committed offset, and those assigned without one.
    let rows: BTreeSet<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
    lines.push(String::new());
    if rows.is_empty() {
        lines.push(format!("Group {group} has no committed offsets."));
    } else {
        lines.push("TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tMEMBER-ID".to_string());
        for (t, p) in &rows {
            let current = committed.get(&(t.clone(), *p)).copied();
            let end = meta.client().fetch_watermarks(t, *p, METADATA_TIMEOUT).ok().map(|(_, hi)| hi);
            let lag = match (current, end) {
                (Some(c), Some(e)) => Some(e - c),
                _ => None,
            };
            let member = owner.get(&(t.clone(), *p)).map_or("-", String::as_str);
            lines.push(format!("{t}\t{p}\t{}\t{}\t{}\t{member}", opt(current), opt(end), opt(lag)));
        }
    }
    write_lines(&lines)
}

fn group_delete(conn: &Connection, groups: &[String]) -> Result<()> {
    let meta = meta_client(conn)?;
    fetch_metadata(&meta, conn, None)?;
    let admin = conn.admin_client()?;
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let results = futures_lite::future::block_on(admin.delete_groups(&refs, &admin_options())).map_err(|e| match e {
        KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut) => anyhow!(
            "cannot delete groups: no answer within {}s (does the broker support the DeleteGroups API?)",
            ADMIN_TIMEOUT.as_secs()
        ),
        e => anyhow!("cannot delete groups: {e}"),
    })?;
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for r in results {
        match r {
            Ok(g) => lines.push(format!("deleted group {g}")),
            Err((g, RDKafkaErrorCode::GroupIdNotFound)) => failures.push(format!("{g}: group does not exist")),
            Err((g, RDKafkaErrorCode::NonEmptyGroup)) => {
                failures.push(format!("{g}: the group has active members (stop its consumers first)"))
            }
            Err((g, code)) => failures.push(format!("{g}: {code}")),
        }
    }
    write_lines(&lines)?;
    if !failures.is_empty() {
        bail!("cannot delete group {}", failures.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// reset-offsets
// ---------------------------------------------------------------------------

/// The broker's answer to a commit from outside the group while the group
/// has members.
fn is_active_group_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::StaleMemberEpoch
    )
}

fn reset_offsets(args: &ResetOffsetsArgs) -> Result<()> {
    let conn = &args.conn;
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    let target = args.to.target()?;

    let meta = meta_client(conn)?;
    let all = topic_partitions(&meta, conn, topic)?;
    let partitions: Vec<i32> = if args.partition.is_empty() {
        all
    } else {
        let wanted: BTreeSet<i32> = args.partition.iter().copied().collect();
        for p in &wanted {
            if !all.contains(p) {
                bail!("partition {p} does not exist (topic {topic} has {} partitions)", all.len());
            }
        }
        wanted.into_iter().collect()
    };

    // Kafka's tool refuses to reset the offsets of an active group, and the
    // broker would refuse the commit anyway; say so up front when we can.
    let active = match find_group(&meta, group) {
        Ok(Some(g)) if !g.members.is_empty() => Some(g),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("cannot check the state of group {group}: {e:#}");
            None
        }
    };
    if let Some(g) = &active {
        let msg = format!(
            "group {group} has {} active member(s) (state {}); offsets can only be reset while the group has no members: stop its consumers first",
            g.members.len(),
            g.state
        );
        if args.execute {
            bail!("cannot reset offsets: {msg}");
        }
        eprintln!("warning: {msg}");
    }

    let consumer = Arc::new(group_consumer(conn, group)?);
    let result = plan_and_commit(&meta, &consumer, args, target, &partitions);
    close_bounded(consumer);
    result
}

fn plan_and_commit(
    meta: &MetaClient,
    consumer: &Arc<GroupConsumer>,
    args: &ResetOffsetsArgs,
    target: ResetTarget,
    partitions: &[i32],
) -> Result<()> {
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    let tps: Vec<(String, i32)> = partitions.iter().map(|p| (topic.to_string(), *p)).collect();
    let current = committed_offsets(consumer, group, &tps)?;

    let mut plan: Vec<(i32, Option<i64>, i64)> = Vec::new();
    for &p in partitions {
        let (low, high) = meta
            .client()
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(|e| client_err(meta, format_args!("cannot get the offsets of {topic} [{p}]"), e))?;
        let (new, clamped) = reset_offset(target, low, high);
        if clamped {
            eprintln!(
                "warning: {topic} [{p}] has offsets {low} to {high}; using {new} instead of {}",
                args.to.to_offset.unwrap_or(new)
            );
        }
        plan.push((p, current.get(&(topic.to_string(), p)).copied(), new));
    }

    let mut lines = vec!["TOPIC\tPARTITION\tCURRENT-OFFSET\tNEW-OFFSET".to_string()];
    for (p, cur, new) in &plan {
        lines.push(format!("{topic}\t{p}\t{}\t{new}", opt(*cur)));
    }
    write_lines(&lines)?;

    if !args.execute {
        eprintln!("dry run: nothing committed (add --execute to commit these offsets for group {group})");
        return Ok(());
    }

    let mut tpl = TopicPartitionList::with_capacity(plan.len());
    for (p, _, new) in &plan {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*new))
            .map_err(|e| anyhow!("cannot set the offset of {topic} [{p}]: {e}"))?;
    }
    // A synchronous commit waits for the coordinator without a time limit of
    // its own: run it on a helper thread and stop waiting after GROUP_TIMEOUT.
    let (tx, rx) = mpsc::channel();
    let c = Arc::clone(consumer);
    std::thread::Builder::new()
        .name("commit".into())
        .spawn(move || {
            let _ = tx.send(c.commit(&tpl, CommitMode::Sync));
        })
        .map_err(|e| anyhow!("cannot start the commit thread: {e}"))?;
    let what = format!("cannot commit offsets for group {group}");
    match rx.recv_timeout(GROUP_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if let Some(code) = e.rdkafka_error_code().filter(|c| is_active_group_error(*c)) {
                bail!(
                    "{what}: the broker answered {code}: the group has active members; \
                     offsets can only be reset while the group has no members: stop its consumers \
                     (or wait for their session timeout) and try again"
                );
            }
            return Err(consumer_err(consumer, what, e));
        }
        Err(_) => bail!(
            "{what}: no answer within {}s (does the broker support OffsetCommit?)",
            GROUP_TIMEOUT.as_secs()
        ),
    }

    // Read the offsets back: a commit can fail per partition.
    let after = committed_offsets(consumer, group, &tps)?;
    let wrong: Vec<String> = plan
        .iter()
        .filter(|(p, _, new)| after.get(&(topic.to_string(), *p)) != Some(new))
        .map(|(p, _, new)| {
            format!("{topic} [{p}]: wanted {new}, committed offset is {}", opt(after.get(&(topic.to_string(), *p)).copied()))
        })
        .collect();
    if !wrong.is_empty() {
        bail!("{what}: {}", wrong.join("; "));
    }
    eprintln!(
        "committed new offsets for group {group}: {} partition(s) of {topic}",
        plan.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encode(version: i16, parts: &[(&str, &[i32])]) -> Vec<u8> {
        let a = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                parts
                    .iter()
                    .map(|(t, ps)| {
                        TopicPartition::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps.to_vec())
                    })
                    .collect(),
            )
            .with_user_data(Some(Bytes::from_static(b"ud")));
        let mut buf = BytesMut::new();
        a.encode(&mut buf, version.min(3)).unwrap();
        let mut out = version.to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out
    }

    #[test]
    fn decodes_assignments_of_every_version() {
        for v in 0..=4 {
            let b = encode(v, &[("b", &[3, 1]), ("a", &[0]), ("b", &[2])]);
            let a = decode_assignment(&b).unwrap();
            assert_eq!(a, vec![("a".to_string(), vec![0]), ("b".to_string(), vec![1, 2, 3])], "version {v}");
            assert_eq!(format_assignment(&a), "a:0 b:1,2,3");
        }
        assert_eq!(decode_assignment(&[]).unwrap(), vec![]);
        assert_eq!(format_assignment(&[]), "-");
        assert!(decode_assignment(&[0]).is_err());
        assert!(decode_assignment(&[0xff, 0xff, 0]).is_err());
        assert!(decode_assignment(&[0, 1, 0, 0, 0, 5]).is_err(), "truncated array");
    }

    #[test]
    fn reset_offsets_are_clamped() {
        assert_eq!(reset_offset(ResetTarget::Earliest, 3, 10), (3, false));
        assert_eq!(reset_offset(ResetTarget::Latest, 3, 10), (10, false));
        assert_eq!(reset_offset(ResetTarget::Offset(5), 3, 10), (5, false));
        assert_eq!(reset_offset(ResetTarget::Offset(1), 3, 10), (3, true));
        assert_eq!(reset_offset(ResetTarget::Offset(11), 3, 10), (10, true));
    }

    #[test]
    fn reset_target_is_exactly_one() {
        let t = |e, l, o| ResetTo { to_earliest: e, to_latest: l, to_offset: o }.target();
        assert_eq!(t(true, false, None).unwrap(), ResetTarget::Earliest);
        assert_eq!(t(false, true, None).unwrap(), ResetTarget::Latest);
        assert_eq!(t(false, false, Some(4)).unwrap(), ResetTarget::Offset(4));
        assert!(t(true, true, None).is_err());
        assert!(t(false, false, None).is_err());
    }
}
