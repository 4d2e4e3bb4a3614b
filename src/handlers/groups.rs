//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups,
//! DeleteGroups, OffsetDelete.
//!
//! Each request is decoded here, on the connection's core, and turned into
//! [`GroupOp`]s for the core that coordinates the group (see [`crate::group`]);
//! ListGroups asks every core.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{decode, respond, str_bytes, HandlerError};
use crate::group::{
    partition_for, state, CommitPart, Committed, GroupOp, GroupReply, LeavingMember, OFFSETS_TOPIC,
};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{Reply, Shard};

type Res = Result<Option<super::Out>, HandlerError>;

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn sopt(s: &Option<String>) -> Option<StrBytes> {
    s.as_deref().map(str_bytes)
}

/// Creates `__consumer_offsets` when it does not exist yet; returns its partition count.
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<i32, i16> {
    crate::shard::internal::ensure_topic(shard, OFFSETS_TOPIC, shard.config.group.offsets_topic_partitions).await
}

/// Sends `op` to the core coordinating `group`. `None`: no coordinator could be reached.
pub async fn call(shard: &Rc<Shard>, group: &str, op: GroupOp) -> Result<GroupReply, i16> {
    let n = ensure_offsets_topic(shard).await?;
    let p = partition_for(group, n);
    let owner = shard.image().owner(OFFSETS_TOPIC, p).ok_or(ec::COORDINATOR_NOT_AVAILABLE)?;
    match shard.call(owner, crate::shard::Op::Group(op)).await {
        Reply::Group(r) => Ok(r),
        _ => Err(ec::COORDINATOR_NOT_AVAILABLE),
    }
}

pub async fn find_coordinator(shard: &Rc<Shard>, req: Request) -> Res {
    let body: FindCoordinatorRequest = decode(&req, ApiKey::FindCoordinator)?;
    let keys: Vec<StrBytes> = if req.api_version >= 4 { body.coordinator_keys.clone() } else { vec![body.key.clone()] };
    let valid_type = body.key_type == 0 || body.key_type == 1;
    let ready = match body.key_type {
        0 => ensure_offsets_topic(shard).await.err(),
        1 => super::txn::ensure_txn_topic(shard).await.err(),
        _ => None,
    };
    let addr = shard.config.advertise;
    let node = shard.config.node_id;
    let answer = |key: &StrBytes| -> (i16, Option<&'static str>) {
        if !valid_type {
            (ec::INVALID_REQUEST, Some("unknown coordinator key type"))
        } else if key.is_empty() && body.key_type == 0 {
            (ec::INVALID_REQUEST, Some("empty group id"))
        } else if let Some(e) = ready {
            (e, None)
        } else {
            (ec::NONE, None)
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if req.api_version >= 4 {
        resp.coordinators = keys
            .iter()
            .map(|k| {
                let (e, msg) = answer(k);
                let mut c = Coordinator::default().with_key(k.clone()).with_error_code(e).with_error_message(msg.map(str_bytes));
                if e == ec::NONE {
                    c = c.with_node_id(BrokerId(node)).with_host(str_bytes(&addr.ip().to_string())).with_port(addr.port() as i32);
                } else {
                    c = c.with_node_id(BrokerId(-1)).with_port(-1);
                }
                c
            })
            .collect();
    } else {
        let (e, msg) = answer(&keys[0]);
        resp.error_code = e;
        if req.api_version >= 1 {
            resp.error_message = msg.map(str_bytes);
        }
        if e == ec::NONE {
            resp.node_id = BrokerId(node);
            resp.host = str_bytes(&addr.ip().to_string());
            resp.port = addr.port() as i32;
        } else {
            resp.node_id = BrokerId(-1);
            resp.port = -1;
        }
    }
    respond(&req, ApiKey::FindCoordinator, &resp)
}

pub async fn join_group(shard: &Rc<Shard>, req: Request) -> Res {
    let body: JoinGroupRequest = decode(&req, ApiKey::JoinGroup)?;
    let v = req.api_version;
    let group = body.group_id.to_string();
    let fail = |e: i16| JoinGroupResponse::default().with_error_code(e).with_generation_id(-1).with_member_id(body.member_id.clone());
    if group.is_empty() {
        return respond(&req, ApiKey::JoinGroup, &fail(ec::INVALID_GROUP_ID));
    }
    let jr = state::JoinRequest {
        member_id: body.member_id.to_string(),
        instance_id: if v >= 5 { opt(&body.group_instance_id) } else { None },
        protocol_type: body.protocol_type.to_string(),
        protocols: body.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        session_timeout_ms: body.session_timeout_ms as i64,
        rebalance_timeout_ms: if v >= 1 { body.rebalance_timeout_ms as i64 } else { body.session_timeout_ms as i64 },
        client_id: req.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: req.peer.map(|p| format!("/{p}")).unwrap_or_default(),
        require_known_member_id: v >= 4,
    };
    let r = match call(shard, &group, GroupOp::Join { group: group.clone(), req: jr }).await {
        Ok(GroupReply::Join(r)) => r,
        Ok(_) => return respond(&req, ApiKey::JoinGroup, &fail(ec::UNKNOWN_SERVER_ERROR)),
        Err(e) => return respond(&req, ApiKey::JoinGroup, &fail(e)),
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(if r.error == ec::NONE { r.generation } else { -1 })
        .with_leader(str_bytes(&r.leader))
        .with_member_id(str_bytes(&r.member_id))
        .with_members(
            r.members
                .iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(if v >= 5 { sopt(&m.instance_id) } else { None })
                        .with_metadata(m.metadata.clone())
                })
                .collect(),
        );
    if v >= 7 {
        resp.protocol_type = sopt(&r.protocol_type);
        resp.protocol_name = sopt(&r.protocol_name);
    } else {
        // Before v7 the protocol name is a non-null string.
        resp.protocol_name = Some(str_bytes(r.protocol_name.as_deref().unwrap_or("")));
    }
    if v >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    respond(&req, ApiKey::JoinGroup, &resp)
}

pub async fn sync_group(shard: &Rc<Shard>, req: Request) -> Res {
    let body: SyncGroupRequest = decode(&req, ApiKey::SyncGroup)?;
    let v = req.api_version;
    let group = body.group_id.to_string();
    if group.is_empty() {
        return respond(&req, ApiKey::SyncGroup, &SyncGroupResponse::default().with_error_code(ec::INVALID_GROUP_ID));
    }
    let sr = state::SyncRequest {
        member_id: body.member_id.to_string(),
        instance_id: if v >= 3 { opt(&body.group_instance_id) } else { None },
        generation: body.generation_id,
        protocol_type: if v >= 5 { opt(&body.protocol_type) } else { None },
        protocol_name: if v >= 5 { opt(&body.protocol_name) } else { None },
        assignments: body.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    let r = match call(shard, &group, GroupOp::Sync { group: group.clone(), req: sr }).await {
        Ok(GroupReply::Sync(r)) => r,
        Ok(_) => state::SyncResponse { error: ec::UNKNOWN_SERVER_ERROR, ..Default::default() },
        Err(e) => state::SyncResponse { error: e, ..Default::default() },
    };
    let mut resp = SyncGroupResponse::default().with_error_code(r.error).with_assignment(r.assignment);
    if v >= 5 {
        resp.protocol_type = sopt(&r.protocol_type);
        resp.protocol_name = sopt(&r.protocol_name);
    }
    respond(&req, ApiKey::SyncGroup, &resp)
}

pub async fn heartbeat(shard: &Rc<Shard>, req: Request) -> Res {
    let body: HeartbeatRequest = decode(&req, ApiKey::Heartbeat)?;
    let group = body.group_id.to_string();
    let code = if group.is_empty() {
        ec::INVALID_GROUP_ID
    } else {
        let op = GroupOp::Heartbeat {
            group: group.clone(),
            member_id: body.member_id.to_string(),
            instance_id: if req.api_version >= 3 { opt(&body.group_instance_id) } else { None },
            generation: body.generation_id,
        };
        match call(shard, &group, op).await {
            Ok(GroupReply::Code(c)) => c,
            Ok(_) => ec::UNKNOWN_SERVER_ERROR,
            Err(e) => e,
        }
    };
    respond(&req, ApiKey::Heartbeat, &HeartbeatResponse::default().with_error_code(code))
}

pub async fn leave_group(shard: &Rc<Shard>, req: Request) -> Res {
    let body: LeaveGroupRequest = decode(&req, ApiKey::LeaveGroup)?;
    let v = req.api_version;
    let group = body.group_id.to_string();
    let members: Vec<LeavingMember> = if v >= 3 {
        body.members
            .iter()
            .map(|m| LeavingMember { member_id: m.member_id.to_string(), instance_id: opt(&m.group_instance_id) })
            .collect()
    } else {
        vec![LeavingMember { member_id: body.member_id.to_string(), instance_id: None }]
    };
    let result = if group.is_empty() {
        Err(ec::INVALID_GROUP_ID)
    } else {
        match call(shard, &group, GroupOp::Leave { group: group.clone(), members }).await {
            Ok(GroupReply::Leave(r)) => r,
            Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
            Err(e) => Err(e),
        }
    };
    let resp = match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(e),
        Ok(per_member) => {
            if v >= 3 {
                LeaveGroupResponse::default().with_members(
                    per_member
                        .iter()
                        .map(|(m, i, e)| {
                            MemberResponse::default()
                                .with_member_id(str_bytes(m))
                                .with_group_instance_id(sopt(i))
                                .with_error_code(*e)
                        })
                        .collect(),
                )
            } else {
                LeaveGroupResponse::default().with_error_code(per_member.first().map(|r| r.2).unwrap_or(ec::NONE))
            }
        }
    };
    respond(&req, ApiKey::LeaveGroup, &resp)
}

pub async fn offset_commit(shard: &Rc<Shard>, req: Request) -> Res {
    let body: OffsetCommitRequest = decode(&req, ApiKey::OffsetCommit)?;
    let v = req.api_version;
    let group = body.group_id.to_string();
    let parts: Vec<CommitPart> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| CommitPart {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                metadata: opt(&p.committed_metadata),
            })
        })
        .collect();
    let results: Vec<(String, i32, i16)> = if group.is_empty() {
        parts.into_iter().map(|c| (c.topic, c.partition, ec::INVALID_GROUP_ID)).collect()
    } else {
        let fallback: Vec<(String, i32)> = parts.iter().map(|c| (c.topic.clone(), c.partition)).collect();
        let op = GroupOp::Commit {
            group: group.clone(),
            member_id: body.member_id.to_string(),
            instance_id: if v >= 7 { opt(&body.group_instance_id) } else { None },
            generation: body.generation_id_or_member_epoch,
            parts,
        };
        match call(shard, &group, op).await {
            Ok(GroupReply::Commit(r)) => r,
            Ok(_) => fallback.into_iter().map(|(t, p)| (t, p, ec::UNKNOWN_SERVER_ERROR)).collect(),
            Err(e) => fallback.into_iter().map(|(t, p)| (t, p, e)).collect(),
        }
    };
    // Group the answers back by topic, in request order.
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (t, p, e) in results {
        let part = OffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(e);
        match topics.last_mut().filter(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(OffsetCommitResponseTopic::default().with_name(TopicName(str_bytes(&t))).with_partitions(vec![part])),
        }
    }
    respond(&req, ApiKey::OffsetCommit, &OffsetCommitResponse::default().with_topics(topics))
}

type Fetched = Result<Vec<(String, i32, Option<Committed>)>, i16>;

async fn fetch_group_offsets(shard: &Rc<Shard>, group: &str, parts: Option<Vec<(String, i32)>>) -> Fetched {
    if group.is_empty() {
        return Err(ec::INVALID_GROUP_ID);
    }
    match call(shard, group, GroupOp::FetchOffsets { group: group.to_string(), parts }).await {
        Ok(GroupReply::Offsets(r)) => r,
        Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
        Err(e) => Err(e),
    }
}

/// (offset, epoch, metadata) as OffsetFetch reports them; -1 and "" when nothing is committed.
fn committed_fields(c: &Option<Committed>) -> (i64, i32, Option<StrBytes>) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, Some(str_bytes(&c.metadata))),
        None => (-1, -1, Some(str_bytes(""))),
    }
}

pub async fn offset_fetch(shard: &Rc<Shard>, req: Request) -> Res {
    let body: OffsetFetchRequest = decode(&req, ApiKey::OffsetFetch)?;
    let v = req.api_version;
    if v >= 8 {
        let mut groups = Vec::with_capacity(body.groups.len());
        for g in &body.groups {
            let parts = g.topics.as_ref().map(|ts| {
                ts.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.to_string(), *p))).collect::<Vec<_>>()
            });
            let r = fetch_group_offsets(shard, g.group_id.as_str(), parts).await;
            let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            match r {
                Err(e) => out.error_code = e,
                Ok(list) => {
                    for (t, p, c) in list {
                        let (offset, epoch, meta) = committed_fields(&c);
                        let part = OffsetFetchResponsePartitions::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(epoch)
                            .with_metadata(meta);
                        match out.topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                            Some(x) => x.partitions.push(part),
                            None => out.topics.push(
                                OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(&t))).with_partitions(vec![part]),
                            ),
                        }
                    }
                }
            }
            groups.push(out);
        }
        return respond(&req, ApiKey::OffsetFetch, &OffsetFetchResponse::default().with_groups(groups));
    }
    let parts = body.topics.as_ref().map(|ts| {
        ts.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.to_string(), *p))).collect::<Vec<_>>()
    });
    let requested = parts.clone();
    let r = fetch_group_offsets(shard, body.group_id.as_str(), parts).await;
    let mut resp = OffsetFetchResponse::default();
    match r {
        Err(e) => {
            if v >= 2 {
                resp.error_code = e;
            }
            // Before v2 the error travels in every partition.
            if let Some(req_parts) = requested {
                for (t, p) in req_parts {
                    let part = OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(-1)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(str_bytes("")))
                        .with_error_code(e);
                    push_part(&mut resp.topics, &t, part);
                }
            }
        }
        Ok(list) => {
            for (t, p, c) in list {
                let (offset, epoch, meta) = committed_fields(&c);
                let part = OffsetFetchResponsePartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(epoch)
                    .with_metadata(meta);
                push_part(&mut resp.topics, &t, part);
            }
        }
    }
    respond(&req, ApiKey::OffsetFetch, &resp)
}

fn push_part(topics: &mut Vec<OffsetFetchResponseTopic>, t: &str, part: OffsetFetchResponsePartition) {
    match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
        Some(x) => x.partitions.push(part),
        None => topics.push(OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(t))).with_partitions(vec![part])),
    }
}

pub async fn describe_groups(shard: &Rc<Shard>, req: Request) -> Res {
    let body: DescribeGroupsRequest = decode(&req, ApiKey::DescribeGroups)?;
    let mut groups = Vec::with_capacity(body.groups.len());
    for gid in &body.groups {
        let group = gid.to_string();
        let r = if group.is_empty() {
            Err(ec::INVALID_GROUP_ID)
        } else {
            match call(shard, &group, GroupOp::Describe { group: group.clone() }).await {
                Ok(GroupReply::Described(r)) => r,
                Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
                Err(e) => Err(e),
            }
        };
        let mut d = DescribedGroup::default().with_group_id(gid.clone());
        if body.include_authorized_operations && req.api_version >= 3 {
            // READ, DESCRIBE, DELETE (no authorizer: everything is allowed).
            d.authorized_operations = (1 << 3) | (1 << 6) | (1 << 8);
        } else {
            d.authorized_operations = i32::MIN;
        }
        match r {
            Err(e) => {
                d.error_code = e;
                d.group_state = str_bytes("");
            }
            Ok(desc) => {
                d.group_state = str_bytes(&desc.state);
                d.protocol_type = str_bytes(&desc.protocol_type);
                d.protocol_data = str_bytes(&desc.protocol);
                d.members = desc
                    .members
                    .iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_group_instance_id(if req.api_version >= 4 { sopt(&m.instance_id) } else { None })
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(&m.client_host))
                            .with_member_metadata(m.metadata.clone())
                            .with_member_assignment(m.assignment.clone())
                    })
                    .collect();
            }
        }
        groups.push(d);
    }
    respond(&req, ApiKey::DescribeGroups, &DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn list_groups(shard: &Rc<Shard>, req: Request) -> Res {
    let body: ListGroupsRequest = decode(&req, ApiKey::ListGroups)?;
    let states: Vec<String> = body.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let types: Vec<String> = body.types_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut listed = Vec::new();
    for s in 0..shard.nr_shards {
        if let Reply::Group(GroupReply::Listed(l)) = shard.call(s, crate::shard::Op::Group(GroupOp::List)).await {
            listed.extend(l);
        }
    }
    let groups = listed
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.contains(&g.group_type.to_ascii_lowercase()))
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type));
            if req.api_version >= 4 {
                l.group_state = str_bytes(&g.state);
            }
            if req.api_version >= 5 {
                l.group_type = str_bytes(&g.group_type);
            }
            l
        })
        .collect();
    respond(&req, ApiKey::ListGroups, &ListGroupsResponse::default().with_groups(groups))
}

pub async fn delete_groups(shard: &Rc<Shard>, req: Request) -> Res {
    let body: DeleteGroupsRequest = decode(&req, ApiKey::DeleteGroups)?;
    let mut results = Vec::with_capacity(body.groups_names.len());
    for gid in &body.groups_names {
        let group = gid.to_string();
        let code = if group.is_empty() {
            ec::INVALID_GROUP_ID
        } else {
            match call(shard, &group, GroupOp::Delete { group: group.clone() }).await {
                Ok(GroupReply::Code(c)) => c,
                Ok(_) => ec::UNKNOWN_SERVER_ERROR,
                Err(e) => e,
            }
        };
        results.push(DeletableGroupResult::default().with_group_id(gid.clone()).with_error_code(code));
    }
    respond(&req, ApiKey::DeleteGroups, &DeleteGroupsResponse::default().with_results(results))
}

pub async fn offset_delete(shard: &Rc<Shard>, req: Request) -> Res {
    let body: OffsetDeleteRequest = decode(&req, ApiKey::OffsetDelete)?;
    let group = body.group_id.to_string();
    let parts: Vec<(String, i32)> =
        body.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index))).collect();
    let r = if group.is_empty() {
        Err(ec::INVALID_GROUP_ID)
    } else {
        match call(shard, &group, GroupOp::DeleteOffsets { group: group.clone(), parts }).await {
            Ok(GroupReply::OffsetsDeleted(r)) => r,
            Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
            Err(e) => Err(e),
        }
    };
    let resp = match r {
        Err(e) => OffsetDeleteResponse::default().with_error_code(e),
        Ok(list) => {
            let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
            for (t, p, e) in list {
                let part = OffsetDeleteResponsePartition::default().with_partition_index(p).with_error_code(e);
                match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                    Some(x) => x.partitions.push(part),
                    None => topics.push(OffsetDeleteResponseTopic::default().with_name(TopicName(str_bytes(&t))).with_partitions(vec![part])),
                }
            }
            OffsetDeleteResponse::default().with_topics(topics)
        }
    };
    respond(&req, ApiKey::OffsetDelete, &resp)
}

pub async fn consumer_group_heartbeat(shard: &Rc<Shard>, req: Request) -> Res {
    use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
    let body: ConsumerGroupHeartbeatRequest = decode(&req, ApiKey::ConsumerGroupHeartbeat)?;
    let group = body.group_id.to_string();
    let hb = crate::group::consumer::HeartbeatIn {
        member_id: body.member_id.to_string(),
        member_epoch: body.member_epoch,
        instance_id: opt(&body.instance_id),
        rack_id: opt(&body.rack_id),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        subscribed_topic_names: body.subscribed_topic_names.as_ref().map(|v| v.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: if req.api_version >= 1 { opt(&body.subscribed_topic_regex) } else { None },
        server_assignor: opt(&body.server_assignor),
        owned: body.topic_partitions.as_ref().map(|v| v.iter().map(|t| (*t.topic_id.as_bytes(), t.partitions.clone())).collect()),
        client_id: req.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: req.peer.map(|p| format!("/{p}")).unwrap_or_default(),
    };
    let out = if group.is_empty() {
        crate::group::consumer::HeartbeatOut { error: ec::INVALID_GROUP_ID, member_epoch: body.member_epoch, ..Default::default() }
    } else {
        match call(shard, &group, GroupOp::ConsumerHeartbeat { group: group.clone(), req: hb }).await {
            Ok(GroupReply::ConsumerHeartbeat(r)) => r,
            Ok(_) => crate::group::consumer::HeartbeatOut { error: ec::UNKNOWN_SERVER_ERROR, ..Default::default() },
            Err(e) => crate::group::consumer::HeartbeatOut { error: e, member_epoch: body.member_epoch, ..Default::default() },
        }
    };
    let mut resp = ConsumerGroupHeartbeatResponse::default()
        .with_error_code(out.error)
        .with_error_message(out.message.as_deref().map(str_bytes))
        .with_member_id(if out.member_id.is_empty() { None } else { Some(str_bytes(&out.member_id)) })
        .with_member_epoch(out.member_epoch)
        .with_heartbeat_interval_ms(out.heartbeat_interval_ms);
    if out.error == ec::NONE {
        resp.assignment = out.assignment.map(|a| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(id, ps)| TopicPartitions::default().with_topic_id(uuid::Uuid::from_bytes(id)).with_partitions(ps))
                    .collect(),
            )
        });
    }
    respond(&req, ApiKey::ConsumerGroupHeartbeat, &resp)
}

pub async fn consumer_group_describe(shard: &Rc<Shard>, req: Request) -> Res {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup as Described, Member, TopicPartitions,
    };
    let body: ConsumerGroupDescribeRequest = decode(&req, ApiKey::ConsumerGroupDescribe)?;
    let image = shard.image();
    let to_assignment = |list: &[(crate::group::consumer::TopicId, Vec<i32>)]| {
        Assignment::default().with_topic_partitions(
            list.iter()
                .map(|(id, ps)| {
                    let name = image.topic_by_id(id).map(|t| t.name.clone()).unwrap_or_default();
                    TopicPartitions::default()
                        .with_topic_id(uuid::Uuid::from_bytes(*id))
                        .with_topic_name(TopicName(str_bytes(&name)))
                        .with_partitions(ps.clone())
                })
                .collect(),
        )
    };
    let mut groups = Vec::with_capacity(body.group_ids.len());
    for gid in &body.group_ids {
        let group = gid.to_string();
        let r = if group.is_empty() {
            Err(ec::INVALID_GROUP_ID)
        } else {
            match call(shard, &group, GroupOp::ConsumerDescribe { group: group.clone() }).await {
                Ok(GroupReply::ConsumerDescribed(r)) => r,
                Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
                Err(e) => Err(e),
            }
        };
        let mut d = Described::default().with_group_id(gid.clone()).with_authorized_operations(i32::MIN);
        match r {
            Err(e) => {
                d.error_code = e;
                if e == ec::GROUP_ID_NOT_FOUND {
                    d.error_message = Some(str_bytes(&format!("Group {group} not found.")));
                }
            }
            Ok(c) => {
                d.group_state = str_bytes(&c.state);
                d.group_epoch = c.group_epoch;
                d.assignment_epoch = c.assignment_epoch;
                d.assignor_name = str_bytes(&c.assignor);
                d.members = c
                    .members
                    .iter()
                    .map(|m| {
                        Member::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_instance_id(sopt(&m.instance_id))
                            .with_rack_id(sopt(&m.rack_id))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(&m.client_host))
                            .with_subscribed_topic_names(m.subscribed_topic_names.iter().map(|t| TopicName(str_bytes(t))).collect())
                            .with_subscribed_topic_regex(sopt(&m.subscribed_topic_regex))
                            .with_assignment(to_assignment(&m.assignment))
                            .with_target_assignment(to_assignment(&m.target_assignment))
                    })
                    .collect();
            }
        }
        groups.push(d);
    }
    respond(&req, ApiKey::ConsumerGroupDescribe, &ConsumerGroupDescribeResponse::default().with_groups(groups))
}
