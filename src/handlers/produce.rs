//! Produce: validate every batch on the connection's core, send each
//! partition's batches to its owner, answer when the owners have appended
//! (acks=1) or synced (acks=all); acks=0 gets no answer.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{decode, respond, HandlerError, ResponseFuture};
use crate::protocol::batch;
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{Op, ProducePart, Reply, Shard};
use crate::storage::log::AppendInfo;

/// Where one partition of the request stands: failed already, or sent to a shard.
enum Slot {
    Failed(i16, Option<String>),
    Sent { owner: usize, index: usize },
}

pub async fn start(shard: &Rc<Shard>, req: Request) -> Result<ResponseFuture, HandlerError> {
    let p: ProduceRequest = decode(&req, ApiKey::Produce)?;
    let acks = p.acks;
    let image = shard.image();
    let mut per_owner: BTreeMap<usize, Vec<ProducePart>> = BTreeMap::new();
    let mut slots: Vec<(StrBytes, Vec<(i32, Slot)>)> = Vec::new();
    for t in p.topic_data {
        let name = t.name.0.clone();
        let topic = image.topics.get(name.as_str());
        let mut parts = Vec::new();
        for pd in t.partition_data {
            let slot = if !matches!(acks, -1 | 0 | 1) {
                Slot::Failed(ec::INVALID_REQUIRED_ACKS, None)
            } else if p.transactional_id.is_some() {
                Slot::Failed(ec::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, Some("transactions are not supported yet".into()))
            } else {
                match topic.and_then(|tm| usize::try_from(pd.index).ok().and_then(|i| tm.partitions.get(i)).map(|pm| (tm, pm))) {
                    None => Slot::Failed(ec::UNKNOWN_TOPIC_OR_PARTITION, None),
                    Some((tm, pm)) => {
                        let max = shard.config.log_config(&tm.configs).max_message_bytes;
                        let records = pd.records.unwrap_or_default();
                        match batch::split_and_validate(&records, max) {
                            Err(e) => Slot::Failed(e.kafka_code(), Some(e.to_string())),
                            Ok(spans) => {
                                let batches: Vec<BytesMut> = spans
                                    .iter()
                                    .map(|s| BytesMut::from(&records[s.start..s.end]))
                                    .collect();
                                let list = per_owner.entry(pm.owner).or_default();
                                list.push(ProducePart { topic: tm.name.clone(), partition: pd.index, batches });
                                Slot::Sent { owner: pm.owner, index: list.len() - 1 }
                            }
                        }
                    }
                }
            };
            parts.push((pd.index, slot));
        }
        slots.push((name, parts));
    }
    // Dispatch now, in request order: each owner's appends are queued before the
    // next request on this connection is read.
    let mut calls = BTreeMap::new();
    for (owner, parts) in per_owner {
        let s = shard.clone();
        calls.insert(owner, glommio::spawn_local(async move { s.call(owner, Op::Produce { parts, acks }).await }));
    }
    let version = req.api_version;
    Ok(Box::pin(async move {
        let mut results: BTreeMap<usize, Vec<Result<AppendInfo, i16>>> = BTreeMap::new();
        for (owner, task) in calls {
            if let Reply::Produce(r) = task.await {
                results.insert(owner, r);
            }
        }
        if acks == 0 {
            return Ok(None);
        }
        let responses = slots
            .into_iter()
            .map(|(name, parts)| {
                let partition_responses = parts
                    .into_iter()
                    .map(|(index, slot)| {
                        let r = PartitionProduceResponse::default().with_index(index).with_base_offset(-1).with_log_append_time_ms(-1).with_log_start_offset(-1);
                        match slot {
                            Slot::Failed(code, msg) => {
                                r.with_error_code(code).with_error_message(msg.filter(|_| version >= 8).map(StrBytes::from_string))
                            }
                            Slot::Sent { owner, index: i } => {
                                match results.get(&owner).and_then(|v| v.get(i)) {
                                    Some(Ok(info)) => r
                                        .with_error_code(ec::NONE)
                                        .with_base_offset(info.base_offset)
                                        .with_log_append_time_ms(info.log_append_time)
                                        .with_log_start_offset(if version >= 5 { info.log_start_offset } else { -1 }),
                                    Some(Err(code)) => r.with_error_code(*code),
                                    None => r.with_error_code(ec::REQUEST_TIMED_OUT),
                                }
                            }
                        }
                    })
                    .collect();
                TopicProduceResponse::default().with_name(kafka_protocol::messages::TopicName(name)).with_partition_responses(partition_responses)
            })
            .collect();
        respond(&req, ApiKey::Produce, &ProduceResponse::default().with_responses(responses))
    }))
}
