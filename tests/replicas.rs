//! Replica-management APIs on one node, over the raw protocol: elections are
//! never needed, the only reassignment target and log directory are the current
//! ones, nothing is being reassigned, and CreatePartitions refuses assignments
//! naming other brokers.

mod common;

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[test]
fn single_node_answers_for_replica_apis() {
    let b = Broker::start(1, &[]);
    let addr = b.addr();
    let topic = unique("repl");
    create_topic(&addr, &topic, 2, &[]);
    let mut sock = raw::connect(b.socket_addr());
    let tn = || TopicName(s(&topic));

    let r = raw::call(&mut sock, &ElectLeadersRequest::default().with_topic_partitions(Some(vec![
        elect_leaders_request::TopicPartitions::default().with_topic(tn()).with_partitions(vec![0, 1, 9]),
    ])), 2);
    let codes: Vec<i16> = r.replica_election_results[0].partition_result.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, vec![84, 84, 3], "ELECTION_NOT_NEEDED, and UNKNOWN_TOPIC_OR_PARTITION for partition 9");

    let dirs = raw::call(&mut sock, &DescribeLogDirsRequest::default(), 1);
    let dir = dirs.results[0].log_dir.to_string();
    let alter = |path: &str| {
        AlterReplicaLogDirsRequest::default().with_dirs(vec![alter_replica_log_dirs_request::AlterReplicaLogDir::default()
            .with_path(s(path))
            .with_topics(vec![alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default().with_name(tn()).with_partitions(vec![0])])])
    };
    assert_eq!(raw::call(&mut sock, &alter(&dir), 1).results[0].partitions[0].error_code, 0, "moving to its own dir is a no-op");
    assert_eq!(raw::call(&mut sock, &alter("/nonexistent/dir"), 1).results[0].partitions[0].error_code, 57, "LOG_DIR_NOT_FOUND");

    let reassign = |replicas: Option<Vec<i32>>| {
        AlterPartitionReassignmentsRequest::default().with_topics(vec![alter_partition_reassignments_request::ReassignableTopic::default()
            .with_name(tn())
            .with_partitions(vec![alter_partition_reassignments_request::ReassignablePartition::default()
                .with_partition_index(0)
                .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))])])
    };
    let code = |r: AlterPartitionReassignmentsResponse| r.responses[0].partitions[0].error_code;
    assert_eq!(code(raw::call(&mut sock, &reassign(Some(vec![1])), 0)), 0);
    assert_eq!(code(raw::call(&mut sock, &reassign(Some(vec![1, 2])), 0)), 39, "INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(code(raw::call(&mut sock, &reassign(None), 0)), 85, "NO_REASSIGNMENT_IN_PROGRESS");
    assert!(raw::call(&mut sock, &ListPartitionReassignmentsRequest::default(), 0).topics.is_empty());

    let grow = |assign: Vec<Vec<i32>>| {
        CreatePartitionsRequest::default().with_timeout_ms(5000).with_topics(vec![create_partitions_request::CreatePartitionsTopic::default()
            .with_name(tn())
            .with_count(2 + assign.len() as i32)
            .with_assignments(Some(assign.into_iter().map(|a| create_partitions_request::CreatePartitionsAssignment::default().with_broker_ids(a.into_iter().map(BrokerId).collect())).collect()))])
    };
    assert_eq!(raw::call(&mut sock, &grow(vec![vec![7], vec![7, 8]]), 3).results[0].error_code, 39);
    assert_eq!(partition_count(&addr, &topic), Some(2));
    assert_eq!(raw::call(&mut sock, &grow(vec![vec![1]]), 3).results[0].error_code, 0);
    assert_eq!(partition_count(&addr, &topic), Some(3));
}
