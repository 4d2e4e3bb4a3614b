//! The next-generation consumer group protocol (KIP-848) as a state machine
//! with no I/O: members heartbeat with their subscription and owned
//! partitions, the coordinator computes the assignment (server-side
//! assignors `uniform` and `range`) and hands it out incrementally.
//!
//! Every change to membership, subscriptions or the subscribed topics'
//! partition counts bumps the **group epoch**; the next heartbeat computes a
//! new **target assignment** for that epoch. Each member then reconciles
//! towards its target:
//! 1. partitions it owns that are no longer its target are revoked first (the
//!    member keeps its epoch and must report, in a later heartbeat, that it no
//!    longer owns them, within its rebalance timeout);
//! 2. then it moves to the target epoch and gets the target partitions that no
//!    other member still owns; the rest follow on later heartbeats, once their
//!    previous owners released them.
//!
//! So no partition is ever owned by two members at once. Members that stop
//! heartbeating for the session timeout, or do not revoke in time, are
//! removed. Membership is soft state: after a broker restart members are told
//! UNKNOWN_MEMBER_ID and rejoin (committed offsets are durable as for classic
//! groups).

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::errors as ec;

pub type TopicId = [u8; 16];
/// A partition by topic id.
pub type Tp = (TopicId, i32);

/// The topics the assignor can see: name -> (id, partition count).
pub type TopicsView = BTreeMap<String, (TopicId, i32)>;

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

#[derive(Debug, Clone, Default)]
pub struct HeartbeatIn {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `None`: unchanged; `Some("")`: cleared.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns; `None`: unchanged.
    pub owned: Option<Vec<(TopicId, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatOut {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged since the last response.
    pub assignment: Option<BTreeMap<TopicId, Vec<i32>>>,
}

impl HeartbeatOut {
    fn error(error: i16, message: &str, member_id: &str, epoch: i32) -> Self {
        HeartbeatOut { error, message: Some(message.to_string()), member_id: member_id.to_string(), member_epoch: epoch, ..Default::default() }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i64,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    regex: Option<regex::Regex>,
    pub assignor: Option<String>,
    pub epoch: i32,
    previous_epoch: i32,
    /// Partitions the member may consume now.
    pub assigned: BTreeSet<Tp>,
    /// Partitions it was asked to give up and has not confirmed yet.
    pub pending_revoke: BTreeSet<Tp>,
    owned_reported: Option<BTreeSet<Tp>>,
    last_sent: Option<BTreeSet<Tp>>,
    last_heartbeat: i64,
    revoke_deadline: Option<i64>,
}

impl ConsumerMember {
    fn subscribes(&self, topic: &str) -> bool {
        self.subscribed_names.iter().any(|t| t == topic) || self.regex.as_ref().is_some_and(|r| r.is_match(topic))
    }
}

#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, BTreeSet<Tp>>,
    /// The topic metadata the current target was computed from.
    subscribed_meta: BTreeMap<String, (TopicId, i32)>,
}

/// Compiles a subscription regex with Java's full-match semantics.
fn compile(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_meta: BTreeMap::new(),
        }
    }

    /// Kafka's names: Empty, Assigning, Reconciling, Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            return "Empty";
        }
        if self.group_epoch > self.assignment_epoch {
            return "Assigning";
        }
        let settled = self.members.values().all(|m| {
            m.epoch == self.assignment_epoch
                && m.pending_revoke.is_empty()
                && self.target.get(&m.member_id).is_none_or(|t| *t == m.assigned)
        });
        if settled {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    pub fn assignor(&self) -> &str {
        self.members.values().find_map(|m| m.assignor.as_deref()).unwrap_or("uniform")
    }

    pub fn heartbeat(&mut self, r: HeartbeatIn, now: i64, cfg: &crate::config::GroupConfig, topics: &TopicsView, new_id: &mut dyn FnMut() -> String) -> HeartbeatOut {
        let interval = cfg.consumer_heartbeat_interval_ms;
        if let Some(a) = &r.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return HeartbeatOut::error(ec::UNSUPPORTED_ASSIGNOR, &format!("assignor {a} is not supported"), &r.member_id, r.member_epoch);
            }
        }
        if r.member_epoch == -1 || r.member_epoch == -2 {
            if self.members.remove(&r.member_id).is_none() {
                return HeartbeatOut::error(ec::UNKNOWN_MEMBER_ID, "unknown member", &r.member_id, r.member_epoch);
            }
            self.target.remove(&r.member_id);
            self.group_epoch += 1;
            return HeartbeatOut { error: ec::NONE, member_id: r.member_id, member_epoch: r.member_epoch, heartbeat_interval_ms: 0, ..Default::default() };
        }
        let mut full = r.owned.is_some();
        let member_id = if r.member_epoch == 0 {
            // Join (or rejoin after being fenced).
            let Some(names) = r.subscribed_topic_names.clone() else {
                return HeartbeatOut::error(ec::INVALID_REQUEST, "SubscribedTopicNames must be set in the first heartbeat", &r.member_id, 0);
            };
            if r.rebalance_timeout_ms < 0 {
                return HeartbeatOut::error(ec::INVALID_REQUEST, "RebalanceTimeoutMs must be set in the first heartbeat", &r.member_id, 0);
            }
            let regex = match r.subscribed_topic_regex.as_deref().filter(|s| !s.is_empty()) {
                Some(re) => match compile(re) {
                    Ok(c) => Some(c),
                    Err(e) => return HeartbeatOut::error(ec::INVALID_REQUEST, &format!("bad regex: {e}"), &r.member_id, 0),
                },
                None => None,
            };
            let id = if r.member_id.is_empty() { new_id() } else { r.member_id.clone() };
            if let Some(inst) = &r.instance_id {
                if let Some(other) = self.members.values().find(|m| m.instance_id.as_ref() == Some(inst) && m.member_id != id) {
                    return HeartbeatOut::error(
                        ec::UNRELEASED_INSTANCE_ID,
                        &format!("instance {inst} is still used by member {}", other.member_id),
                        &id,
                        0,
                    );
                }
            }
            self.members.remove(&id);
            self.target.remove(&id);
            self.members.insert(
                id.clone(),
                ConsumerMember {
                    member_id: id.clone(),
                    instance_id: r.instance_id.clone(),
                    rack_id: r.rack_id.clone(),
                    client_id: r.client_id.clone(),
                    client_host: r.client_host.clone(),
                    rebalance_timeout_ms: r.rebalance_timeout_ms as i64,
                    subscribed_names: names,
                    subscribed_regex: r.subscribed_topic_regex.clone().filter(|s| !s.is_empty()),
                    regex,
                    assignor: r.server_assignor.clone(),
                    epoch: 0,
                    previous_epoch: 0,
                    assigned: BTreeSet::new(),
                    pending_revoke: BTreeSet::new(),
                    owned_reported: None,
                    last_sent: None,
                    last_heartbeat: now,
                    revoke_deadline: None,
                },
            );
            self.group_epoch += 1;
            full = true;
            id
        } else {
            let Some(m) = self.members.get_mut(&r.member_id) else {
                return HeartbeatOut::error(ec::UNKNOWN_MEMBER_ID, "unknown member", &r.member_id, r.member_epoch);
            };
            let owned: Option<BTreeSet<Tp>> = r.owned.as_ref().map(|o| flatten(o));
            if r.member_epoch > m.epoch {
                return HeartbeatOut::error(ec::FENCED_MEMBER_EPOCH, "member epoch is ahead of the coordinator's", &r.member_id, r.member_epoch);
            }
            if r.member_epoch < m.epoch {
                let ok = r.member_epoch == m.previous_epoch && owned.as_ref().is_some_and(|o| o.is_subset(&m.assigned));
                if !ok {
                    return HeartbeatOut::error(ec::FENCED_MEMBER_EPOCH, "stale member epoch", &r.member_id, r.member_epoch);
                }
            }
            m.last_heartbeat = now;
            let mut changed = false;
            if let Some(names) = &r.subscribed_topic_names {
                if *names != m.subscribed_names {
                    m.subscribed_names = names.clone();
                    changed = true;
                }
            }
            if let Some(re) = &r.subscribed_topic_regex {
                let new = Some(re.clone()).filter(|s| !s.is_empty());
                if new != m.subscribed_regex {
                    m.regex = match new.as_deref().map(compile) {
                        Some(Ok(c)) => Some(c),
                        Some(Err(e)) => return HeartbeatOut::error(ec::INVALID_REQUEST, &format!("bad regex: {e}"), &r.member_id, m.epoch),
                        None => None,
                    };
                    m.subscribed_regex = new;
                    changed = true;
                }
            }
            if r.server_assignor.is_some() && r.server_assignor != m.assignor {
                m.assignor = r.server_assignor.clone();
                changed = true;
            }
            if r.rebalance_timeout_ms >= 0 {
                m.rebalance_timeout_ms = r.rebalance_timeout_ms as i64;
            }
            if let Some(o) = owned {
                m.owned_reported = Some(o);
            }
            if changed {
                self.group_epoch += 1;
            }
            r.member_id.clone()
        };

        // The subscribed topics changed (created, deleted, more partitions)?
        let meta = self.subscribed_metadata(topics);
        if meta != self.subscribed_meta {
            self.subscribed_meta = meta;
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target(topics);
        }
        self.reconcile(&member_id, now);
        let m = self.members.get_mut(&member_id).expect("member present");
        let send = full || m.last_sent.as_ref() != Some(&m.assigned);
        let assignment = if send {
            m.last_sent = Some(m.assigned.clone());
            Some(group_by_topic(&m.assigned))
        } else {
            None
        };
        HeartbeatOut { error: ec::NONE, message: None, member_id, member_epoch: m.epoch, heartbeat_interval_ms: interval, assignment }
    }

    fn subscribed_metadata(&self, topics: &TopicsView) -> BTreeMap<String, (TopicId, i32)> {
        topics
            .iter()
            .filter(|(name, _)| self.members.values().any(|m| m.subscribes(name)))
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    }

    /// Computes the target assignment for the current group epoch.
    fn compute_target(&mut self, topics: &TopicsView) {
        let members: Vec<&ConsumerMember> = self.members.values().collect();
        let target = if self.assignor() == "range" { range_assign(&members, topics) } else { uniform_assign(&members, topics, &self.target) };
        self.target = target;
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves `member_id` towards its target (see the module docs).
    fn reconcile(&mut self, member_id: &str, now: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let owned_by_others: BTreeSet<Tp> = self
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.pending_revoke.iter()).copied())
            .collect();
        let epoch = self.assignment_epoch;
        let m = self.members.get_mut(member_id).expect("member present");
        if !m.pending_revoke.is_empty() {
            let released = m.owned_reported.as_ref().is_some_and(|o| o.is_disjoint(&m.pending_revoke));
            if !released {
                return;
            }
            m.pending_revoke.clear();
            m.revoke_deadline = None;
        }
        let revoke: BTreeSet<Tp> = m.assigned.difference(&target).copied().collect();
        if !revoke.is_empty() {
            m.assigned = m.assigned.intersection(&target).copied().collect();
            m.pending_revoke = revoke;
            m.owned_reported = None;
            m.revoke_deadline = Some(now + m.rebalance_timeout_ms);
            return;
        }
        if m.epoch != epoch {
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
        }
        for tp in target {
            if !owned_by_others.contains(&tp) {
                m.assigned.insert(tp);
            }
        }
    }

    /// Removes members whose session expired or who did not revoke in time.
    pub fn tick(&mut self, now: i64, session_timeout_ms: i64) -> usize {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.last_heartbeat + session_timeout_ms <= now || m.revoke_deadline.is_some_and(|d| d <= now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
            self.target.remove(id);
        }
        if !gone.is_empty() {
            self.group_epoch += 1;
        }
        gone.len()
    }

    /// Validates an offset commit or fetch by a member (KIP-848 epochs).
    pub fn check_member_epoch(&self, member_id: &str, epoch: i32) -> Result<(), i16> {
        if epoch < 0 && self.members.is_empty() {
            // Not a member (assign() rather than subscribe()): the group only stores offsets.
            return Ok(());
        }
        let m = self.members.get(member_id).ok_or(ec::UNKNOWN_MEMBER_ID)?;
        if epoch != m.epoch {
            return Err(ec::STALE_MEMBER_EPOCH);
        }
        Ok(())
    }

    pub fn subscribed_topics(&self) -> Vec<String> {
        self.subscribed_meta.keys().cloned().collect()
    }
}

fn flatten(o: &[(TopicId, Vec<i32>)]) -> BTreeSet<Tp> {
    o.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p))).collect()
}

pub fn group_by_topic(s: &BTreeSet<Tp>) -> BTreeMap<TopicId, Vec<i32>> {
    let mut out: BTreeMap<TopicId, Vec<i32>> = BTreeMap::new();
    for (t, p) in s {
        out.entry(*t).or_default().push(*p);
    }
    out
}

/// Range: per topic, contiguous ranges of partitions to the subscribed members in member-id order.
fn range_assign(members: &[&ConsumerMember], topics: &TopicsView) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members.iter().map(|m| (m.member_id.clone(), BTreeSet::new())).collect();
    for (name, (id, n)) in topics {
        let subs: Vec<&&ConsumerMember> = members.iter().filter(|m| m.subscribes(name)).collect();
        if subs.is_empty() {
            continue;
        }
        let k = subs.len() as i32;
        let (base, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = base + if (i as i32) < extra { 1 } else { 0 };
            let set = out.get_mut(&m.member_id).expect("listed member");
            for p in next..next + count {
                set.insert((*id, p));
            }
            next += count;
        }
    }
    out
}

/// Uniform: spreads every subscribed partition evenly over the members subscribed to
/// its topic, keeping partitions where they were when that keeps the balance.
fn uniform_assign(
    members: &[&ConsumerMember],
    topics: &TopicsView,
    previous: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = members.iter().map(|m| (m.member_id.clone(), BTreeSet::new())).collect();
    let mut eligible: BTreeMap<Tp, Vec<String>> = BTreeMap::new();
    for (name, (id, n)) in topics {
        let subs: Vec<String> = members.iter().filter(|m| m.subscribes(name)).map(|m| m.member_id.clone()).collect();
        if subs.is_empty() {
            continue;
        }
        for p in 0..*n {
            eligible.insert((*id, p), subs.clone());
        }
    }
    if eligible.is_empty() || members.is_empty() {
        return out;
    }
    // Each member's fair share if everyone could take everything; members over it give back first.
    let cap = eligible.len().div_ceil(members.len());
    let mut unassigned = Vec::new();
    for (tp, subs) in &eligible {
        let prev = previous.iter().find(|(_, set)| set.contains(tp)).map(|(m, _)| m.clone());
        match prev {
            Some(m) if subs.contains(&m) && out.get(&m).is_some_and(|s| s.len() < cap) => {
                out.get_mut(&m).expect("member").insert(*tp);
            }
            _ => unassigned.push(*tp),
        }
    }
    for tp in unassigned {
        let subs = &eligible[&tp];
        let best = subs.iter().min_by_key(|m| (out[*m].len(), (*m).clone())).expect("non-empty").clone();
        out.get_mut(&best).expect("member").insert(tp);
    }
    // Balance: move partitions from the fullest member to an eligible emptier one.
    for _ in 0..eligible.len() {
        let mut moved = false;
        let order: Vec<String> = {
            let mut v: Vec<&String> = out.keys().collect();
            v.sort_by_key(|m| std::cmp::Reverse(out[*m].len()));
            v.into_iter().cloned().collect()
        };
        'outer: for from in &order {
            let from_len = out[from].len();
            for tp in out[from].clone() {
                if let Some(to) = eligible[&tp].iter().filter(|m| out[*m].len() + 1 < from_len).min_by_key(|m| out[*m].len()) {
                    let to = to.clone();
                    out.get_mut(from).expect("member").remove(&tp);
                    out.get_mut(&to).expect("member").insert(tp);
                    moved = true;
                    break 'outer;
                }
            }
        }
        if !moved {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupConfig;

    fn topics() -> TopicsView {
        let mut t = TopicsView::new();
        t.insert("a".into(), ([1; 16], 6));
        t.insert("b".into(), ([2; 16], 2));
        t
    }

    fn join(id: &str, subs: &[&str]) -> HeartbeatIn {
        HeartbeatIn {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(subs.iter().map(|s| s.to_string()).collect()),
            owned: Some(vec![]),
            ..Default::default()
        }
    }

    fn hb(id: &str, epoch: i32, owned: &BTreeSet<Tp>) -> HeartbeatIn {
        HeartbeatIn {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(group_by_topic(owned).into_iter().collect()),
            ..Default::default()
        }
    }

    fn owned(out: &HeartbeatOut) -> BTreeSet<Tp> {
        flatten(&out.assignment.clone().unwrap_or_default().into_iter().collect::<Vec<_>>())
    }

    #[test]
    fn members_converge_without_overlap() {
        let cfg = GroupConfig::default();
        let t = topics();
        let mut g = ConsumerGroup::new("g");
        let mut ids = 0;
        let mut gen = || {
            ids += 1;
            format!("gen-{ids}")
        };
        let r1 = g.heartbeat(join("m1", &["a", "b"]), 0, &cfg, &t, &mut gen);
        assert_eq!(r1.error, ec::NONE);
        assert_eq!(owned(&r1).len(), 8, "a lone member gets everything");
        let mut own1 = owned(&r1);
        let r2 = g.heartbeat(join("m2", &["a", "b"]), 1, &cfg, &t, &mut gen);
        let mut own2 = owned(&r2);
        assert!(own2.is_empty(), "m1 has not released anything yet");
        // m1 heartbeats: told to drop half; then confirms; m2 then gets them.
        let e1 = r1.member_epoch;
        let r = g.heartbeat(hb("m1", e1, &own1), 2, &cfg, &t, &mut gen);
        own1 = owned(&r);
        assert_eq!(own1.len(), 4);
        assert_eq!(r.member_epoch, e1, "epoch stays until the revocation is confirmed");
        let r = g.heartbeat(hb("m1", e1, &own1), 3, &cfg, &t, &mut gen);
        assert!(r.member_epoch > e1);
        let e1 = r.member_epoch;
        let r = g.heartbeat(hb("m2", r2.member_epoch, &own2), 4, &cfg, &t, &mut gen);
        own2 = owned(&r);
        assert_eq!(own2.len(), 4);
        assert!(own1.is_disjoint(&own2));
        assert_eq!(g.state_name(), "Stable");
        assert_eq!(g.check_member_epoch("m1", e1), Ok(()));
        assert_eq!(g.check_member_epoch("m1", e1 - 1), Err(ec::STALE_MEMBER_EPOCH));
        assert_eq!(g.check_member_epoch("not-joined", -1), Err(ec::UNKNOWN_MEMBER_ID), "a group with members checks them");
        // m2 leaves; m1 takes everything back.
        let r = g.heartbeat(HeartbeatIn { member_id: "m2".into(), member_epoch: -1, ..Default::default() }, 5, &cfg, &t, &mut gen);
        assert_eq!(r.member_epoch, -1);
        let r = g.heartbeat(hb("m1", e1, &own1), 6, &cfg, &t, &mut gen);
        assert_eq!(owned(&r).len(), 8);
    }

    #[test]
    fn fencing_and_unknown_members() {
        let cfg = GroupConfig::default();
        let t = topics();
        let mut g = ConsumerGroup::new("g");
        let mut gen = || "x".to_string();
        let r = g.heartbeat(join("m1", &["a"]), 0, &cfg, &t, &mut gen);
        let e = r.member_epoch;
        assert_eq!(g.heartbeat(hb("m1", e + 5, &BTreeSet::new()), 1, &cfg, &t, &mut gen).error, ec::FENCED_MEMBER_EPOCH);
        assert_eq!(g.heartbeat(hb("zz", e, &BTreeSet::new()), 1, &cfg, &t, &mut gen).error, ec::UNKNOWN_MEMBER_ID);
        let mut bad = join("m2", &["a"]);
        bad.server_assignor = Some("sticky-magic".into());
        assert_eq!(g.heartbeat(bad, 1, &cfg, &t, &mut gen).error, ec::UNSUPPORTED_ASSIGNOR);
        // Session expiry removes m1.
        assert_eq!(g.tick(cfg.consumer_session_timeout_ms + 1, cfg.consumer_session_timeout_ms), 1);
        assert_eq!(g.state_name(), "Empty");
    }

    #[test]
    fn range_and_regex() {
        let cfg = GroupConfig::default();
        let t = topics();
        let mut g = ConsumerGroup::new("g");
        let mut gen = || "x".to_string();
        let mut j = join("m1", &[]);
        j.subscribed_topic_regex = Some("[ab]".into());
        j.server_assignor = Some("range".into());
        let r = g.heartbeat(j, 0, &cfg, &t, &mut gen);
        assert_eq!(owned(&r).len(), 8, "the regex matches both topics");
        let mut j = join("m2", &["b"]);
        j.server_assignor = Some("range".into());
        g.heartbeat(j, 0, &cfg, &t, &mut gen);
        assert_eq!(g.target["m1"].iter().filter(|(t, _)| *t == [1; 16]).count(), 6);
        assert_eq!(g.target["m1"].iter().filter(|(t, _)| *t == [2; 16]).count(), 1);
        assert_eq!(g.target["m2"].len(), 1);
    }

    #[test]
    fn uniform_is_balanced_and_sticky() {
        let mut t = TopicsView::new();
        t.insert("a".into(), ([1; 16], 7));
        let mk = |id: &str| ConsumerMember {
            member_id: id.into(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_names: vec!["a".into()],
            subscribed_regex: None,
            regex: None,
            assignor: None,
            epoch: 0,
            previous_epoch: 0,
            assigned: BTreeSet::new(),
            pending_revoke: BTreeSet::new(),
            owned_reported: None,
            last_sent: None,
            last_heartbeat: 0,
            revoke_deadline: None,
        };
        let (a, b, c) = (mk("a"), mk("b"), mk("c"));
        let two = uniform_assign(&[&a, &b], &t, &BTreeMap::new());
        assert_eq!(two.values().map(|s| s.len()).sum::<usize>(), 7);
        assert!(two.values().all(|s| s.len() >= 3));
        let three = uniform_assign(&[&a, &b, &c], &t, &two);
        assert!(three.values().all(|s| (2..=3).contains(&s.len())), "{three:?}");
        // Sticky: what a and b keep was theirs before.
        for m in ["a", "b"] {
            assert!(three[m].is_subset(&two[m]), "{m} kept only its own partitions");
        }
    }
}
