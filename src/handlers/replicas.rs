//! Replica-management APIs answered for one node: ElectLeaders,
//! AlterReplicaLogDirs, AlterPartitionReassignments, ListPartitionReassignments.
//!
//! With one broker every partition has one replica, its leader, in the one log
//! directory: elections are never needed, the only valid reassignment target
//! and log directory are the current ones, and no reassignment is ever in
//! progress. The answers are Kafka's for that situation, so admin tools work;
//! replication will give them real work.

use std::rc::Rc;

use kafka_protocol::messages::*;

use super::{decode, respond, str_bytes, HandlerError};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::Shard;

type Res = Result<Option<super::Out>, HandlerError>;

const ELECTION_NOT_NEEDED: i16 = 84;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const LOG_DIR_NOT_FOUND: i16 = 57;

fn known(shard: &Shard, topic: &str, partition: i32) -> bool {
    shard.image().owner(topic, partition).is_some()
}

pub async fn elect_leaders(shard: &Rc<Shard>, req: Request) -> Res {
    use elect_leaders_response::{PartitionResult, ReplicaElectionResult};
    let body: ElectLeadersRequest = decode(&req, ApiKey::ElectLeaders)?;
    // No list means "every partition": nothing needed an election, so nothing to report.
    let results = body
        .topic_partitions
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, msg) = if known(shard, t.topic.as_str(), *p) {
                        (ELECTION_NOT_NEEDED, "Leader election not needed for topic partition.")
                    } else {
                        (ec::UNKNOWN_TOPIC_OR_PARTITION, "The partition does not exist.")
                    };
                    PartitionResult::default().with_partition_id(*p).with_error_code(code).with_error_message(Some(str_bytes(msg)))
                })
                .collect();
            ReplicaElectionResult::default().with_topic(t.topic).with_partition_result(parts)
        })
        .collect();
    respond(&req, ApiKey::ElectLeaders, &ElectLeadersResponse::default().with_replica_election_results(results))
}

pub async fn alter_replica_log_dirs(shard: &Rc<Shard>, req: Request) -> Res {
    use alter_replica_log_dirs_response::{AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult};
    let body: AlterReplicaLogDirsRequest = decode(&req, ApiKey::AlterReplicaLogDirs)?;
    let ours = shard.config.data_dir.canonicalize().unwrap_or_else(|_| shard.config.data_dir.clone());
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for d in body.dirs {
        let same = std::path::Path::new(d.path.as_str()).canonicalize().is_ok_and(|p| p == ours);
        for t in d.topics {
            let parts: Vec<AlterReplicaLogDirPartitionResult> = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if !known(shard, t.name.as_str(), *p) {
                        ec::UNKNOWN_TOPIC_OR_PARTITION
                    } else if same {
                        ec::NONE
                    } else {
                        LOG_DIR_NOT_FOUND
                    };
                    AlterReplicaLogDirPartitionResult::default().with_partition_index(*p).with_error_code(code)
                })
                .collect();
            results.push(AlterReplicaLogDirTopicResult::default().with_topic_name(t.name).with_partitions(parts));
        }
    }
    respond(&req, ApiKey::AlterReplicaLogDirs, &AlterReplicaLogDirsResponse::default().with_results(results))
}

pub async fn alter_partition_reassignments(shard: &Rc<Shard>, req: Request) -> Res {
    use alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
    let body: AlterPartitionReassignmentsRequest = decode(&req, ApiKey::AlterPartitionReassignments)?;
    let node = shard.config.node_id;
    let responses = body
        .topics
        .into_iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, msg) = if !known(shard, t.name.as_str(), p.partition_index) {
                        (ec::UNKNOWN_TOPIC_OR_PARTITION, Some("The partition does not exist."))
                    } else {
                        match &p.replicas {
                            None => (NO_REASSIGNMENT_IN_PROGRESS, Some("No reassignment in progress.")),
                            Some(r) if r.len() == 1 && r[0].0 == node => (ec::NONE, None),
                            Some(_) => (INVALID_REPLICA_ASSIGNMENT, Some("The only replica of a partition is this broker.")),
                        }
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(msg.map(str_bytes))
                })
                .collect();
            ReassignableTopicResponse::default().with_name(t.name).with_partitions(parts)
        })
        .collect();
    respond(&req, ApiKey::AlterPartitionReassignments, &AlterPartitionReassignmentsResponse::default().with_responses(responses))
}

pub async fn list_partition_reassignments(_shard: &Rc<Shard>, req: Request) -> Res {
    let _body: ListPartitionReassignmentsRequest = decode(&req, ApiKey::ListPartitionReassignments)?;
    // Nothing is ever being reassigned on one node.
    respond(&req, ApiKey::ListPartitionReassignments, &ListPartitionReassignmentsResponse::default())
}
