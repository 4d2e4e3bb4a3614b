//! Fetch sessions (KIP-227) as a pure state machine: which partitions a fetch
//! covers, and which of them an incremental response must include.
//!
//! Sessions live on the core that holds the connection (a client keeps a
//! session on one connection), bounded per core; the least recently used one
//! is evicted when the cache is full, and its client gets
//! FETCH_SESSION_ID_NOT_FOUND and starts over with a full fetch.

use std::collections::HashMap;
use std::sync::Arc;

use crate::limits::FETCH_SESSIONS_PER_CORE_MAX;
use crate::protocol::errors as ec;

/// One partition as the session remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPartition {
    pub topic: Arc<str>,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// What the client was last told, to decide whether it needs telling again.
    pub last_high_watermark: i64,
    pub last_log_start_offset: i64,
}

impl SessionPartition {
    /// A partition the client has not been told anything about yet.
    fn fresh(r: &RequestedPartition) -> SessionPartition {
        SessionPartition {
            topic: r.topic.clone(),
            partition: r.partition,
            fetch_offset: r.fetch_offset,
            max_bytes: r.max_bytes,
            last_high_watermark: -1,
            last_log_start_offset: -1,
        }
    }
}

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    partitions: Vec<SessionPartition>,
    last_used: u64,
}

/// What the request asked for, partition by partition.
#[derive(Debug, Clone)]
pub struct RequestedPartition {
    /// Shared by the partitions of one topic (one allocation per topic, not per partition).
    pub topic: Arc<str>,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
}

/// How to serve one fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// No session: serve the request's partitions, answer with session id 0.
    Sessionless,
    /// A full fetch that opened session `id`: serve and answer all partitions.
    Full { id: i32 },
    /// An incremental fetch on session `id`: serve every session partition, answer the changed ones.
    Incremental { id: i32 },
    /// Answer with this top-level error and nothing else.
    Error(i16),
}

#[derive(Debug, Default)]
pub struct FetchSessions {
    sessions: HashMap<i32, Session>,
    next_id: i32,
    clock: u64,
}

fn next_epoch(e: i32) -> i32 {
    if e == i32::MAX {
        1
    } else {
        e + 1
    }
}

impl FetchSessions {
    /// Decides how to serve a fetch and updates the session's partition set.
    /// `shard` is mixed into new session ids so ids from different cores never collide.
    pub fn begin(
        &mut self,
        shard: usize,
        session_id: i32,
        epoch: i32,
        requested: &[RequestedPartition],
        forgotten: &[(String, i32)],
    ) -> Plan {
        self.clock += 1;
        if epoch == -1 {
            // Sessionless, and closes any session named.
            self.sessions.remove(&session_id);
            return Plan::Sessionless;
        }
        if epoch == 0 {
            self.sessions.remove(&session_id);
            if self.sessions.len() >= FETCH_SESSIONS_PER_CORE_MAX {
                let lru = self.sessions.iter().min_by_key(|(_, s)| s.last_used).map(|(&id, _)| id);
                if let Some(id) = lru {
                    self.sessions.remove(&id);
                }
            }
            let id = loop {
                self.next_id = self.next_id.wrapping_add(1) & 0x007f_ffff;
                let id = (self.next_id << 8) | (shard as i32 & 0xff);
                if id > 0 && !self.sessions.contains_key(&id) {
                    break id;
                }
            };
            let partitions = requested.iter().map(SessionPartition::fresh).collect();
            self.sessions.insert(id, Session { next_epoch: 1, partitions, last_used: self.clock });
            return Plan::Full { id };
        }
        let Some(s) = self.sessions.get_mut(&session_id) else {
            return Plan::Error(ec::FETCH_SESSION_ID_NOT_FOUND);
        };
        if epoch != s.next_epoch {
            return Plan::Error(ec::INVALID_FETCH_SESSION_EPOCH);
        }
        s.next_epoch = next_epoch(epoch);
        s.last_used = self.clock;
        for r in requested {
            match s.partitions.iter_mut().find(|p| *p.topic == *r.topic && p.partition == r.partition) {
                Some(p) => {
                    p.fetch_offset = r.fetch_offset;
                    p.max_bytes = r.max_bytes;
                }
                None => s.partitions.push(SessionPartition::fresh(r)),
            }
        }
        s.partitions.retain(|p| !forgotten.iter().any(|(t, i)| **t == *p.topic && *i == p.partition));
        Plan::Incremental { id: session_id }
    }

    /// The partitions a session fetch covers, in session order.
    pub fn partitions(&self, id: i32) -> Vec<SessionPartition> {
        self.sessions.get(&id).map(|s| s.partitions.clone()).unwrap_or_default()
    }

    /// Records what was sent for a partition; returns whether an incremental
    /// response must include it (new data, an error, or changed offsets).
    pub fn note_sent(&mut self, id: i32, topic: &str, partition: i32, has_records: bool, error: i16, high_watermark: i64, log_start_offset: i64) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else { return true };
        let Some(p) = s.partitions.iter_mut().find(|p| &*p.topic == topic && p.partition == partition) else { return true };
        let changed = has_records
            || error != ec::NONE
            || p.last_high_watermark != high_watermark
            || p.last_log_start_offset != log_start_offset;
        p.last_high_watermark = high_watermark;
        p.last_log_start_offset = log_start_offset;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(t: &str, p: i32, off: i64) -> RequestedPartition {
        RequestedPartition { topic: t.into(), partition: p, fetch_offset: off, max_bytes: 1000 }
    }

    #[test]
    fn full_then_incremental_then_close() {
        let mut f = FetchSessions::default();
        assert_eq!(f.begin(0, 0, -1, &[req("a", 0, 0)], &[]), Plan::Sessionless);
        let Plan::Full { id } = f.begin(1, 0, 0, &[req("a", 0, 0), req("a", 1, 5)], &[]) else { panic!() };
        assert_eq!(id & 0xff, 1, "shard id is mixed into the session id");
        assert_eq!(f.partitions(id).len(), 2);
        // First send: everything is news. Second with no change: nothing to include.
        assert!(f.note_sent(id, "a", 0, false, 0, 10, 0));
        assert!(!f.note_sent(id, "a", 0, false, 0, 10, 0));
        assert!(f.note_sent(id, "a", 0, true, 0, 10, 0));
        // Incremental: epoch must be 1, then 2; an update moves the fetch offset, forgotten drops.
        assert_eq!(f.begin(1, id, 2, &[], &[]), Plan::Error(ec::INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(f.begin(1, id, 1, &[req("a", 1, 9), req("b", 0, 0)], &[("a".into(), 0)]), Plan::Incremental { id });
        let parts = f.partitions(id);
        assert_eq!(parts.iter().map(|p| (&*p.topic, p.partition, p.fetch_offset)).collect::<Vec<_>>(), vec![("a", 1, 9), ("b", 0, 0)]);
        assert_eq!(f.begin(1, id, 2, &[], &[]), Plan::Incremental { id });
        // Closing with epoch -1 makes the id unknown.
        assert_eq!(f.begin(1, id, -1, &[], &[]), Plan::Sessionless);
        assert_eq!(f.begin(1, id, 3, &[], &[]), Plan::Error(ec::FETCH_SESSION_ID_NOT_FOUND));
    }

    #[test]
    fn cache_is_bounded() {
        let mut f = FetchSessions::default();
        let mut first = None;
        for _ in 0..FETCH_SESSIONS_PER_CORE_MAX + 5 {
            let Plan::Full { id } = f.begin(0, 0, 0, &[req("a", 0, 0)], &[]) else { panic!() };
            first.get_or_insert(id);
        }
        assert_eq!(f.sessions.len(), FETCH_SESSIONS_PER_CORE_MAX);
        assert_eq!(f.begin(0, first.unwrap(), 1, &[], &[]), Plan::Error(ec::FETCH_SESSION_ID_NOT_FOUND));
    }
}
