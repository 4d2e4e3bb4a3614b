//! Consumer groups: the group coordinator and committed offsets.
//!
//! Each group id maps to one partition of the internal topic
//! `__consumer_offsets` (Kafka's hash: `abs(javaHashCode(group)) % partitions`)
//! and so to the core that owns that partition: that core's [`coordinator`]
//! holds the group and answers for it. A group request that arrives on another
//! core travels there as a [`GroupOp`] over the cross-core mesh.
//!
//! - [`state`]: the classic protocol (join, sync, heartbeat, leave, sessions,
//!   rebalance timeouts, static members, commit rules) as a state machine with
//!   no I/O, driven with the current time.
//! - [`consumer`]: the next-generation protocol (KIP-848, `group.protocol=consumer`):
//!   server-side assignment (uniform, range) handed out incrementally, without I/O.
//! - [`records`]: group metadata and committed offsets as records of
//!   `__consumer_offsets` in Kafka's formats.
//! - [`coordinator`]: the per-core glommio driver. It parks join and sync
//!   requests until the state machine answers them, ticks the clock, writes
//!   records through the partition log (commits are answered once durable),
//!   loads its partitions at start, and bounds the topic's size by rewriting
//!   the live records and dropping everything before them (a snapshot in place
//!   of compaction).
//!
//! The topic is created on first use with `offsets.topic.num.partitions`
//! partitions, and its partition count never changes afterwards.

pub mod consumer;
pub mod coordinator;
pub mod records;
pub mod state;

use bytes::Bytes;

pub use state::{Committed, GroupState, JoinRequest, JoinResponse, LeavingMember, SyncRequest, SyncResponse};

/// The internal topic holding group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka uses it to place groups.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition that holds `group`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_hash(group);
    // Kafka's Utils.abs maps i32::MIN to 0.
    let h = if h == i32::MIN { 0 } else { h.abs() };
    h % partitions.max(1)
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct CommitPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// What a group request asks the coordinating core to do.
#[derive(Debug)]
pub enum GroupOp {
    Join { group: String, req: JoinRequest },
    Sync { group: String, req: SyncRequest },
    Heartbeat { group: String, member_id: String, instance_id: Option<String>, generation: i32 },
    Leave { group: String, members: Vec<LeavingMember> },
    Commit { group: String, member_id: String, instance_id: Option<String>, generation: i32, parts: Vec<CommitPart> },
    /// TxnOffsetCommit: offsets that take effect when the producer's transaction commits.
    TxnCommit { group: String, producer_id: i64, epoch: i16, member_id: String, generation: i32, parts: Vec<CommitPart> },
    /// `None`: every partition the group has an offset for.
    FetchOffsets { group: String, parts: Option<Vec<(String, i32)>> },
    Describe { group: String },
    /// Every group this core coordinates.
    List,
    Delete { group: String },
    DeleteOffsets { group: String, parts: Vec<(String, i32)> },
    /// KIP-848.
    ConsumerHeartbeat { group: String, req: consumer::HeartbeatIn },
    ConsumerDescribe { group: String },
}

#[derive(Debug)]
pub enum GroupReply {
    Join(JoinResponse),
    Sync(SyncResponse),
    Code(i16),
    /// Per member: member id, instance id, error.
    Leave(Result<Vec<(String, Option<String>, i16)>, i16>),
    /// Per partition: topic, partition, error.
    Commit(Vec<(String, i32, i16)>),
    Offsets(Result<Vec<(String, i32, Option<Committed>)>, i16>),
    Described(Result<GroupDescription, i16>),
    Listed(Vec<GroupListing>),
    OffsetsDeleted(Result<Vec<(String, i32, i16)>, i16>),
    ConsumerHeartbeat(consumer::HeartbeatOut),
    ConsumerDescribed(Result<ConsumerDescription, i16>),
}

/// A KIP-848 group as ConsumerGroupDescribe reports it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerDescription {
    pub state: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<(consumer::TopicId, Vec<i32>)>,
    pub target_assignment: Vec<(consumer::TopicId, Vec<i32>)>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupDescription {
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, Default)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    /// "classic" or "consumer" (KIP-848).
    pub group_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_java() {
        // "hello".hashCode() == 99162322 in Java; "polygenelubricants" hashes to i32::MIN.
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(java_hash(""), 0);
    }
}
