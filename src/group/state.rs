//! The classic group protocol as a state machine with no I/O.
//!
//! A [`Group`] takes events (join, sync, heartbeat, leave, commit, a clock
//! tick) with the current time and pushes [`Action`]s: responses to requests
//! that were parked until a rebalance completes, and "persist the group's
//! metadata". The glommio layer ([`super::coordinator`]) turns actions into
//! replies and log appends. Time is always passed in, so tests drive it with a
//! fake clock.
//!
//! States follow Kafka's classic coordinator:
//! `Empty -> PreparingRebalance -> CompletingRebalance -> Stable`, back to
//! `PreparingRebalance` whenever membership or subscriptions change, and
//! `Dead` once deleted. A join completes when every known member has rejoined
//! (and no member id handed out by KIP-394 is still pending), or when the
//! rebalance timeout expires, which drops the members that did not rejoin. The
//! first rebalance of an empty group waits `group.initial.rebalance.delay.ms`
//! for more members, extended while they keep arriving, up to the rebalance
//! timeout.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::config::GroupConfig;
use crate::protocol::errors as ec;

/// Identifies a parked request: its response comes back as an [`Action`].
pub type ReqId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinResponse {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: i16) -> Self {
        SyncResponse { error, ..Default::default() }
    }
}

/// One member of a LeaveGroup request.
#[derive(Debug, Clone, Default)]
pub struct LeavingMember {
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// What the driver must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Join(ReqId, JoinResponse),
    Sync(ReqId, SyncResponse),
    /// The group's metadata changed in a way a restart should see: write a group record.
    Persist,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<ReqId>,
    awaiting_sync: Option<ReqId>,
    last_heartbeat: i64,
    /// Joined during the current rebalance (a new member that never saw a join response).
    is_new: bool,
}

impl Member {
    /// The member's metadata for `protocol`, empty when it does not support it.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// How long a new member may wait in a join before it is dropped (Kafka's `newMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// One classic consumer group: membership, the rebalance in progress, committed offsets.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used: id -> expiry time.
    pending: HashMap<String, i64>,
    /// group.instance.id -> member id.
    statics: HashMap<String, String>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    pub state_timestamp: i64,
    /// PreparingRebalance: when the join completes whatever happens.
    rebalance_deadline: i64,
    /// PreparingRebalance from Empty: the join does not complete before this.
    initial_delay_until: i64,
    /// CompletingRebalance: members that have not synced by then are dropped.
    sync_deadline: i64,
}

/// Makes member ids unique: `prefix-<counter>-<random>`.
pub trait IdSource {
    fn next_id(&mut self, prefix: &str) -> String;
}

impl Group {
    pub fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            offsets: BTreeMap::new(),
            state_timestamp: now,
            rebalance_deadline: 0,
            initial_delay_until: 0,
            sync_deadline: 0,
        }
    }

    /// Rebuilds a group from its persisted metadata. Members come back as a stable
    /// group whose sessions start now, so they keep their assignment if they heartbeat.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        id: &str,
        protocol_type: String,
        generation: i32,
        protocol: Option<String>,
        leader: Option<String>,
        members: Vec<Member>,
        now: i64,
    ) -> Group {
        let mut g = Group::new(id, now);
        g.generation = generation;
        g.protocol_type = if protocol_type.is_empty() { None } else { Some(protocol_type) };
        g.protocol = protocol;
        for mut m in members {
            m.last_heartbeat = now;
            if let Some(i) = &m.instance_id {
                g.statics.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), m);
        }
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.leader = None;
        } else {
            g.state = GroupState::Stable;
            g.leader = leader.filter(|l| g.members.contains_key(l)).or_else(|| g.members.keys().next().cloned());
        }
        g
    }

    /// A member as persisted (for [`Group::restore`]).
    #[allow(clippy::too_many_arguments)]
    pub fn persisted_member(
        member_id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        rebalance_timeout_ms: i64,
        session_timeout_ms: i64,
        protocol_type: String,
        protocol: Option<&str>,
        subscription: Bytes,
        assignment: Bytes,
    ) -> Member {
        Member {
            member_id,
            instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type,
            protocols: vec![(protocol.unwrap_or_default().to_string(), subscription)],
            assignment,
            awaiting_join: None,
            awaiting_sync: None,
            last_heartbeat: 0,
            is_new: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    // -----------------------------------------------------------------------------------------
    // JoinGroup
    // -----------------------------------------------------------------------------------------

    pub fn join(
        &mut self,
        req_id: ReqId,
        req: JoinRequest,
        now: i64,
        cfg: &GroupConfig,
        ids: &mut dyn IdSource,
        out: &mut Vec<Action>,
    ) {
        let fail = |error: i16, out: &mut Vec<Action>| {
            out.push(Action::Join(req_id, JoinResponse { error, member_id: req.member_id.clone(), ..Default::default() }))
        };
        if self.state == GroupState::Dead {
            return fail(ec::COORDINATOR_NOT_AVAILABLE, out);
        }
        if req.session_timeout_ms < cfg.min_session_timeout_ms || req.session_timeout_ms > cfg.max_session_timeout_ms {
            return fail(ec::INVALID_SESSION_TIMEOUT, out);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() || !self.supports(&req.protocol_type, &req.protocols) {
            return fail(ec::INCONSISTENT_GROUP_PROTOCOL, out);
        }
        if req.member_id.is_empty() {
            if let Some(instance) = req.instance_id.clone() {
                if let Some(old) = self.statics.get(&instance).cloned() {
                    return self.replace_static_member(req_id, req, &old, now, cfg, ids, out);
                }
                if self.members.len() >= cfg.max_size {
                    return fail(ec::GROUP_MAX_SIZE_REACHED, out);
                }
                let member_id = ids.next_id(&instance);
                return self.add_member_and_rebalance(req_id, req, member_id, now, cfg, out);
            }
            if self.members.len() + self.pending.len() >= cfg.max_size {
                return fail(ec::GROUP_MAX_SIZE_REACHED, out);
            }
            let client = if req.client_id.is_empty() { "consumer" } else { req.client_id.as_str() };
            let member_id = ids.next_id(client);
            if req.require_known_member_id {
                self.pending.insert(member_id.clone(), now + req.session_timeout_ms);
                out.push(Action::Join(
                    req_id,
                    JoinResponse { error: ec::MEMBER_ID_REQUIRED, member_id, ..Default::default() },
                ));
                return;
            }
            return self.add_member_and_rebalance(req_id, req, member_id, now, cfg, out);
        }

        // A known (or pending) member.
        let member_id = req.member_id.clone();
        if self.pending.remove(&member_id).is_some() {
            if self.members.len() >= cfg.max_size {
                return fail(ec::GROUP_MAX_SIZE_REACHED, out);
            }
            return self.add_member_and_rebalance(req_id, req, member_id, now, cfg, out);
        }
        if let Err(e) = self.check_member(&member_id, req.instance_id.as_deref()) {
            return fail(e, out);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(&member_id, &req, Some(req_id), now, out);
                self.maybe_complete_join(now, out);
            }
            GroupState::CompletingRebalance => {
                let same = self.members[&member_id].protocols == req.protocols;
                if same {
                    // The member lost its join response: send it again.
                    let resp = self.join_response(&member_id);
                    out.push(Action::Join(req_id, resp));
                } else {
                    self.update_member(&member_id, &req, Some(req_id), now, out);
                    self.prepare_rebalance(now, cfg, out);
                }
            }
            GroupState::Stable => {
                let m = &self.members[&member_id];
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                if is_leader || m.protocols != req.protocols {
                    self.update_member(&member_id, &req, Some(req_id), now, out);
                    self.prepare_rebalance(now, cfg, out);
                } else {
                    let resp = self.join_response(&member_id);
                    out.push(Action::Join(req_id, resp));
                }
            }
            GroupState::Empty | GroupState::Dead => fail(ec::UNKNOWN_MEMBER_ID, out),
        }
    }

    /// Whether members with `protocols` of `protocol_type` can join: same type, and
    /// at least one protocol every member supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref().is_some_and(|t| t != protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn add_member_and_rebalance(
        &mut self,
        req_id: ReqId,
        req: JoinRequest,
        member_id: String,
        now: i64,
        cfg: &GroupConfig,
        out: &mut Vec<Action>,
    ) {
        if let Some(i) = &req.instance_id {
            self.statics.insert(i.clone(), member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                member_id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                awaiting_join: Some(req_id),
                awaiting_sync: None,
                last_heartbeat: now,
                is_new: true,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            if self.initial_delay_until > now {
                // Still in the initial delay: more members are arriving, wait a little longer.
                self.initial_delay_until = (now + cfg.initial_rebalance_delay_ms.max(1)).min(self.rebalance_deadline);
            }
            self.maybe_complete_join(now, out);
        } else {
            self.prepare_rebalance(now, cfg, out);
        }
    }

    fn update_member(&mut self, member_id: &str, req: &JoinRequest, waiting: Option<ReqId>, now: i64, out: &mut Vec<Action>) {
        let m = self.members.get_mut(member_id).expect("checked member");
        if let Some(old) = m.awaiting_join.take() {
            // A second join replaces the first, which is told to rejoin.
            out.push(Action::Join(
                old,
                JoinResponse { error: ec::REBALANCE_IN_PROGRESS, member_id: member_id.to_string(), ..Default::default() },
            ));
        }
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.awaiting_join = waiting;
        m.last_heartbeat = now;
    }

    /// A static member rejoined under a new member id (a restart): fence the old id and
    /// keep the group as it is when nothing it depends on changed (KIP-345).
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        req_id: ReqId,
        req: JoinRequest,
        old_id: &str,
        now: i64,
        cfg: &GroupConfig,
        ids: &mut dyn IdSource,
        out: &mut Vec<Action>,
    ) {
        let instance = req.instance_id.clone().unwrap_or_default();
        let new_id = ids.next_id(&instance);
        let Some(mut m) = self.members.remove(old_id) else {
            self.statics.remove(&instance);
            return;
        };
        if let Some(w) = m.awaiting_join.take() {
            out.push(Action::Join(
                w,
                JoinResponse { error: ec::FENCED_INSTANCE_ID, member_id: old_id.to_string(), ..Default::default() },
            ));
        }
        if let Some(w) = m.awaiting_sync.take() {
            out.push(Action::Sync(w, SyncResponse::error(ec::FENCED_INSTANCE_ID)));
        }
        let protocols_changed = m.protocols != req.protocols;
        m.member_id = new_id.clone();
        m.last_heartbeat = now;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.protocols = req.protocols.clone();
        self.members.insert(new_id.clone(), m);
        self.statics.insert(instance, new_id.clone());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if !protocols_changed => {
                let mut resp = self.join_response(&new_id);
                let is_leader = self.leader.as_deref() == Some(new_id.as_str());
                resp.skip_assignment = is_leader;
                out.push(Action::Join(req_id, resp));
                out.push(Action::Persist);
            }
            GroupState::PreparingRebalance => {
                self.members.get_mut(&new_id).expect("inserted").awaiting_join = Some(req_id);
                self.maybe_complete_join(now, out);
            }
            _ => {
                self.members.get_mut(&new_id).expect("inserted").awaiting_join = Some(req_id);
                self.prepare_rebalance(now, cfg, out);
            }
        }
    }

    /// The join response for `member_id` in the current generation.
    fn join_response(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResponse {
            error: ec::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn prepare_rebalance(&mut self, now: i64, cfg: &GroupConfig, out: &mut Vec<Action>) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for their assignment must rejoin.
            for m in self.members.values_mut() {
                if let Some(w) = m.awaiting_sync.take() {
                    out.push(Action::Sync(w, SyncResponse::error(ec::REBALANCE_IN_PROGRESS)));
                }
                m.assignment = Bytes::new();
            }
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        self.rebalance_deadline = now + timeout;
        // The first rebalance of an empty group waits for more members; even with no delay
        // configured it completes on the next tick rather than at once (as Kafka's
        // InitialDelayedJoin does), so members starting together land in one generation.
        self.initial_delay_until = if self.state == GroupState::Empty {
            (now + cfg.initial_rebalance_delay_ms.max(1)).min(self.rebalance_deadline.max(now + 1))
        } else {
            0
        };
        self.set_state(GroupState::PreparingRebalance, now);
        self.maybe_complete_join(now, out);
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn maybe_complete_join(&mut self, now: i64, out: &mut Vec<Action>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let ready = (self.all_joined() && now >= self.initial_delay_until) || now >= self.rebalance_deadline;
        if ready {
            self.complete_join(now, out);
        }
    }

    fn complete_join(&mut self, now: i64, out: &mut Vec<Action>) {
        // Members that did not rejoin in time are dropped.
        let gone: Vec<String> = self.members.values().filter(|m| m.awaiting_join.is_none()).map(|m| m.member_id.clone()).collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.generation += 1;
        if self.members.is_empty() {
            // Like Kafka, an empty group keeps its protocol type (ListGroups shows it).
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now);
            out.push(Action::Persist);
            return;
        }
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now);
        let max_rebalance = self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        self.sync_deadline = now + max_rebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let resp = self.join_response(&id);
            let m = self.members.get_mut(&id).expect("listed member");
            m.is_new = false;
            m.last_heartbeat = now;
            if let Some(w) = m.awaiting_join.take() {
                out.push(Action::Join(w, resp));
            }
        }
    }

    /// The protocol every member supports that most members prefer (first in their list).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(p, _)| candidates.contains(&p)) {
                if let Some(v) = votes.iter_mut().find(|(_, n)| *n == name) {
                    v.0 += 1;
                }
            }
        }
        // Highest vote count; ties go to the earlier candidate.
        let mut best: Option<(usize, &String)> = None;
        for (count, name) in votes {
            if best.is_none_or(|(c, _)| count > c) {
                best = Some((count, name));
            }
        }
        best.map(|(_, n)| n.clone())
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        if let Some(i) = &m.instance_id {
            if self.statics.get(i).map(String::as_str) == Some(member_id) {
                self.statics.remove(i);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(m)
    }

    fn set_state(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp = now;
    }

    /// Checks that `member_id` is a member and, for a static member, that the instance id matches.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(i) = instance_id {
            match self.statics.get(i) {
                Some(id) if id == member_id => return Ok(()),
                Some(_) => return Err(ec::FENCED_INSTANCE_ID),
                None => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(ec::UNKNOWN_MEMBER_ID)
        }
    }

    // -----------------------------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup
    // -----------------------------------------------------------------------------------------

    pub fn sync(&mut self, req_id: ReqId, req: SyncRequest, now: i64, out: &mut Vec<Action>) {
        let reply = |e: i16, out: &mut Vec<Action>| out.push(Action::Sync(req_id, SyncResponse::error(e)));
        if self.state == GroupState::Dead {
            return reply(ec::COORDINATOR_NOT_AVAILABLE, out);
        }
        if let Err(e) = self.check_member(&req.member_id, req.instance_id.as_deref()) {
            return reply(e, out);
        }
        if req.generation != self.generation {
            return reply(ec::ILLEGAL_GENERATION, out);
        }
        if req.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || req.protocol_name.as_ref().is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            return reply(ec::INCONSISTENT_GROUP_PROTOCOL, out);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => reply(ec::UNKNOWN_MEMBER_ID, out),
            GroupState::PreparingRebalance => reply(ec::REBALANCE_IN_PROGRESS, out),
            GroupState::CompletingRebalance => {
                let m = self.members.get_mut(&req.member_id).expect("checked member");
                if let Some(old) = m.awaiting_sync.replace(req_id) {
                    out.push(Action::Sync(old, SyncResponse::error(ec::REBALANCE_IN_PROGRESS)));
                }
                m.last_heartbeat = now;
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.set_state(GroupState::Stable, now);
                    out.push(Action::Persist);
                    let (pt, pn) = (self.protocol_type.clone(), self.protocol.clone());
                    for m in self.members.values_mut() {
                        if let Some(w) = m.awaiting_sync.take() {
                            out.push(Action::Sync(
                                w,
                                SyncResponse {
                                    error: ec::NONE,
                                    protocol_type: pt.clone(),
                                    protocol_name: pn.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            GroupState::Stable => {
                let m = self.members.get_mut(&req.member_id).expect("checked member");
                m.last_heartbeat = now;
                out.push(Action::Sync(
                    req_id,
                    SyncResponse {
                        error: ec::NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
            }
        }
    }

    pub fn heartbeat(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: i64) -> i16 {
        if self.state == GroupState::Dead {
            return ec::COORDINATOR_NOT_AVAILABLE;
        }
        if let Err(e) = self.check_member(member_id, instance_id) {
            return e;
        }
        if generation != self.generation {
            return ec::ILLEGAL_GENERATION;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => ec::UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => ec::REBALANCE_IN_PROGRESS,
            GroupState::CompletingRebalance | GroupState::Stable => ec::NONE,
        }
    }

    /// Removes each leaving member; returns one error code per member.
    pub fn leave(&mut self, leaving: &[LeavingMember], now: i64, cfg: &GroupConfig, out: &mut Vec<Action>) -> Vec<(String, Option<String>, i16)> {
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed_any = false;
        for l in leaving {
            let target = match &l.instance_id {
                Some(i) => match self.statics.get(i) {
                    Some(id) if l.member_id.is_empty() || *id == l.member_id => Ok(id.clone()),
                    Some(_) => Err(ec::FENCED_INSTANCE_ID),
                    None => Err(ec::UNKNOWN_MEMBER_ID),
                },
                None => {
                    if self.pending.remove(&l.member_id).is_some() {
                        results.push((l.member_id.clone(), None, ec::NONE));
                        removed_any = true;
                        continue;
                    }
                    if self.members.contains_key(&l.member_id) {
                        Ok(l.member_id.clone())
                    } else {
                        Err(ec::UNKNOWN_MEMBER_ID)
                    }
                }
            };
            match target {
                Err(e) => results.push((l.member_id.clone(), l.instance_id.clone(), e)),
                Ok(id) => {
                    if let Some(mut m) = self.remove_member(&id) {
                        if let Some(w) = m.awaiting_join.take() {
                            out.push(Action::Join(
                                w,
                                JoinResponse { error: ec::UNKNOWN_MEMBER_ID, member_id: id.clone(), ..Default::default() },
                            ));
                        }
                        if let Some(w) = m.awaiting_sync.take() {
                            out.push(Action::Sync(w, SyncResponse::error(ec::UNKNOWN_MEMBER_ID)));
                        }
                    }
                    removed_any = true;
                    results.push((id, l.instance_id.clone(), ec::NONE));
                }
            }
        }
        if removed_any {
            self.membership_changed(now, cfg, out);
        }
        results
    }

    fn membership_changed(&mut self, now: i64, cfg: &GroupConfig, out: &mut Vec<Action>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, cfg, out),
            GroupState::PreparingRebalance => self.maybe_complete_join(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // -----------------------------------------------------------------------------------------
    // Time
    // -----------------------------------------------------------------------------------------

    /// Expires sessions and completes rebalances whose time has come.
    pub fn tick(&mut self, now: i64, cfg: &GroupConfig, out: &mut Vec<Action>) {
        let before = self.pending.len();
        self.pending.retain(|_, expiry| *expiry > now);
        let mut changed = self.pending.len() != before;
        let state = self.state;
        let sync_deadline = self.sync_deadline;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                if m.awaiting_join.is_some() {
                    // Rejoined: kept until the join completes, except a new member stuck for too long.
                    m.is_new && m.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT_MS <= now
                } else if state == GroupState::CompletingRebalance && now >= sync_deadline {
                    // The rebalance did not finish: whoever has not synced is dropped.
                    m.awaiting_sync.is_none()
                } else {
                    m.awaiting_sync.is_none() && m.last_heartbeat + m.session_timeout_ms <= now
                }
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            if let Some(mut m) = self.remove_member(id) {
                if let Some(w) = m.awaiting_join.take() {
                    out.push(Action::Join(
                        w,
                        JoinResponse { error: ec::UNKNOWN_MEMBER_ID, member_id: id.clone(), ..Default::default() },
                    ));
                }
            }
            changed = true;
        }
        if changed {
            self.membership_changed(now, cfg, out);
        } else {
            self.maybe_complete_join(now, out);
        }
    }

    /// The earliest time at which [`Group::tick`] may change something.
    pub fn next_deadline(&self) -> Option<i64> {
        let mut d: Option<i64> = self.pending.values().copied().min();
        let mut take = |t: i64| d = Some(d.map_or(t, |x| x.min(t)));
        match self.state {
            GroupState::PreparingRebalance => {
                take(self.rebalance_deadline);
                if self.initial_delay_until > 0 {
                    take(self.initial_delay_until);
                }
            }
            GroupState::CompletingRebalance => take(self.sync_deadline),
            _ => {}
        }
        for m in self.members.values() {
            if m.awaiting_join.is_none() && m.awaiting_sync.is_none() {
                take(m.last_heartbeat + m.session_timeout_ms);
            }
        }
        d
    }

    // -----------------------------------------------------------------------------------------
    // Offsets
    // -----------------------------------------------------------------------------------------

    /// Whether an OffsetCommit from this member (or a standalone consumer: empty member
    /// id, generation -1) may commit now. Counts as a heartbeat.
    pub fn check_commit(&mut self, member_id: &str, instance_id: Option<&str>, generation: i32, now: i64) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(ec::COORDINATOR_NOT_AVAILABLE);
        }
        if generation < 0 && self.members.is_empty() {
            // A consumer managing its own partitions, using the group only for offsets (as in
            // Kafka, its member id does not matter: KIP-848 clients send their own even then).
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance && self.members.contains_key(member_id) {
            return Err(ec::REBALANCE_IN_PROGRESS);
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ec::ILLEGAL_GENERATION);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        Ok(())
    }

    pub fn commit(&mut self, topic: &str, partition: i32, c: Committed) {
        self.offsets.insert((topic.to_string(), partition), c);
    }

    /// Topics the members subscribe to, when the group uses the consumer protocol and
    /// its subscriptions can be read; `None` when unknown.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            let mut buf = m.metadata(protocol);
            if buf.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            bytes::Buf::advance(&mut buf, 2);
            let sub = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
            topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    /// Marks the group deleted (the driver writes the tombstones).
    pub fn delete(&mut self, now: i64) -> Result<(), i16> {
        match self.state {
            GroupState::Dead => Err(ec::GROUP_ID_NOT_FOUND),
            GroupState::Empty => {
                self.set_state(GroupState::Dead, now);
                Ok(())
            }
            _ => Err(ec::NON_EMPTY_GROUP),
        }
    }

    /// Drops offsets committed longer than `retention_ms` ago when the group is empty
    /// (Kafka's `offsets.retention.minutes`); returns the dropped keys.
    pub fn expire_offsets(&mut self, now: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty || now - self.state_timestamp < retention_ms {
            return Vec::new();
        }
        let old: Vec<(String, i32)> =
            self.offsets.iter().filter(|(_, c)| c.commit_timestamp + retention_ms <= now).map(|(k, _)| k.clone()).collect();
        for k in &old {
            self.offsets.remove(k);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seq(u32);
    impl IdSource for Seq {
        fn next_id(&mut self, prefix: &str) -> String {
            self.0 += 1;
            format!("{prefix}-{}", self.0)
        }
    }

    fn cfg(delay: i64) -> GroupConfig {
        GroupConfig { initial_rebalance_delay_ms: delay, ..GroupConfig::default() }
    }

    fn join_req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.to_string(),
            instance_id: None,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{member}-{p}")))).collect(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    fn joins(out: &[Action]) -> Vec<(ReqId, JoinResponse)> {
        out.iter().filter_map(|a| if let Action::Join(r, j) = a { Some((*r, j.clone())) } else { None }).collect()
    }

    fn syncs(out: &[Action]) -> Vec<(ReqId, SyncResponse)> {
        out.iter().filter_map(|a| if let Action::Sync(r, s) = a { Some((*r, s.clone())) } else { None }).collect()
    }

    /// Runs the KIP-394 two-step join and returns the member id, with the join parked or answered.
    fn join_new(g: &mut Group, req_id: ReqId, now: i64, c: &GroupConfig, ids: &mut Seq, out: &mut Vec<Action>) -> String {
        let mut first = Vec::new();
        g.join(req_id, join_req("", &["range"]), now, c, ids, &mut first);
        let j = joins(&first);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].1.error, ec::MEMBER_ID_REQUIRED);
        let id = j[0].1.member_id.clone();
        g.join(req_id, join_req(&id, &["range"]), now, c, ids, out);
        settle(g, now, c, out);
        id
    }

    /// Lets the first rebalance of an empty group complete (it waits at least one tick).
    fn settle(g: &mut Group, now: i64, c: &GroupConfig, out: &mut Vec<Action>) {
        if g.state == GroupState::PreparingRebalance && g.initial_delay_until > now && c.initial_rebalance_delay_ms == 0 {
            g.tick(now + 1, c, out);
        }
    }

    #[test]
    fn two_members_join_sync_and_stabilise() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let a = join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        // One member, no delay: the join completes at once and `a` leads.
        let j = joins(&out);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].1.error, ec::NONE);
        assert_eq!(j[0].1.generation, 1);
        assert_eq!(j[0].1.leader, a);
        assert_eq!(j[0].1.members.len(), 1);
        assert_eq!(g.state, GroupState::CompletingRebalance);

        // b joins before a syncs: a's sync must wait for the next generation.
        out.clear();
        let b = join_new(&mut g, 2, 10, &c, &mut ids, &mut out);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(joins(&out).is_empty(), "b waits for a to rejoin");
        out.clear();
        g.sync(3, SyncRequest { member_id: a.clone(), generation: 1, ..Default::default() }, 11, &mut out);
        assert_eq!(syncs(&out)[0].1.error, ec::REBALANCE_IN_PROGRESS);
        assert_eq!(g.heartbeat(&a, None, 1, 12), ec::REBALANCE_IN_PROGRESS);

        out.clear();
        g.join(4, join_req(&a, &["range"]), 13, &c, &mut ids, &mut out);
        let j = joins(&out);
        assert_eq!(j.len(), 2, "both joins answered: {j:?}");
        let leader = j.iter().find(|(r, _)| *r == 4).unwrap();
        let follower = j.iter().find(|(r, _)| *r == 2).unwrap();
        assert_eq!(leader.1.generation, 2);
        assert_eq!(leader.1.members.len(), 2);
        assert!(follower.1.members.is_empty());
        assert_eq!(follower.1.leader, a);
        assert_eq!(follower.1.protocol_name.as_deref(), Some("range"));

        // The follower syncs first and waits; the leader's sync hands out both assignments.
        out.clear();
        g.sync(5, SyncRequest { member_id: b.clone(), generation: 2, ..Default::default() }, 14, &mut out);
        assert!(syncs(&out).is_empty());
        g.sync(
            6,
            SyncRequest {
                member_id: a.clone(),
                generation: 2,
                assignments: vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))],
                ..Default::default()
            },
            15,
            &mut out,
        );
        let s = syncs(&out);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().find(|(r, _)| *r == 5).unwrap().1.assignment, Bytes::from_static(b"B"));
        assert_eq!(s.iter().find(|(r, _)| *r == 6).unwrap().1.assignment, Bytes::from_static(b"A"));
        assert!(out.contains(&Action::Persist));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&b, None, 2, 16), ec::NONE);
        assert_eq!(g.heartbeat(&b, None, 1, 16), ec::ILLEGAL_GENERATION);
        assert_eq!(g.heartbeat("nobody", None, 2, 16), ec::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn members_starting_together_share_the_first_generation_even_without_delay() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let mut first = Vec::new();
        g.join(1, join_req("", &["range"]), 0, &c, &mut ids, &mut first);
        g.join(2, join_req("", &["range"]), 0, &c, &mut ids, &mut first);
        let a = joins(&first)[0].1.member_id.clone();
        let b = joins(&first)[1].1.member_id.clone();
        g.join(3, join_req(&a, &["range"]), 0, &c, &mut ids, &mut out);
        assert!(joins(&out).is_empty(), "the first join of an empty group waits a tick");
        g.join(4, join_req(&b, &["range"]), 0, &c, &mut ids, &mut out);
        g.tick(1, &c, &mut out);
        let j = joins(&out);
        assert_eq!(j.len(), 2);
        assert!(j.iter().all(|(_, r)| r.generation == 1), "{j:?}");
    }

    #[test]
    fn session_timeout_removes_a_silent_member_and_rebalances() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let a = join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        let b = join_new(&mut g, 2, 0, &c, &mut ids, &mut out);
        g.join(3, join_req(&a, &["range"]), 0, &c, &mut ids, &mut out);
        g.sync(4, SyncRequest { member_id: a.clone(), generation: 2, ..Default::default() }, 1, &mut out);
        g.sync(5, SyncRequest { member_id: b.clone(), generation: 2, ..Default::default() }, 1, &mut out);
        assert_eq!(g.state, GroupState::Stable);
        // a keeps heartbeating; b goes silent past its 10 s session.
        for t in (1000..=10_000).step_by(1000) {
            assert_eq!(g.heartbeat(&a, None, 2, t), ec::NONE);
            out.clear();
            g.tick(t, &c, &mut out);
        }
        assert_eq!(g.state, GroupState::Stable, "b's session has not expired at 10 s");
        g.tick(10_001, &c, &mut out);
        assert!(!g.members.contains_key(&b));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(&a, None, 2, 10_002), ec::REBALANCE_IN_PROGRESS);
        out.clear();
        g.join(6, join_req(&a, &["range"]), 10_003, &c, &mut ids, &mut out);
        let j = joins(&out);
        assert_eq!(j[0].1.generation, 3);
        assert_eq!(j[0].1.members.len(), 1);
    }

    #[test]
    fn rebalance_timeout_drops_members_that_do_not_rejoin() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let a = join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        let b = join_new(&mut g, 2, 0, &c, &mut ids, &mut out);
        g.join(3, join_req(&a, &["range"]), 0, &c, &mut ids, &mut out);
        g.sync(4, SyncRequest { member_id: a.clone(), generation: 2, ..Default::default() }, 1, &mut out);
        // c joins: a rejoins, b never does (but keeps its session alive with heartbeats).
        let _c = join_new(&mut g, 5, 100, &c, &mut ids, &mut out);
        out.clear();
        g.join(6, join_req(&a, &["range"]), 200, &c, &mut ids, &mut out);
        assert!(joins(&out).is_empty());
        for t in (5000..=30_000).step_by(5000) {
            assert_eq!(g.heartbeat(&b, None, 2, t), ec::REBALANCE_IN_PROGRESS);
            g.tick(t, &c, &mut out);
        }
        g.tick(30_099, &c, &mut out);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        g.tick(30_100, &c, &mut out);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert!(!g.members.contains_key(&b));
        assert_eq!(joins(&out).len(), 2);
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let c = cfg(3000);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        assert!(joins(&out).is_empty());
        g.tick(2000, &c, &mut out);
        join_new(&mut g, 2, 2000, &c, &mut ids, &mut out);
        g.tick(3500, &c, &mut out);
        assert!(joins(&out).is_empty(), "the delay was extended by the second member");
        g.tick(5000, &c, &mut out);
        let j = joins(&out);
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].1.generation, 1);
    }

    #[test]
    fn leave_rebalances_and_empties() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let a = join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        g.sync(2, SyncRequest { member_id: a.clone(), generation: 1, ..Default::default() }, 1, &mut out);
        assert_eq!(g.state, GroupState::Stable);
        let r = g.leave(&[LeavingMember { member_id: a.clone(), instance_id: None }, LeavingMember { member_id: "x".into(), instance_id: None }], 2, &c, &mut out);
        assert_eq!(r[0].2, ec::NONE);
        assert_eq!(r[1].2, ec::UNKNOWN_MEMBER_ID);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert!(out.contains(&Action::Persist));
        assert_eq!(g.delete(3), Ok(()));
        assert_eq!(g.state, GroupState::Dead);
    }

    #[test]
    fn static_member_restart_keeps_assignment_without_rebalance() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let mut r = join_req("", &["range"]);
        r.instance_id = Some("i1".into());
        g.join(1, r.clone(), 0, &c, &mut ids, &mut out);
        settle(&mut g, 0, &c, &mut out);
        let a = joins(&out)[0].1.member_id.clone();
        let mut r2 = join_req("", &["range"]);
        r2.instance_id = Some("i2".into());
        out.clear();
        // i2 joins while i1 is in CompletingRebalance; i1 rejoins.
        g.join(2, r2, 1, &c, &mut ids, &mut out);
        g.join(3, JoinRequest { member_id: a.clone(), ..r.clone() }, 2, &c, &mut ids, &mut out);
        let j = joins(&out);
        let gen = j[0].1.generation;
        let b = j.iter().find(|(id, _)| *id == 2).unwrap().1.member_id.clone();
        g.sync(
            4,
            SyncRequest {
                member_id: a.clone(),
                instance_id: Some("i1".into()),
                generation: gen,
                assignments: vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))],
                ..Default::default()
            },
            3,
            &mut out,
        );
        assert_eq!(g.state, GroupState::Stable);
        // i2 restarts with a fresh (empty) member id: same generation, same assignment, old id fenced.
        let mut r3 = join_req("", &["range"]);
        r3.instance_id = Some("i2".into());
        out.clear();
        g.join(5, r3, 4, &c, &mut ids, &mut out);
        let j = joins(&out);
        assert_eq!(j[0].1.error, ec::NONE);
        assert_eq!(j[0].1.generation, gen);
        let b2 = j[0].1.member_id.clone();
        assert_ne!(b2, b);
        assert_eq!(g.state, GroupState::Stable);
        out.clear();
        g.sync(6, SyncRequest { member_id: b2.clone(), instance_id: Some("i2".into()), generation: gen, ..Default::default() }, 5, &mut out);
        assert_eq!(syncs(&out)[0].1.assignment, Bytes::from_static(b"B"));
        assert_eq!(g.heartbeat(&b, Some("i2"), gen, 6), ec::FENCED_INSTANCE_ID);
        assert_eq!(g.heartbeat(&a, Some("i1"), gen, 6), ec::NONE);
    }

    #[test]
    fn protocol_selection_and_inconsistent_protocols() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let mut r = join_req("", &["cooperative-sticky", "range"]);
        r.require_known_member_id = false;
        g.join(1, r.clone(), 0, &c, &mut ids, &mut out);
        settle(&mut g, 0, &c, &mut out);
        let a = joins(&out)[0].1.member_id.clone();
        out.clear();
        let mut r2 = join_req("", &["range", "roundrobin"]);
        r2.require_known_member_id = false;
        g.join(2, r2, 1, &c, &mut ids, &mut out);
        g.join(3, JoinRequest { member_id: a, ..r }, 2, &c, &mut ids, &mut out);
        let j = joins(&out);
        assert!(j.iter().all(|(_, r)| r.protocol_name.as_deref() == Some("range")), "{j:?}");
        out.clear();
        let mut bad = join_req("", &["roundrobin"]);
        bad.require_known_member_id = false;
        g.join(4, bad.clone(), 3, &c, &mut ids, &mut out);
        assert_eq!(joins(&out)[0].1.error, ec::INCONSISTENT_GROUP_PROTOCOL);
        out.clear();
        bad.protocol_type = "connect".into();
        bad.protocols = vec![("range".into(), Bytes::new())];
        g.join(5, bad, 3, &c, &mut ids, &mut out);
        assert_eq!(joins(&out)[0].1.error, ec::INCONSISTENT_GROUP_PROTOCOL);
    }

    #[test]
    fn commits_need_membership_unless_the_group_is_empty() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        assert_eq!(g.check_commit("", None, -1, 0), Ok(()));
        assert_eq!(g.check_commit("own-id-of-a-kip848-client", None, -1, 0), Ok(()), "an empty group only stores offsets");
        let mut out = Vec::new();
        let a = join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        assert_eq!(g.check_commit(&a, None, 1, 1), Err(ec::REBALANCE_IN_PROGRESS));
        g.sync(2, SyncRequest { member_id: a.clone(), generation: 1, ..Default::default() }, 1, &mut out);
        assert_eq!(g.check_commit(&a, None, 1, 2), Ok(()));
        assert_eq!(g.check_commit(&a, None, 0, 2), Err(ec::ILLEGAL_GENERATION));
        assert_eq!(g.check_commit("", None, -1, 2), Err(ec::UNKNOWN_MEMBER_ID));
        assert_eq!(g.delete(3), Err(ec::NON_EMPTY_GROUP));
    }

    #[test]
    fn pending_member_ids_expire() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        g.join(1, join_req("", &["range"]), 0, &c, &mut ids, &mut out);
        assert!(!g.is_empty());
        g.tick(10_001, &c, &mut out);
        assert!(g.is_empty());
        out.clear();
        let id = joins(&{
            let mut o = Vec::new();
            g.join(2, join_req("", &["range"]), 10_002, &c, &mut ids, &mut o);
            o
        })[0]
            .1
            .member_id
            .clone();
        // Using the id after it expired is an unknown member.
        g.tick(30_000, &c, &mut out);
        g.join(3, join_req(&id, &["range"]), 30_001, &c, &mut ids, &mut out);
        assert_eq!(joins(&out)[0].1.error, ec::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_member_that_never_syncs_is_dropped_after_the_rebalance_timeout() {
        let c = cfg(0);
        let mut ids = Seq(0);
        let mut g = Group::new("g", 0);
        let mut out = Vec::new();
        let a = join_new(&mut g, 1, 0, &c, &mut ids, &mut out);
        let b = join_new(&mut g, 2, 0, &c, &mut ids, &mut out);
        g.join(3, join_req(&a, &["range"]), 0, &c, &mut ids, &mut out);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        // b syncs; the leader a never does.
        g.sync(4, SyncRequest { member_id: b.clone(), generation: 2, ..Default::default() }, 1, &mut out);
        out.clear();
        g.tick(30_000, &c, &mut out);
        assert!(!g.members.contains_key(&a));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(syncs(&out)[0].1.error, ec::REBALANCE_IN_PROGRESS);
    }
}
