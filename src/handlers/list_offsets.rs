//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), and the first
//! offset at or after a timestamp, each answered by the partition's owner.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::{decode, respond, HandlerError};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{Op, Reply, Shard};

pub async fn handle(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let l: ListOffsetsRequest = decode(&req, ApiKey::ListOffsets)?;
    let image = shard.image();
    let mut topics = Vec::new();
    for t in l.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let epoch = image
                .topics
                .get(t.name.0.as_str())
                .and_then(|tm| usize::try_from(p.partition_index).ok().and_then(|i| tm.partitions.get(i)))
                .map(|pm| (pm.owner, pm.leader_epoch));
            let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1).with_offset(-1);
            let r = match epoch {
                None => base.with_error_code(ec::UNKNOWN_TOPIC_OR_PARTITION),
                Some((owner, leader_epoch)) => {
                    let op = Op::ListOffsets { topic: t.name.0.to_string(), partition: p.partition_index, timestamp: p.timestamp, committed: l.isolation_level == 1 };
                    match shard.call(owner, op).await {
                        Reply::ListOffsets(Ok((ts, off))) => base
                            .with_error_code(ec::NONE)
                            .with_timestamp(ts)
                            .with_offset(off)
                            .with_leader_epoch(if off >= 0 && req.api_version >= 4 { leader_epoch } else { -1 }),
                        Reply::ListOffsets(Err(code)) => base.with_error_code(code),
                        _ => base.with_error_code(ec::UNKNOWN_SERVER_ERROR),
                    }
                }
            };
            partitions.push(r);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    respond(&req, ApiKey::ListOffsets, &ListOffsetsResponse::default().with_topics(topics))
}
