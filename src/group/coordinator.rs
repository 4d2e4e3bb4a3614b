//! The per-core group coordinator: drives the [`super::state`] machines of the
//! groups whose `__consumer_offsets` partition this core owns.
//!
//! - Join and sync requests are parked on a one-slot channel under a request id
//!   until the state machine answers them (often when another member's request
//!   completes the rebalance, or when a timeout passes).
//! - A tick every [`TICK_MS`] runs the clock: session and rebalance timeouts,
//!   the initial rebalance delay, offset expiry and the size bound below.
//! - Commits are applied in log order at append time and answered once the
//!   records are durable (the core's group-commit sync round). Group metadata
//!   is written without waiting: members rejoin if it is lost.
//! - Loading: when this core gains a partition of the topic (at start), it
//!   reads it from the log start and rebuilds the groups; until that is done,
//!   requests for those groups get COORDINATOR_LOAD_IN_PROGRESS.
//! - Size bound: once a partition holds many more records than live keys, the
//!   live records are appended again as a snapshot and everything before the
//!   snapshot is deleted (DeleteRecords on our own log) once it is durable, so
//!   a restart reads at most a few times the live state.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};

use super::consumer::{self, ConsumerGroup, TopicsView};
use super::records::{self, GroupValue, Key, MemberValue, OffsetValue};
use super::state::{Action, Committed, Group, GroupState, IdSource, ReqId};
use super::{
    partition_for, ConsumerDescription, ConsumerMemberDescription, GroupDescription, GroupListing, GroupOp, GroupReply,
    MemberDescription, OFFSETS_TOPIC,
};
use crate::protocol::errors as ec;
use crate::shard::{internal, Shard};
use crate::util::now_ms;

/// How often the clock of every group on the core advances.
pub const TICK_MS: u64 = 100;
/// A partition is snapshotted when it holds more than this many records and...
const SNAPSHOT_MIN_RECORDS: u64 = 10_000;
/// ...more than this many times its live keys.
const SNAPSHOT_RATIO: u64 = 4;
/// Records per batch when writing a snapshot.
const SNAPSHOT_BATCH_RECORDS: usize = 500;
/// How often expired offsets are looked for.
const EXPIRY_CHECK_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Load {
    Loading,
    Ready,
}

#[derive(Debug)]
struct Part {
    load: Load,
    /// Records appended (or loaded) since the last snapshot.
    records: u64,
    snapshotting: bool,
}

struct MemberIds(crate::util::SplitMix64);

impl IdSource for MemberIds {
    fn next_id(&mut self, prefix: &str) -> String {
        let a = self.0.next_u64();
        let b = self.0.next_u64();
        let u = uuid::Uuid::from_u64_pair(a, b);
        format!("{prefix}-{}", u.hyphenated())
    }
}

/// One core's groups.
pub struct Coordinator {
    /// Classic groups, and the committed offsets of every group.
    groups: RefCell<HashMap<String, Group>>,
    /// KIP-848 groups' membership (their offsets live in `groups`).
    consumers: RefCell<HashMap<String, ConsumerGroup>>,
    joins: RefCell<HashMap<ReqId, LocalSender<super::JoinResponse>>>,
    syncs: RefCell<HashMap<ReqId, LocalSender<super::SyncResponse>>>,
    next_req: Cell<ReqId>,
    ids: RefCell<MemberIds>,
    parts: RefCell<HashMap<i32, Part>>,
    ticking: Cell<bool>,
    last_expiry_check: Cell<i64>,
    /// Offsets committed inside open transactions, per producer id: (group, topic, partition, offset).
    txn_offsets: RefCell<HashMap<i64, Vec<TxnOffset>>>,
}

/// An offset committed inside a transaction: (group, topic, partition, offset).
type TxnOffset = (String, String, i32, Committed);

impl Default for Coordinator {
    fn default() -> Self {
        let seed = (now_ms() as u64) ^ (std::process::id() as u64).rotate_left(32) ^ (&0u8 as *const u8 as u64);
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            consumers: RefCell::new(HashMap::new()),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            next_req: Cell::new(1),
            ids: RefCell::new(MemberIds(crate::util::SplitMix64::new(seed))),
            parts: RefCell::new(HashMap::new()),
            ticking: Cell::new(false),
            last_expiry_check: Cell::new(0),
            txn_offsets: RefCell::new(HashMap::new()),
        }
    }
}

/// The topics a KIP-848 group can subscribe to.
fn topics_view(shard: &Shard) -> TopicsView {
    shard
        .image()
        .topics
        .values()
        .filter(|t| t.name != OFFSETS_TOPIC)
        .map(|t| (t.name.clone(), (t.id, t.partitions.len() as i32)))
        .collect()
}

fn offsets_partitions(shard: &Shard) -> i32 {
    shard.image().topics.get(OFFSETS_TOPIC).map(|t| t.partitions.len() as i32).unwrap_or(0)
}

impl Coordinator {
    fn next_req(&self) -> ReqId {
        let id = self.next_req.get();
        self.next_req.set(id + 1);
        id
    }

    /// Called after the shard applied a metadata image: starts loading the
    /// `__consumer_offsets` partitions this core now owns.
    pub fn on_image(shard: &Rc<Shard>) {
        let image = shard.image();
        let Some(t) = image.topics.get(OFFSETS_TOPIC) else {
            return;
        };
        let me = &shard.groups;
        let mut new = Vec::new();
        {
            let mut parts = me.parts.borrow_mut();
            for (i, p) in t.partitions.iter().enumerate() {
                if p.owner == shard.id && !parts.contains_key(&(i as i32)) {
                    parts.insert(i as i32, Part { load: Load::Loading, records: 0, snapshotting: false });
                    new.push(i as i32);
                }
            }
        }
        for p in new {
            let s = shard.clone();
            glommio::spawn_local(async move {
                let started = std::time::Instant::now();
                match load_partition(&s, p).await {
                    Ok((groups, records)) => {
                        tracing::debug!(partition = p, groups, records, ms = started.elapsed().as_millis() as u64, "loaded groups");
                        if let Some(part) = s.groups.parts.borrow_mut().get_mut(&p) {
                            part.load = Load::Ready;
                            part.records = records;
                        }
                    }
                    Err(e) => tracing::error!(partition = p, error = %e, "cannot load __consumer_offsets partition; its groups stay unavailable"),
                }
            })
            .detach();
        }
        if !me.ticking.get() && !me.parts.borrow().is_empty() {
            me.ticking.set(true);
            let s = shard.clone();
            glommio::spawn_local(async move { ticker(s).await }).detach();
        }
    }

    /// Checks that this core coordinates `group` and has loaded it.
    fn check_ready(shard: &Shard, group: &str) -> Result<i32, i16> {
        let n = offsets_partitions(shard);
        if n == 0 {
            return Err(ec::COORDINATOR_NOT_AVAILABLE);
        }
        let p = partition_for(group, n);
        match shard.groups.parts.borrow().get(&p) {
            None => Err(ec::NOT_COORDINATOR),
            Some(part) if part.load == Load::Loading => Err(ec::COORDINATOR_LOAD_IN_PROGRESS),
            Some(_) => Ok(p),
        }
    }

    /// Runs one group op on this core (the group's coordinator).
    pub async fn execute(shard: &Rc<Shard>, op: GroupOp) -> GroupReply {
        let me = &shard.groups;
        let cfg = shard.config.group.clone();
        let now = now_ms();
        match op {
            GroupOp::Join { group, req } => {
                let member_id = req.member_id.clone();
                let failed = |e| GroupReply::Join(super::JoinResponse { error: e, member_id: member_id.clone(), ..Default::default() });
                if let Err(e) = Self::check_ready(shard, &group) {
                    return failed(e);
                }
                if me.consumers.borrow().get(&group).is_some_and(|c| !c.members.is_empty()) {
                    return failed(ec::INCONSISTENT_GROUP_PROTOCOL);
                }
                let id = me.next_req();
                let (tx, rx) = local_channel::new_bounded(1);
                me.joins.borrow_mut().insert(id, tx);
                let mut out = Vec::new();
                {
                    let mut groups = me.groups.borrow_mut();
                    let g = groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now));
                    g.join(id, req, now, &cfg, &mut *me.ids.borrow_mut(), &mut out);
                }
                run_actions(shard, &group, out);
                let r = rx.recv().await;
                me.joins.borrow_mut().remove(&id);
                me.forget_if_unused(&group);
                GroupReply::Join(r.unwrap_or_else(|| super::JoinResponse {
                    error: ec::COORDINATOR_NOT_AVAILABLE,
                    member_id,
                    ..Default::default()
                }))
            }
            GroupOp::Sync { group, req } => {
                if let Err(e) = Self::check_ready(shard, &group) {
                    return GroupReply::Sync(super::SyncResponse { error: e, ..Default::default() });
                }
                let id = me.next_req();
                let (tx, rx) = local_channel::new_bounded(1);
                me.syncs.borrow_mut().insert(id, tx);
                let mut out = Vec::new();
                {
                    let mut groups = me.groups.borrow_mut();
                    match groups.get_mut(&group) {
                        Some(g) => g.sync(id, req, now, &mut out),
                        None => out.push(Action::Sync(id, super::SyncResponse { error: ec::UNKNOWN_MEMBER_ID, ..Default::default() })),
                    }
                }
                run_actions(shard, &group, out);
                let r = rx.recv().await;
                me.syncs.borrow_mut().remove(&id);
                GroupReply::Sync(r.unwrap_or(super::SyncResponse { error: ec::COORDINATOR_NOT_AVAILABLE, ..Default::default() }))
            }
            GroupOp::Heartbeat { group, member_id, instance_id, generation } => {
                if let Err(e) = Self::check_ready(shard, &group) {
                    return GroupReply::Code(e);
                }
                let mut groups = me.groups.borrow_mut();
                let code = match groups.get_mut(&group) {
                    Some(g) => g.heartbeat(&member_id, instance_id.as_deref(), generation, now),
                    None => ec::UNKNOWN_MEMBER_ID,
                };
                if code != ec::NONE {
                    tracing::debug!(group, member = %member_id, generation, error = code, "heartbeat answered");
                }
                GroupReply::Code(code)
            }
            GroupOp::Leave { group, members } => {
                if let Err(e) = Self::check_ready(shard, &group) {
                    return GroupReply::Leave(Err(e));
                }
                let mut out = Vec::new();
                let r = {
                    let mut groups = me.groups.borrow_mut();
                    match groups.get_mut(&group) {
                        Some(g) => g.leave(&members, now, &cfg, &mut out),
                        None => members.iter().map(|m| (m.member_id.clone(), m.instance_id.clone(), ec::UNKNOWN_MEMBER_ID)).collect(),
                    }
                };
                tracing::debug!(group, left = ?r, "leave answered");
                run_actions(shard, &group, out);
                GroupReply::Leave(Ok(r))
            }
            GroupOp::Commit { group, member_id, instance_id, generation, parts } => {
                let r = commit(shard, &group, &member_id, instance_id.as_deref(), generation, parts, now).await;
                tracing::debug!(group, member = %member_id, generation, result = ?r, "commit answered");
                GroupReply::Commit(r)
            }
            GroupOp::TxnCommit { group, producer_id, epoch, member_id, generation, parts } => {
                GroupReply::Commit(txn_commit(shard, &group, producer_id, epoch, &member_id, generation, parts, now).await)
            }
            GroupOp::FetchOffsets { group, parts } => {
                if let Err(e) = Self::check_ready(shard, &group) {
                    return GroupReply::Offsets(Err(e));
                }
                let groups = me.groups.borrow();
                let g = groups.get(&group);
                let out = match parts {
                    Some(parts) => parts
                        .into_iter()
                        .map(|(t, p)| {
                            let c = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                            (t, p, c)
                        })
                        .collect(),
                    None => g
                        .map(|g| g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, Some(c.clone()))).collect())
                        .unwrap_or_default(),
                };
                GroupReply::Offsets(Ok(out))
            }
            GroupOp::Describe { group } => {
                if let Err(e) = Self::check_ready(shard, &group) {
                    return GroupReply::Described(Err(e));
                }
                if let Some(c) = me.consumers.borrow().get(&group).filter(|c| !c.members.is_empty()) {
                    return GroupReply::Described(Ok(GroupDescription {
                        state: c.state_name().to_string(),
                        protocol_type: "consumer".into(),
                        protocol: c.assignor().to_string(),
                        members: c
                            .members
                            .values()
                            .map(|m| MemberDescription {
                                member_id: m.member_id.clone(),
                                instance_id: m.instance_id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                                ..Default::default()
                            })
                            .collect(),
                    }));
                }
                let groups = me.groups.borrow();
                GroupReply::Described(Ok(match groups.get(&group) {
                    None => GroupDescription { state: "Dead".into(), ..Default::default() },
                    Some(g) => describe(g),
                }))
            }
            GroupOp::List => {
                let groups = me.groups.borrow();
                let consumers = me.consumers.borrow();
                let mut out: Vec<GroupListing> = consumers
                    .values()
                    .filter(|c| !c.members.is_empty() || groups.contains_key(&c.id))
                    .map(|c| GroupListing {
                        group_id: c.id.clone(),
                        protocol_type: "consumer".into(),
                        state: c.state_name().to_string(),
                        group_type: "consumer".into(),
                    })
                    .collect();
                out.extend(
                    groups
                        .values()
                        .filter(|g| g.state != GroupState::Dead && !consumers.contains_key(&g.id))
                        .map(|g| GroupListing {
                            group_id: g.id.clone(),
                            protocol_type: g.protocol_type.clone().unwrap_or_default(),
                            state: g.state.name().to_string(),
                            group_type: "classic".into(),
                        }),
                );
                GroupReply::Listed(out)
            }
            GroupOp::ConsumerHeartbeat { group, req } => {
                let member_id = req.member_id.clone();
                let epoch = req.member_epoch;
                let failed = |e: i16, msg: &str| {
                    GroupReply::ConsumerHeartbeat(consumer::HeartbeatOut {
                        error: e,
                        message: Some(msg.to_string()),
                        member_id: member_id.clone(),
                        member_epoch: epoch,
                        ..Default::default()
                    })
                };
                if let Err(e) = Self::check_ready(shard, &group) {
                    return failed(e, "the coordinator is not ready");
                }
                if me.groups.borrow().get(&group).is_some_and(|g| !g.is_empty()) {
                    return failed(ec::GROUP_ID_NOT_FOUND, "the group uses the classic protocol");
                }
                let topics = topics_view(shard);
                let mut consumers = me.consumers.borrow_mut();
                let c = consumers.entry(group.clone()).or_insert_with(|| ConsumerGroup::new(&group));
                let mut ids = me.ids.borrow_mut();
                let mut new_id = || ids.next_id("").trim_start_matches('-').to_string();
                GroupReply::ConsumerHeartbeat(c.heartbeat(req, now, &cfg, &topics, &mut new_id))
            }
            GroupOp::ConsumerDescribe { group } => {
                if let Err(e) = Self::check_ready(shard, &group) {
                    return GroupReply::ConsumerDescribed(Err(e));
                }
                let consumers = me.consumers.borrow();
                let Some(c) = consumers.get(&group) else {
                    return GroupReply::ConsumerDescribed(Err(ec::GROUP_ID_NOT_FOUND));
                };
                let list = |s: &std::collections::BTreeSet<consumer::Tp>| consumer::group_by_topic(s).into_iter().collect::<Vec<_>>();
                GroupReply::ConsumerDescribed(Ok(ConsumerDescription {
                    state: c.state_name().to_string(),
                    group_epoch: c.group_epoch,
                    assignment_epoch: c.assignment_epoch,
                    assignor: c.assignor().to_string(),
                    members: c
                        .members
                        .values()
                        .map(|m| ConsumerMemberDescription {
                            member_id: m.member_id.clone(),
                            instance_id: m.instance_id.clone(),
                            rack_id: m.rack_id.clone(),
                            member_epoch: m.epoch,
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            subscribed_topic_names: m.subscribed_names.clone(),
                            subscribed_topic_regex: m.subscribed_regex.clone(),
                            assignment: list(&m.assigned),
                            target_assignment: c.target.get(&m.member_id).map(list).unwrap_or_default(),
                        })
                        .collect(),
                }))
            }
            GroupOp::Delete { group } => {
                let p = match Self::check_ready(shard, &group) {
                    Ok(p) => p,
                    Err(e) => return GroupReply::Code(e),
                };
                let had_consumer = {
                    let mut consumers = me.consumers.borrow_mut();
                    match consumers.get(&group) {
                        Some(c) if !c.members.is_empty() => return GroupReply::Code(ec::NON_EMPTY_GROUP),
                        Some(_) => {
                            consumers.remove(&group);
                            true
                        }
                        None => false,
                    }
                };
                let removed = {
                    let mut groups = me.groups.borrow_mut();
                    match groups.get_mut(&group) {
                        None if had_consumer => Ok(Group::new(&group, now)),
                        None => Err(ec::GROUP_ID_NOT_FOUND),
                        Some(g) => g.delete(now).map(|_| groups.remove(&group).expect("present")),
                    }
                };
                let g = match removed {
                    Ok(g) => g,
                    Err(e) => return GroupReply::Code(e),
                };
                let mut recs: Vec<(Bytes, Option<Bytes>)> = g
                    .offsets
                    .keys()
                    .map(|(t, p)| (records::encode_key(&Key::Offset { group: group.clone(), topic: t.clone(), partition: *p }), None))
                    .collect();
                recs.push((records::encode_key(&Key::Group { group: group.clone() }), None));
                GroupReply::Code(match append_and_wait(shard, p, recs).await {
                    Ok(()) => ec::NONE,
                    Err(e) => e,
                })
            }
            GroupOp::DeleteOffsets { group, parts } => {
                let p = match Self::check_ready(shard, &group) {
                    Ok(p) => p,
                    Err(e) => return GroupReply::OffsetsDeleted(Err(e)),
                };
                let (results, recs) = {
                    let mut groups = me.groups.borrow_mut();
                    let Some(g) = groups.get_mut(&group).filter(|g| g.state != GroupState::Dead) else {
                        return GroupReply::OffsetsDeleted(Err(ec::GROUP_ID_NOT_FOUND));
                    };
                    if g.state != GroupState::Empty && g.protocol_type.as_deref().is_some_and(|t| t != "consumer") {
                        return GroupReply::OffsetsDeleted(Err(ec::NON_EMPTY_GROUP));
                    }
                    let kip848 = me.consumers.borrow().get(&group).filter(|c| !c.members.is_empty()).map(|c| c.subscribed_topics());
                    let subscribed = match kip848 {
                        Some(topics) => Some(topics),
                        None if g.state == GroupState::Empty => Some(Vec::new()),
                        None => g.subscribed_topics(),
                    };
                    let mut results = Vec::new();
                    let mut recs = Vec::new();
                    for (t, part) in parts {
                        let busy = match &subscribed {
                            Some(s) => s.contains(&t),
                            None => true,
                        };
                        if busy {
                            results.push((t, part, ec::GROUP_SUBSCRIBED_TO_TOPIC));
                            continue;
                        }
                        if g.offsets.remove(&(t.clone(), part)).is_some() {
                            recs.push((
                                records::encode_key(&Key::Offset { group: group.clone(), topic: t.clone(), partition: part }),
                                None,
                            ));
                        }
                        results.push((t, part, ec::NONE));
                    }
                    (results, recs)
                };
                if !recs.is_empty() {
                    if let Err(e) = append_and_wait(shard, p, recs).await {
                        return GroupReply::OffsetsDeleted(Err(e));
                    }
                }
                GroupReply::OffsetsDeleted(Ok(results))
            }
        }
    }

    /// Drops a group left with nothing in it (a failed first join, say).
    fn forget_if_unused(&self, group: &str) {
        let mut groups = self.groups.borrow_mut();
        if let Some(g) = groups.get(group) {
            if g.state == GroupState::Empty && g.is_empty() && g.offsets.is_empty() && g.generation == 0 {
                groups.remove(group);
            }
        }
    }

    /// A transaction marker was written to partition `p` of `__consumer_offsets` (on this
    /// core): the offsets `producer_id` committed in that transaction take effect or vanish.
    pub fn complete_txn(&self, shard: &Shard, p: i32, producer_id: i64, commit: bool) {
        let n = offsets_partitions(shard);
        let mine: Vec<TxnOffset> = {
            let mut all = self.txn_offsets.borrow_mut();
            let Some(list) = all.get_mut(&producer_id) else { return };
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|(g, ..)| partition_for(g, n) == p);
            *list = rest;
            if list.is_empty() {
                all.remove(&producer_id);
            }
            mine
        };
        if !commit {
            return;
        }
        let now = now_ms();
        let mut groups = self.groups.borrow_mut();
        for (group, topic, partition, c) in mine {
            groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now)).commit(&topic, partition, c);
        }
    }

    /// Answers every parked request (the core is shutting down).
    pub fn shutdown(&self) {
        self.consumers.borrow_mut().clear();
        self.joins.borrow_mut().clear();
        self.syncs.borrow_mut().clear();
    }
}

fn describe(g: &Group) -> GroupDescription {
    let protocol = g.protocol.clone().unwrap_or_default();
    GroupDescription {
        state: g.state.name().to_string(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if g.state == GroupState::Stable || g.state == GroupState::CompletingRebalance { protocol.clone() } else { String::new() },
        members: g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata(&protocol),
                assignment: if g.state == GroupState::Stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect(),
    }
}

/// Does what the state machine asked: answers parked requests, persists metadata.
fn run_actions(shard: &Rc<Shard>, group: &str, actions: Vec<Action>) {
    let me = &shard.groups;
    for a in actions {
        match a {
            Action::Join(id, r) => {
                tracing::debug!(group, member = %r.member_id, error = r.error, generation = r.generation, leader = %r.leader, members = r.members.len(), "join answered");
                if let Some(tx) = me.joins.borrow_mut().remove(&id) {
                    let _ = tx.try_send(r);
                }
            }
            Action::Sync(id, r) => {
                tracing::debug!(group, error = r.error, assignment_bytes = r.assignment.len(), "sync answered");
                if let Some(tx) = me.syncs.borrow_mut().remove(&id) {
                    let _ = tx.try_send(r);
                }
            }
            Action::Persist => {
                let value = me.groups.borrow().get(group).map(group_value);
                let n = offsets_partitions(shard);
                if let Some(v) = value {
                    let key = records::encode_key(&Key::Group { group: group.to_string() });
                    if let Err(e) = append(shard, partition_for(group, n), vec![(key, Some(records::encode_group(&v)))]) {
                        tracing::warn!(group, error = e, "cannot persist group metadata");
                    }
                }
            }
        }
    }
}

fn group_value(g: &Group) -> GroupValue {
    let protocol = g.protocol.clone();
    GroupValue {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol: protocol.clone(),
        leader: g.leader.clone(),
        state_timestamp: g.state_timestamp,
        members: g
            .members
            .values()
            .map(|m| MemberValue {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms.clamp(0, i32::MAX as i64) as i32,
                session_timeout_ms: m.session_timeout_ms.clamp(0, i32::MAX as i64) as i32,
                subscription: m.metadata(protocol.as_deref().unwrap_or_default()),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// Appends records to partition `p` of `__consumer_offsets` (no wait); returns the end offset.
fn append(shard: &Rc<Shard>, p: i32, recs: Vec<(Bytes, Option<Bytes>)>) -> Result<i64, i16> {
    append_txn(shard, p, &recs, None)
}

fn append_txn(shard: &Rc<Shard>, p: i32, recs: &[(Bytes, Option<Bytes>)], txn: Option<(i64, i16)>) -> Result<i64, i16> {
    let end = internal::append(shard, OFFSETS_TOPIC, p, recs, txn)?;
    if let Some(part) = shard.groups.parts.borrow_mut().get_mut(&p) {
        part.records += recs.len() as u64;
    }
    Ok(end)
}

async fn append_and_wait(shard: &Rc<Shard>, p: i32, recs: Vec<(Bytes, Option<Bytes>)>) -> Result<(), i16> {
    let end = append(shard, p, recs)?;
    internal::wait_durable(shard, OFFSETS_TOPIC, p, end).await
}

/// Per partition of a commit: its error code (unknown partition, metadata too long), and
/// for the accepted ones the record to write and the value to apply.
struct PreparedCommit {
    results: Vec<(String, i32, i16)>,
    records: Vec<(Bytes, Option<Bytes>)>,
    accepted: Vec<(String, i32, Committed)>,
}

fn prepare_commit(shard: &Shard, group: &str, parts: Vec<super::CommitPart>, now: i64) -> PreparedCommit {
    let image = shard.image();
    let max_metadata = shard.config.group.offset_metadata_max_bytes;
    let mut out = PreparedCommit { results: Vec::with_capacity(parts.len()), records: Vec::new(), accepted: Vec::new() };
    for c in parts {
        let metadata = c.metadata.unwrap_or_default();
        let known = image.topics.get(&c.topic).is_some_and(|t| c.partition >= 0 && (c.partition as usize) < t.partitions.len());
        let error = if !known {
            ec::UNKNOWN_TOPIC_OR_PARTITION
        } else if metadata.len() > max_metadata {
            ec::OFFSET_METADATA_TOO_LARGE
        } else {
            ec::NONE
        };
        if error == ec::NONE {
            let v = OffsetValue { offset: c.offset, leader_epoch: c.leader_epoch, metadata, commit_timestamp: now };
            out.records.push((
                records::encode_key(&Key::Offset { group: group.to_string(), topic: c.topic.clone(), partition: c.partition }),
                Some(records::encode_offset(&v)),
            ));
            let value = Committed { offset: v.offset, leader_epoch: v.leader_epoch, metadata: v.metadata, commit_timestamp: now };
            out.accepted.push((c.topic.clone(), c.partition, value));
        }
        out.results.push((c.topic, c.partition, error));
    }
    out
}

/// The per-partition results with every accepted partition failed with `e` instead.
fn failed_with(results: Vec<(String, i32, i16)>, e: i16) -> Vec<(String, i32, i16)> {
    results.into_iter().map(|(t, p, err)| (t, p, if err == ec::NONE { e } else { err })).collect()
}

async fn commit(
    shard: &Rc<Shard>,
    group: &str,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
    parts: Vec<super::CommitPart>,
    now: i64,
) -> Vec<(String, i32, i16)> {
    let all = |parts: Vec<super::CommitPart>, e: i16| parts.into_iter().map(|c| (c.topic, c.partition, e)).collect();
    let p = match Coordinator::check_ready(shard, group) {
        Ok(p) => p,
        Err(e) => return all(parts, e),
    };
    let me = &shard.groups;
    {
        let mut groups = me.groups.borrow_mut();
        let g = groups.entry(group.to_string()).or_insert_with(|| Group::new(group, now));
        let checked = match me.consumers.borrow().get(group) {
            // A KIP-848 group: the member and its current epoch.
            Some(c) if !c.members.is_empty() || !member_id.is_empty() => c.check_member_epoch(member_id, generation),
            _ => g.check_commit(member_id, instance_id, generation, now),
        };
        if let Err(e) = checked {
            drop(groups);
            me.forget_if_unused(group);
            return all(parts, e);
        }
    }
    let PreparedCommit { results, records: recs, accepted } = prepare_commit(shard, group, parts, now);
    if recs.is_empty() {
        return results;
    }
    let end = match append(shard, p, recs) {
        Ok(end) => end,
        Err(e) => return failed_with(results, e),
    };
    // Applied now, in log order; answered once durable.
    if let Some(g) = me.groups.borrow_mut().get_mut(group) {
        for (t, part, v) in accepted {
            g.commit(&t, part, v);
        }
    }
    match internal::wait_durable(shard, OFFSETS_TOPIC, p, end).await {
        Ok(()) => results,
        Err(e) => failed_with(results, e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn txn_commit(
    shard: &Rc<Shard>,
    group: &str,
    producer_id: i64,
    epoch: i16,
    member_id: &str,
    generation: i32,
    parts: Vec<super::CommitPart>,
    now: i64,
) -> Vec<(String, i32, i16)> {
    let all = |parts: Vec<super::CommitPart>, e: i16| parts.into_iter().map(|c| (c.topic, c.partition, e)).collect();
    let p = match Coordinator::check_ready(shard, group) {
        Ok(p) => p,
        Err(e) => return all(parts, e),
    };
    let me = &shard.groups;
    if !member_id.is_empty() {
        // KIP-447: a member committing in a transaction must be current.
        let checked = {
            let consumers = me.consumers.borrow();
            match consumers.get(group) {
                Some(c) if !c.members.is_empty() => c.check_member_epoch(member_id, generation),
                _ => match me.groups.borrow_mut().get_mut(group) {
                    Some(g) => g.check_commit(member_id, None, generation, now),
                    None => Err(ec::UNKNOWN_MEMBER_ID),
                },
            }
        };
        if let Err(e) = checked {
            return all(parts, e);
        }
    }
    let PreparedCommit { results, records: recs, accepted } = prepare_commit(shard, group, parts, now);
    if recs.is_empty() {
        return results;
    }
    let end = match append_txn(shard, p, &recs, Some((producer_id, epoch))) {
        Ok(end) => end,
        Err(e) => return failed_with(results, e),
    };
    let pending = accepted.into_iter().map(|(t, part, v)| (group.to_string(), t, part, v));
    me.txn_offsets.borrow_mut().entry(producer_id).or_default().extend(pending);
    match internal::wait_durable(shard, OFFSETS_TOPIC, p, end).await {
        Ok(()) => results,
        Err(e) => failed_with(results, e),
    }
}

/// Advances every group's clock, expires offsets and bounds the topic's size, until shutdown.
async fn ticker(shard: Rc<Shard>) {
    loop {
        let stop = shard.shutdown.listen();
        if shard.shutting_down.get() {
            shard.groups.shutdown();
            return;
        }
        futures_lite::future::or(stop, glommio::timer::sleep(std::time::Duration::from_millis(TICK_MS))).await;
        if shard.shutting_down.get() {
            shard.groups.shutdown();
            return;
        }
        let now = now_ms();
        let cfg = shard.config.group.clone();
        let due: Vec<String> = shard
            .groups
            .groups
            .borrow()
            .values()
            .filter(|g| g.next_deadline().is_some_and(|d| d <= now))
            .map(|g| g.id.clone())
            .collect();
        for id in due {
            let mut out = Vec::new();
            if let Some(g) = shard.groups.groups.borrow_mut().get_mut(&id) {
                g.tick(now, &cfg, &mut out);
            }
            run_actions(&shard, &id, out);
        }
        for c in shard.groups.consumers.borrow_mut().values_mut() {
            let gone = c.tick(now, cfg.consumer_session_timeout_ms);
            if gone > 0 {
                tracing::info!(group = %c.id, gone, "consumer group members expired");
            }
        }
        shard.groups.consumers.borrow_mut().retain(|id, c| !c.members.is_empty() || shard.groups.groups.borrow().contains_key(id));
        if now - shard.groups.last_expiry_check.get() >= EXPIRY_CHECK_MS {
            shard.groups.last_expiry_check.set(now);
            expire_offsets(&shard, now);
        }
        maybe_snapshot(&shard).await;
    }
}

fn expire_offsets(shard: &Rc<Shard>, now: i64) {
    let retention = shard.config.group.offsets_retention_ms;
    let n = offsets_partitions(shard);
    let mut tombstones: BTreeMap<i32, Vec<(Bytes, Option<Bytes>)>> = BTreeMap::new();
    {
        let mut groups = shard.groups.groups.borrow_mut();
        for g in groups.values_mut() {
            for (t, p) in g.expire_offsets(now, retention) {
                tombstones
                    .entry(partition_for(&g.id, n))
                    .or_default()
                    .push((records::encode_key(&Key::Offset { group: g.id.clone(), topic: t, partition: p }), None));
            }
        }
    }
    for (p, recs) in tombstones {
        for chunk in recs.chunks(SNAPSHOT_BATCH_RECORDS) {
            if let Err(e) = append(shard, p, chunk.to_vec()) {
                tracing::warn!(partition = p, error = e, "cannot write offset expiry tombstones");
            }
        }
    }
}

/// Live records of the groups in partition `p`.
fn live_records(shard: &Shard, p: i32) -> Vec<(Bytes, Option<Bytes>)> {
    let n = offsets_partitions(shard);
    let groups = shard.groups.groups.borrow();
    let mut out = Vec::new();
    for g in groups.values().filter(|g| partition_for(&g.id, n) == p && g.state != GroupState::Dead) {
        if g.generation > 0 || !g.members.is_empty() {
            out.push((records::encode_key(&Key::Group { group: g.id.clone() }), Some(records::encode_group(&group_value(g)))));
        }
        for ((t, part), c) in &g.offsets {
            out.push((
                records::encode_key(&Key::Offset { group: g.id.clone(), topic: t.clone(), partition: *part }),
                Some(records::encode_offset(&OffsetValue {
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                    commit_timestamp: c.commit_timestamp,
                })),
            ));
        }
    }
    out
}

/// Rewrites the live records of a partition that has grown well past them, then
/// deletes what came before (once the rewrite is durable).
async fn maybe_snapshot(shard: &Rc<Shard>) {
    let candidates: Vec<i32> = shard
        .groups
        .parts
        .borrow()
        .iter()
        .filter(|(_, part)| part.load == Load::Ready && !part.snapshotting && part.records > SNAPSHOT_MIN_RECORDS)
        .map(|(p, _)| *p)
        .collect();
    for p in candidates {
        let n = offsets_partitions(shard);
        let open_txn = shard.groups.txn_offsets.borrow().values().flatten().any(|(g, ..)| partition_for(g, n) == p);
        if open_txn {
            // Their records must stay before any trim point until their marker arrives.
            continue;
        }
        let live = live_records(shard, p);
        let records = shard.groups.parts.borrow().get(&p).map(|x| x.records).unwrap_or(0);
        if records <= SNAPSHOT_RATIO * live.len() as u64 {
            continue;
        }
        let Some(log) = shard.log(OFFSETS_TOPIC, p) else { continue };
        let start = log.log_end_offset();
        if let Some(part) = shard.groups.parts.borrow_mut().get_mut(&p) {
            part.snapshotting = true;
            part.records = 0;
        }
        // Appended synchronously, one batch after another: nothing interleaves, so the
        // snapshot equals the state at `start`, and later records come after it.
        let mut end = start;
        let mut failed = false;
        for chunk in live.chunks(SNAPSHOT_BATCH_RECORDS) {
            match append(shard, p, chunk.to_vec()) {
                Ok(e) => end = e,
                Err(e) => {
                    tracing::warn!(partition = p, error = e, "snapshot append failed");
                    failed = true;
                    break;
                }
            }
        }
        if !failed && log.wait_durable(end).await.is_ok() {
            match log.delete_records_before(start).await {
                Ok(_) => tracing::debug!(partition = p, start, live = live.len(), "snapshotted group state"),
                Err(e) => tracing::warn!(partition = p, error = %e, "cannot drop records before the snapshot"),
            }
        }
        if let Some(part) = shard.groups.parts.borrow_mut().get_mut(&p) {
            part.snapshotting = false;
        }
    }
}

/// Reads partition `p` from its log start and rebuilds its groups. Returns (groups, records read).
async fn load_partition(shard: &Rc<Shard>, p: i32) -> Result<(usize, u64), String> {
    let mut metas: HashMap<String, Option<GroupValue>> = HashMap::new();
    let mut offsets: HashMap<String, BTreeMap<(String, i32), Committed>> = HashMap::new();
    // Transactional offset commits wait for their transaction's marker.
    type Pending = (String, String, i32, Option<Committed>);
    let mut pending: HashMap<i64, Vec<Pending>> = HashMap::new();
    let mut bad = 0u64;
    let (count, mut skipped) = internal::replay(shard, OFFSETS_TOPIC, p, |r| match r {
        internal::Replayed::Marker { producer_id, commit } => {
            for (group, topic, partition, value) in pending.remove(&producer_id).unwrap_or_default() {
                if commit {
                    let entry = offsets.entry(group).or_default();
                    match value {
                        Some(v) => entry.insert((topic, partition), v),
                        None => entry.remove(&(topic, partition)),
                    };
                }
            }
        }
        internal::Replayed::Record { key, value, txn } => {
            let Ok(key) = records::decode_key(key) else {
                bad += 1;
                return;
            };
            match key {
                Key::Offset { group, topic, partition } => {
                    let value = match value.map(records::decode_offset) {
                        None => None,
                        Some(Ok(v)) => Some(Committed {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata,
                            commit_timestamp: v.commit_timestamp,
                        }),
                        Some(Err(_)) => {
                            bad += 1;
                            return;
                        }
                    };
                    if let Some(pid) = txn {
                        pending.entry(pid).or_default().push((group, topic, partition, value));
                        return;
                    }
                    let entry = offsets.entry(group).or_default();
                    match value {
                        Some(v) => entry.insert((topic, partition), v),
                        None => entry.remove(&(topic, partition)),
                    };
                }
                Key::Group { group } => match value.map(records::decode_group) {
                    None => {
                        metas.insert(group, None);
                    }
                    Some(Ok(v)) => {
                        metas.insert(group, Some(v));
                    }
                    Some(Err(_)) => bad += 1,
                },
            }
        }
    })
    .await?;
    skipped += bad;
    // Transactions still open at the end of the log: their commits stay pending until the marker.
    {
        let mut txn_offsets = shard.groups.txn_offsets.borrow_mut();
        for (pid, list) in pending {
            for (group, topic, partition, value) in list {
                if let Some(v) = value {
                    txn_offsets.entry(pid).or_default().push((group, topic, partition, v));
                }
            }
        }
    }
    if skipped > 0 {
        tracing::warn!(partition = p, skipped, "records of __consumer_offsets could not be read and were skipped");
    }
    let now = now_ms();
    let mut built: HashMap<String, Group> = HashMap::new();
    for (id, meta) in metas {
        if let Some(v) = meta {
            let members = v
                .members
                .into_iter()
                .map(|m| {
                    Group::persisted_member(
                        m.member_id,
                        m.instance_id,
                        m.client_id,
                        m.client_host,
                        m.rebalance_timeout_ms as i64,
                        m.session_timeout_ms as i64,
                        v.protocol_type.clone(),
                        v.protocol.as_deref(),
                        m.subscription,
                        m.assignment,
                    )
                })
                .collect();
            let mut g = Group::restore(&id, v.protocol_type, v.generation, v.protocol, v.leader, members, now);
            g.state_timestamp = if v.state_timestamp > 0 { v.state_timestamp } else { now };
            built.insert(id, g);
        }
    }
    for (id, offs) in offsets {
        if offs.is_empty() {
            continue;
        }
        let g = built.entry(id.clone()).or_insert_with(|| Group::new(&id, now));
        g.offsets = offs;
    }
    let n = built.len();
    let mut groups = shard.groups.groups.borrow_mut();
    for (id, g) in built {
        groups.insert(id, g);
    }
    Ok((n, count))
}
