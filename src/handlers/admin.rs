//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions),
//! DeleteRecords, DescribeCluster and DescribeLogDirs.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{decode, respond, str_bytes, HandlerError};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{AdminOp, NewTopic, Op, Reply, Shard};

fn msg(m: Option<String>) -> Option<StrBytes> {
    m.map(StrBytes::from_string)
}

pub async fn create_topics(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let c: CreateTopicsRequest = decode(&req, ApiKey::CreateTopics)?;
    let mut topics = Vec::new();
    let mut bad = Vec::new();
    for t in c.topics {
        if !t.assignments.is_empty() {
            bad.push((t.name.clone(), ec::INVALID_REQUEST, "manual replica assignment is not supported".to_string()));
            continue;
        }
        let mut configs = BTreeMap::new();
        for cfg in t.configs {
            if let Some(v) = cfg.value {
                configs.insert(cfg.name.to_string(), v.to_string());
            }
        }
        topics.push(NewTopic { name: t.name.0.to_string(), partitions: t.num_partitions, replication_factor: t.replication_factor, configs });
    }
    let results = shard.admin(AdminOp::CreateTopics { topics, validate_only: c.validate_only }).await;
    let v = req.api_version;
    let mut out: Vec<CreatableTopicResult> = results
        .into_iter()
        .map(|r| {
            let ok = r.error == ec::NONE;
            CreatableTopicResult::default()
                .with_name(TopicName(str_bytes(&r.name)))
                .with_topic_id(if v >= 7 { uuid::Uuid::from_bytes(r.topic_id) } else { uuid::Uuid::nil() })
                .with_error_code(r.error)
                .with_error_message(msg(r.message))
                .with_num_partitions(if ok && v >= 5 { r.partitions } else { -1 })
                .with_replication_factor(if ok && v >= 5 { 1 } else { -1 })
        })
        .collect();
    for (name, code, m) in bad {
        out.push(CreatableTopicResult::default().with_name(name).with_error_code(code).with_error_message(msg(Some(m))).with_num_partitions(-1).with_replication_factor(-1));
    }
    respond(&req, ApiKey::CreateTopics, &CreateTopicsResponse::default().with_topics(out))
}

pub async fn delete_topics(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let d: DeleteTopicsRequest = decode(&req, ApiKey::DeleteTopics)?;
    let image = shard.image();
    let mut names: Vec<String> = d.topic_names.iter().map(|n| n.0.to_string()).collect();
    let mut unknown_ids = Vec::new();
    for t in &d.topics {
        match (&t.name, image.topic_by_id(t.topic_id.as_bytes())) {
            (Some(n), _) => names.push(n.0.to_string()),
            (None, Some(tm)) => names.push(tm.name.clone()),
            (None, None) => unknown_ids.push(t.topic_id),
        }
    }
    let results = shard.admin(AdminOp::DeleteTopics { names }).await;
    let v = req.api_version;
    let mut out: Vec<DeletableTopicResult> = results
        .into_iter()
        .map(|r| {
            DeletableTopicResult::default()
                .with_name(Some(TopicName(str_bytes(&r.name))))
                .with_topic_id(if v >= 6 { uuid::Uuid::from_bytes(r.topic_id) } else { uuid::Uuid::nil() })
                .with_error_code(r.error)
                .with_error_message(if v >= 5 { msg(r.message) } else { None })
        })
        .collect();
    for id in unknown_ids {
        out.push(DeletableTopicResult::default().with_topic_id(id).with_error_code(ec::UNKNOWN_TOPIC_ID));
    }
    respond(&req, ApiKey::DeleteTopics, &DeleteTopicsResponse::default().with_responses(out))
}

pub async fn create_partitions(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let c: CreatePartitionsRequest = decode(&req, ApiKey::CreatePartitions)?;
    // Manual assignments may only name this broker, one replica per new partition (as Kafka
    // checks them against the live brokers and the replication factor).
    let node = shard.config.node_id;
    let bad_assignment = |t: &kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic| {
        t.assignments.as_ref().is_some_and(|a| a.iter().any(|x| x.broker_ids.len() != 1 || x.broker_ids[0].0 != node))
    };
    let rejected: Vec<CreatePartitionsTopicResult> = c
        .topics
        .iter()
        .filter(|t| bad_assignment(t))
        .map(|t| {
            CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(39)
                .with_error_message(msg(Some(format!("Replica assignment for topic {} must name only broker {node}, once per partition.", t.name.as_str()))))
        })
        .collect();
    let topics = c.topics.iter().filter(|t| !bad_assignment(t)).map(|t| (t.name.0.to_string(), t.count)).collect();
    let results = shard.admin(AdminOp::CreatePartitions { topics, validate_only: c.validate_only }).await;
    let out = rejected
        .into_iter()
        .chain(results.into_iter().map(|r| {
            CreatePartitionsTopicResult::default()
                .with_name(TopicName(str_bytes(&r.name)))
                .with_error_code(r.error)
                .with_error_message(msg(r.message))
        }))
        .collect();
    respond(&req, ApiKey::CreatePartitions, &CreatePartitionsResponse::default().with_results(out))
}

pub async fn delete_records(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let d: DeleteRecordsRequest = decode(&req, ApiKey::DeleteRecords)?;
    let image = shard.image();
    let mut topics = Vec::new();
    for t in d.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let owner = image.owner(t.name.0.as_str(), p.partition_index);
            let base = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index).with_low_watermark(-1);
            let r = match owner {
                None => base.with_error_code(ec::UNKNOWN_TOPIC_OR_PARTITION),
                Some(owner) => {
                    let op = Op::DeleteRecords { topic: t.name.0.to_string(), partition: p.partition_index, offset: p.offset };
                    match shard.call(owner, op).await {
                        Reply::DeleteRecords(Ok(low)) => base.with_error_code(ec::NONE).with_low_watermark(low),
                        Reply::DeleteRecords(Err(code)) => base.with_error_code(code),
                        _ => base.with_error_code(ec::UNKNOWN_SERVER_ERROR),
                    }
                }
            };
            partitions.push(r);
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions));
    }
    respond(&req, ApiKey::DeleteRecords, &DeleteRecordsResponse::default().with_topics(topics))
}

pub async fn describe_cluster(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let _d: DescribeClusterRequest = decode(&req, ApiKey::DescribeCluster)?;
    let image = shard.image();
    let adv = shard.config.advertise;
    let node = BrokerId(shard.config.node_id);
    let body = DescribeClusterResponse::default()
        .with_error_code(ec::NONE)
        .with_cluster_id(str_bytes(&image.cluster_id))
        .with_controller_id(node)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(str_bytes(&adv.ip().to_string()))
            .with_port(adv.port() as i32)]);
    respond(&req, ApiKey::DescribeCluster, &body)
}

pub async fn describe_log_dirs(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let d: DescribeLogDirsRequest = decode(&req, ApiKey::DescribeLogDirs)?;
    let mut sizes: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for s in 0..shard.nr_shards {
        if let Reply::LogDirs(v) = shard.call(s, Op::LogDirs).await {
            for (t, p, size) in v {
                sizes.entry(t).or_default().push((p, size));
            }
        }
    }
    let wanted = |t: &str, p: i32| -> bool {
        match &d.topics {
            None => true,
            Some(list) => list.iter().any(|x| x.topic.0.as_str() == t && x.partitions.contains(&p)),
        }
    };
    let topics: Vec<DescribeLogDirsTopic> = sizes
        .into_iter()
        .filter_map(|(t, mut parts)| {
            parts.sort_unstable();
            let partitions: Vec<DescribeLogDirsPartition> = parts
                .into_iter()
                .filter(|&(p, _)| wanted(&t, p))
                .map(|(p, size)| DescribeLogDirsPartition::default().with_partition_index(p).with_partition_size(size as i64))
                .collect();
            (!partitions.is_empty()).then(|| DescribeLogDirsTopic::default().with_name(TopicName(str_bytes(&t))).with_partitions(partitions))
        })
        .collect();
    let dir = shard.config.data_dir.canonicalize().unwrap_or_else(|_| shard.config.data_dir.clone());
    let (total, usable) = disk_space(&dir);
    let body = DescribeLogDirsResponse::default().with_error_code(ec::NONE).with_results(vec![DescribeLogDirsResult::default()
        .with_error_code(ec::NONE)
        .with_log_dir(str_bytes(&dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(if req.api_version >= 4 { total } else { -1 })
        .with_usable_bytes(if req.api_version >= 4 { usable } else { -1 })]);
    respond(&req, ApiKey::DescribeLogDirs, &body)
}

fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return (-1, -1) };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (-1, -1);
    }
    ((s.f_blocks as i64) * s.f_frsize as i64, (s.f_bavail as i64) * s.f_frsize as i64)
}
