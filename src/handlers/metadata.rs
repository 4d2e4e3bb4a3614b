//! Metadata: brokers, topics and partitions from the shard's metadata image,
//! auto-creating requested topics when the broker allows it.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{decode, respond, str_bytes, HandlerError};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::table::{valid_topic_name, TopicMeta};
use crate::shard::{AdminOp, NewTopic, Shard};

/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (Kafka's AclOperation codes as bits).
const TOPIC_OPERATIONS_ALL: i32 = (0b11_1111 << 3) | (1 << 10) | (1 << 11);
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
const CLUSTER_OPERATIONS_ALL: i32 = (1 << 5) | (0b11_1111 << 7);

/// Creates the topics in `names` that do not exist, if auto-creation is on.
/// Returns the names that could not be created and why.
pub async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) -> Vec<(String, i16)> {
    let image = shard.image();
    let missing: Vec<String> = names.into_iter().filter(|n| !image.topics.contains_key(n)).collect();
    if missing.is_empty() || !shard.config.auto_create_topics_enable {
        return Vec::new();
    }
    let topics = missing
        .into_iter()
        .map(|name| NewTopic { name, partitions: -1, replication_factor: -1, configs: Default::default() })
        .collect();
    shard
        .admin(AdminOp::CreateTopics { topics, validate_only: false })
        .await
        .into_iter()
        .filter(|r| r.error != ec::NONE && r.error != ec::TOPIC_ALREADY_EXISTS)
        .map(|r| (r.name, r.error))
        .collect()
}

pub fn topic_response(version: i16, t: &TopicMeta, node_id: i32) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            MetadataResponsePartition::default()
                .with_error_code(ec::NONE)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(ec::NONE)
        .with_name(Some(TopicName(str_bytes(&t.name))))
        .with_topic_id(if version >= 10 { uuid::Uuid::from_bytes(t.id) } else { uuid::Uuid::nil() })
        .with_is_internal(t.name == crate::group::OFFSETS_TOPIC)
        .with_partitions(partitions)
}

pub async fn handle(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let m: MetadataRequest = decode(&req, ApiKey::Metadata)?;
    // Before v4 a request always allowed auto-creation; an empty list before v1 meant "all topics".
    let allow_create = req.api_version < 4 || m.allow_auto_topic_creation;
    let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match &m.topics {
        None => None,
        Some(v) if v.is_empty() && req.api_version == 0 => None,
        Some(v) => Some(v.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let mut failed: Vec<(String, i16)> = Vec::new();
    if let Some(req_topics) = &requested {
        if allow_create {
            let names: Vec<String> = req_topics
                .iter()
                .filter_map(|(n, _)| n.clone())
                .filter(|n| valid_topic_name(n).is_ok())
                .collect();
            failed = auto_create(shard, names).await;
        }
    }
    let image = shard.image();
    let node_id = shard.config.node_id;
    let topics: Vec<MetadataResponseTopic> = match requested {
        None => image.topics.values().map(|t| topic_response(req.api_version, t, node_id)).collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(n) => image.topics.get(n),
                    None => image.topic_by_id(id.as_bytes()),
                };
                match found {
                    Some(t) => topic_response(req.api_version, t, node_id),
                    None => {
                        let code = match &name {
                            None => ec::UNKNOWN_TOPIC_ID,
                            Some(n) if valid_topic_name(n).is_err() => ec::INVALID_TOPIC_EXCEPTION,
                            Some(n) => failed
                                .iter()
                                .find(|(f, _)| f == n)
                                .map(|&(_, c)| c)
                                .unwrap_or(ec::UNKNOWN_TOPIC_OR_PARTITION),
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(name.map(|n| TopicName(str_bytes(&n))))
                            .with_topic_id(id)
                    }
                }
            })
            .collect(),
    };
    // With no authorizer every operation is allowed; Kafka then reports these bitfields
    // (clients such as kafka-python's admin decode them, and reject Kafka's "not asked" value there).
    let topics = if req.api_version >= 8 && m.include_topic_authorized_operations {
        topics
            .into_iter()
            .map(|t| if t.error_code == ec::NONE { t.with_topic_authorized_operations(TOPIC_OPERATIONS_ALL) } else { t })
            .collect()
    } else {
        topics
    };
    let cluster_ops = if (8..=10).contains(&req.api_version) && m.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS_ALL
    } else {
        i32::MIN
    };
    let adv = shard.config.advertise;
    let body = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node_id))
            .with_host(str_bytes(&adv.ip().to_string()))
            .with_port(adv.port() as i32)])
        .with_cluster_id((req.api_version >= 2).then(|| str_bytes(&image.cluster_id)))
        .with_controller_id(BrokerId(if req.api_version >= 1 { node_id } else { -1 }))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops);
    respond(&req, ApiKey::Metadata, &body)
}
