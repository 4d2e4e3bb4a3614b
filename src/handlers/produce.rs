//! Produce: validate every batch on the connection's core, send each
//! partition's batches to its owner, answer when the owners have written the
//! batches to their files (acks=1) or synced them (acks=all); acks=0 gets no answer.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{decode, HandlerError, ResponseFuture};
use crate::protocol::batch;
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{Appended, Op, ProducePart, Reply, Shard};
use crate::storage::log::AppendInfo;

/// Where one partition of the request stands: failed already, or sent to a shard.
enum Slot {
    Failed(i16, Option<String>),
    /// INVALID_RECORD with the failing records' indexes in the batch (Produce v8+ record errors).
    BadRecords(String, Vec<i32>),
    Sent { owner: usize, index: usize },
}

/// For a compacted topic: the indexes of the records without a key in the uncompressed
/// batches (compressed ones are not opened here).
fn keyless_records(records: &bytes::Bytes, spans: &[batch::BatchSpan]) -> Vec<i32> {
    let mut out = Vec::new();
    for s in spans.iter().filter(|s| s.header.compression() == 0) {
        if let Ok((_, recs)) = batch::key_values(&records.slice(s.start..s.end)) {
            out.extend(recs.iter().enumerate().filter(|(_, r)| r.key.is_none()).map(|(i, _)| i as i32));
        }
    }
    out
}

/// One owner's share of a request: appended on this core already, or sent to another.
enum Call {
    Local(Vec<Appended>),
    Remote(glommio::Task<Reply>),
}

/// Where a partition's validated batches lie in the request body.
struct Pending {
    owner: usize,
    topic: String,
    partition: i32,
    /// Byte ranges of the batches, relative to the start of the body.
    ranges: Vec<(usize, usize)>,
}

/// Takes the batches out of the request body, in place when the body's memory has no
/// other owner (the usual case: the connection hands a whole frame over), else by copy.
fn take_batches(body: bytes::Bytes, pending: &[Pending]) -> Vec<Vec<BytesMut>> {
    match body.try_into_mut() {
        Ok(mut whole) => {
            let mut cursor = 0usize;
            let mut all: Vec<(usize, usize, usize, usize)> = Vec::new();
            for (pi, p) in pending.iter().enumerate() {
                for (bi, &(start, end)) in p.ranges.iter().enumerate() {
                    all.push((start, end, pi, bi));
                }
            }
            // Split in body order; every range was validated to lie inside the body and they don't overlap.
            all.sort_unstable();
            let mut out: Vec<Vec<BytesMut>> = pending.iter().map(|p| Vec::with_capacity(p.ranges.len())).collect();
            let mut placed: Vec<Vec<Option<BytesMut>>> = pending.iter().map(|p| vec![None; p.ranges.len()]).collect();
            for (start, end, pi, bi) in all {
                bytes::Buf::advance(&mut whole, start - cursor);
                placed[pi][bi] = Some(whole.split_to(end - start));
                cursor = end;
            }
            for (o, p) in out.iter_mut().zip(placed) {
                o.extend(p.into_iter().flatten());
            }
            out
        }
        Err(shared) => pending
            .iter()
            .map(|p| p.ranges.iter().map(|&(s, e)| BytesMut::from(&shared[s..e])).collect())
            .collect(),
    }
}

pub async fn start(shard: &Rc<Shard>, req: Request) -> Result<ResponseFuture, HandlerError> {
    let ProduceRequest { acks, topic_data, .. } = decode(&req, ApiKey::Produce)?;
    let (api_version, correlation_id) = (req.api_version, req.correlation_id);
    let image = shard.image();
    let body_start = req.body.as_ptr() as usize;
    let mut pending: Vec<Pending> = Vec::new();
    let mut slots: Vec<(StrBytes, Vec<(i32, Slot)>)> = Vec::new();
    for t in topic_data {
        // Owned names: nothing may keep the request's memory alive past this loop.
        let name = StrBytes::from_string(t.name.0.to_string());
        let topic = image.topics.get(name.as_str());
        let mut parts = Vec::new();
        for pd in t.partition_data {
            let slot = if !matches!(acks, -1 | 0 | 1) {
                Slot::Failed(ec::INVALID_REQUIRED_ACKS, None)
            } else {
                match topic.and_then(|tm| usize::try_from(pd.index).ok().and_then(|i| tm.partitions.get(i)).map(|pm| (tm, pm))) {
                    None => Slot::Failed(ec::UNKNOWN_TOPIC_OR_PARTITION, None),
                    Some((tm, pm)) => {
                        let cfg = shard.config.log_config(&tm.configs);
                        let records = pd.records.unwrap_or_default();
                        match batch::split_and_validate(&records, cfg.max_message_bytes) {
                            Err(e) => Slot::Failed(e.kafka_code(), Some(e.to_string())),
                            Ok(spans) if cfg.cleanup_compact && !keyless_records(&records, &spans).is_empty() => Slot::BadRecords(
                                format!("Compacted topic cannot accept message without key in topic partition {}-{}.", tm.name, pd.index),
                                keyless_records(&records, &spans),
                            ),
                            Ok(spans) => {
                                let at = records.as_ptr() as usize - body_start;
                                pending.push(Pending {
                                    owner: pm.owner,
                                    topic: tm.name.clone(),
                                    partition: pd.index,
                                    ranges: spans.iter().map(|s| (at + s.start, at + s.end)).collect(),
                                });
                                Slot::Sent { owner: pm.owner, index: usize::MAX }
                            }
                        }
                    }
                }
            };
            parts.push((pd.index, slot));
        }
        slots.push((name, parts));
    }
    // Every reference into the request's memory is gone now but the body itself.
    let Request { body, header, .. } = req;
    drop(header);
    let batches = take_batches(body, &pending);
    let mut per_owner: BTreeMap<usize, Vec<ProducePart>> = BTreeMap::new();
    let mut index_of = Vec::with_capacity(pending.len());
    for (p, batches) in pending.into_iter().zip(batches) {
        let list = per_owner.entry(p.owner).or_default();
        list.push(ProducePart { topic: p.topic, partition: p.partition, batches });
        index_of.push(list.len() - 1);
    }
    let mut next = index_of.into_iter();
    for (_, parts) in slots.iter_mut() {
        for (_, slot) in parts.iter_mut() {
            if let Slot::Sent { index, .. } = slot {
                *index = next.next().expect("one index per sent partition");
            }
        }
    }
    // Dispatch now, in request order: each owner's appends are queued before the
    // next request on this connection is read. This core's own parts are appended
    // right here (the usual case, and the cheapest: no task, no boxed op).
    let mut calls = Vec::with_capacity(per_owner.len());
    for (owner, parts) in per_owner {
        let call = if owner == shard.id {
            Call::Local(shard.produce_append(parts))
        } else {
            let s = shard.clone();
            Call::Remote(glommio::spawn_local(async move { s.call(owner, Op::Produce { parts, acks }).await }))
        };
        calls.push((owner, call));
    }
    let version = api_version;
    Ok(Box::pin(async move {
        let mut results: BTreeMap<usize, Vec<Result<AppendInfo, i16>>> = BTreeMap::new();
        for (owner, call) in calls {
            match call {
                Call::Local(appended) => {
                    results.insert(owner, Shard::produce_wait(appended, acks).await);
                }
                Call::Remote(task) => {
                    if let Reply::Produce(r) = task.await {
                        results.insert(owner, r);
                    }
                }
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
                            Slot::BadRecords(msg, indexes) if version >= 8 => r
                                .with_error_code(ec::INVALID_RECORD)
                                .with_error_message(Some(StrBytes::from_string(msg)))
                                .with_record_errors(
                                    indexes
                                        .into_iter()
                                        .map(|i| {
                                            kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage::default()
                                                .with_batch_index(i)
                                                .with_batch_index_error_message(None)
                                        })
                                        .collect(),
                                ),
                            Slot::BadRecords(..) => r.with_error_code(ec::INVALID_RECORD),
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
        crate::protocol::frame::encode_response(ApiKey::Produce, api_version, correlation_id, &ProduceResponse::default().with_responses(responses))
            .map(|b| Some(super::Out::One(b)))
            .map_err(HandlerError::Encode)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(ranges: Vec<(usize, usize)>) -> Pending {
        Pending { owner: 0, topic: "t".into(), partition: 0, ranges }
    }

    #[test]
    fn batches_are_taken_in_place_or_copied_with_the_same_bytes() {
        let body: Vec<u8> = (0..100u8).collect();
        let plan = vec![pending(vec![(50, 60), (70, 75)]), pending(vec![(10, 20)])];
        let expect = |out: &Vec<Vec<BytesMut>>| {
            assert_eq!(out.len(), 2);
            assert_eq!(&out[0][0][..], &body[50..60]);
            assert_eq!(&out[0][1][..], &body[70..75]);
            assert_eq!(&out[1][0][..], &body[10..20]);
        };
        // Unique: split without copying (the pieces point into the original allocation).
        let unique = bytes::Bytes::from(body.clone());
        let base = unique.as_ptr() as usize;
        let out = take_batches(unique, &plan);
        expect(&out);
        assert_eq!(out[1][0].as_ptr() as usize, base + 10, "taken in place");
        // Shared: copied.
        let shared = bytes::Bytes::from(body.clone());
        let other = shared.clone();
        let out = take_batches(shared, &plan);
        expect(&out);
        assert_ne!(out[1][0].as_ptr(), other[10..].as_ptr(), "copied");
    }
}
