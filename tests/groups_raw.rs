//! Group coordinator edge cases over the raw protocol (kafka-protocol
//! requests on a socket): Kafka's error codes for bad members, generations,
//! timeouts and metadata, and the bound on `__consumer_offsets` (many commits,
//! then a restart that still finds the last offset while most of the history
//! has been dropped).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(group: &str, member: &str, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"m"))])
}

fn commit(group: &str, member: &str, generation: i32, topic: &str, offset: i64, metadata: &str) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(vec![
            OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(s(metadata))),
        ])])
}

fn fetch_offset(sock: &mut std::net::TcpStream, group: &str, topic: &str) -> i64 {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(TopicName(s(topic))).with_partition_indexes(vec![0])]));
    let r = raw::call(sock, &req, 7);
    assert_eq!(r.error_code, 0, "OffsetFetch error");
    r.topics[0].partitions[0].committed_offset
}

#[test]
fn coordinator_answers_bad_requests_with_kafka_errors() {
    let b = Broker::start(2, &["group.initial.rebalance.delay.ms=0"]);
    let addr = b.addr();
    let topic = unique("graw");
    create_topic(&addr, &topic, 1, &[]);
    let group = unique("graw-g");
    let mut sock = raw::connect(b.socket_addr());

    // FindCoordinator (single and batched) names this broker.
    let fc = raw::call(&mut sock, &FindCoordinatorRequest::default().with_key(s(&group)), 3);
    assert_eq!((fc.error_code, fc.port), (0, b.port() as i32));
    let fc = raw::call(&mut sock, &FindCoordinatorRequest::default().with_coordinator_keys(vec![s(&group), s("other")]), 4);
    assert!(fc.coordinators.iter().all(|c| c.error_code == 0 && c.port == b.port() as i32));

    // Session timeout outside [6 s, 30 min].
    let r = raw::call(&mut sock, &join(&group, "", 10), 5);
    assert_eq!(r.error_code, 26, "INVALID_SESSION_TIMEOUT");
    // KIP-394: a new member gets its id with MEMBER_ID_REQUIRED, then joins with it.
    let r = raw::call(&mut sock, &join(&group, "", 10_000), 5);
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    let member = r.member_id.to_string();
    assert!(!member.is_empty());
    let r = raw::call(&mut sock, &join(&group, &member, 10_000), 5);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.leader.as_str(), member);
    assert_eq!(r.members.len(), 1);
    let generation = r.generation_id;
    // A group using another protocol type cannot be joined.
    let mut other = join(&group, "", 10_000);
    other.protocol_type = s("connect");
    assert_eq!(raw::call(&mut sock, &other, 5).error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");

    // Sync with a wrong generation, then the right one.
    let sync = |generation: i32| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(s(&member))
            .with_assignments(vec![kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(Bytes::from_static(b"assigned"))])
    };
    assert_eq!(raw::call(&mut sock, &sync(generation + 1), 3).error_code, 22, "ILLEGAL_GENERATION");
    let r = raw::call(&mut sock, &sync(generation), 3);
    assert_eq!((r.error_code, r.assignment.as_ref()), (0, &b"assigned"[..]));

    // Heartbeats: good, unknown member, stale generation.
    let hb = |m: &str, g: i32| HeartbeatRequest::default().with_group_id(GroupId(s(&group))).with_member_id(s(m)).with_generation_id(g);
    assert_eq!(raw::call(&mut sock, &hb(&member, generation), 3).error_code, 0);
    assert_eq!(raw::call(&mut sock, &hb("nobody", generation), 3).error_code, 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(raw::call(&mut sock, &hb(&member, generation - 1), 3).error_code, 22, "ILLEGAL_GENERATION");

    // Commits: a member's commit, a standalone commit to an active group, oversized metadata, unknown topic.
    let r = raw::call(&mut sock, &commit(&group, &member, generation, &topic, 7, "meta"), 7);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r = raw::call(&mut sock, &commit(&group, "", -1, &topic, 8, ""), 7);
    assert_eq!(r.topics[0].partitions[0].error_code, 25, "UNKNOWN_MEMBER_ID for a standalone commit to an active group");
    let r = raw::call(&mut sock, &commit(&group, &member, generation, &topic, 9, &"x".repeat(5000)), 7);
    assert_eq!(r.topics[0].partitions[0].error_code, 12, "OFFSET_METADATA_TOO_LARGE");
    let r = raw::call(&mut sock, &commit(&group, &member, generation, "no-such-topic", 1, ""), 7);
    assert_eq!(r.topics[0].partitions[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(fetch_offset(&mut sock, &group, &topic), 7);

    // Describe and list see the stable group; deleting it is refused while it has members.
    let d = raw::call(&mut sock, &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&group))]), 5);
    let g = &d.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str(), g.protocol_data.as_str()), (0, "Stable", "range"));
    assert_eq!(g.members[0].member_assignment.as_ref(), b"assigned");
    let l = raw::call(&mut sock, &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]), 4);
    assert!(l.groups.iter().any(|x| x.group_id.as_str() == group));
    let l = raw::call(&mut sock, &ListGroupsRequest::default().with_states_filter(vec![s("Empty")]), 4);
    assert!(!l.groups.iter().any(|x| x.group_id.as_str() == group));
    let del = |sock: &mut std::net::TcpStream| raw::call(sock, &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]), 2).results[0].error_code;
    assert_eq!(del(&mut sock), 68, "NON_EMPTY_GROUP");

    // Leave (batched form), then the group is empty and can be deleted, offsets and all.
    let leave = LeaveGroupRequest::default().with_group_id(GroupId(s(&group))).with_members(vec![
        kafka_protocol::messages::leave_group_request::MemberIdentity::default().with_member_id(s(&member)),
        kafka_protocol::messages::leave_group_request::MemberIdentity::default().with_member_id(s("ghost")),
    ]);
    let r = raw::call(&mut sock, &leave, 4);
    assert_eq!(r.members.iter().map(|m| m.error_code).collect::<Vec<_>>(), vec![0, 25]);
    assert_eq!(del(&mut sock), 0);
    assert_eq!(del(&mut sock), 69, "GROUP_ID_NOT_FOUND");
    assert_eq!(fetch_offset(&mut sock, &group, &topic), -1, "the offsets went with the group");
    // The internal topic cannot be deleted.
    let r = raw::call(&mut sock, &DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("__consumer_offsets"))]), 4);
    assert_ne!(r.responses[0].error_code, 0);
}

#[test]
fn many_commits_stay_bounded_and_survive_restart() {
    // Few offsets partitions so the test can find the group's one.
    let mut b = Broker::start(2, &["offsets.topic.num.partitions=2"]);
    let addr = b.addr();
    let topic = unique("gbound");
    create_topic(&addr, &topic, 1, &[]);
    let group = unique("gbound-g");
    let mut sock = raw::connect(b.socket_addr());
    const COMMITS: i64 = 25_000;
    for i in 1..=COMMITS {
        let r = raw::call(&mut sock, &commit(&group, "", -1, &topic, i, ""), 7);
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "commit {i}");
    }
    assert_eq!(fetch_offset(&mut sock, &group, &topic), COMMITS);
    drop(sock);
    // The snapshot runs on the coordinator's tick: wait until the history was trimmed.
    let partitions = [0, 1];
    let trimmed = wait_for("__consumer_offsets to be trimmed", Duration::from_secs(30), || {
        let starts: Vec<i64> = partitions.iter().map(|p| watermarks(&addr, "__consumer_offsets", *p).0).collect();
        starts.iter().any(|s| *s > 0).then_some(starts)
    });
    let ends: Vec<i64> = partitions.iter().map(|p| watermarks(&addr, "__consumer_offsets", *p).1).collect();
    let kept: i64 = ends.iter().zip(&trimmed).map(|(e, s)| e - s).sum();
    assert!(kept < COMMITS / 2, "most of {COMMITS} commit records dropped: {kept} kept ({trimmed:?} .. {ends:?})");

    b.kill9();
    b.restart();
    let mut sock = raw::connect(b.socket_addr());
    let got = wait_for("the group to load", Duration::from_secs(30), || {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(TopicName(s(&topic))).with_partition_indexes(vec![0])]));
        let r = raw::call(&mut sock, &req, 7);
        (r.error_code == 0).then(|| r.topics[0].partitions[0].committed_offset)
    });
    assert_eq!(got, COMMITS, "the last commit survives the snapshot, the trim and a SIGKILL");
}
