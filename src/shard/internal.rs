//! Internal topics (`__consumer_offsets`, `__transaction_state`): creating them
//! on first use, appending key/value records to one of their partitions on the
//! owning core, and replaying a partition from its log start at load time.
//! The coordinators ([`crate::group`], [`crate::txn`]) keep their state in
//! these topics through the same log engine as user data.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use super::{AdminOp, NewTopic, Shard};
use crate::protocol::batch;
use crate::protocol::errors as ec;
use crate::util::now_ms;

/// A key and a value (`None`: a tombstone).
pub type Record = (Bytes, Option<Bytes>);

/// Creates `name` with `partitions` partitions, no retention and 100 MiB segments, unless it
/// exists; returns its partition count.
pub async fn ensure_topic(shard: &Rc<Shard>, name: &str, partitions: i32) -> Result<i32, i16> {
    if let Some(t) = shard.image().topics.get(name) {
        return Ok(t.partitions.len() as i32);
    }
    let mut configs = BTreeMap::new();
    configs.insert("retention.ms".to_string(), "-1".to_string());
    configs.insert("retention.bytes".to_string(), "-1".to_string());
    configs.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
    let topic = NewTopic { name: name.to_string(), partitions, replication_factor: -1, configs };
    let r = shard.admin(AdminOp::CreateTopics { topics: vec![topic], validate_only: false }).await;
    match r.first().map(|r| r.error) {
        Some(ec::NONE) | Some(ec::TOPIC_ALREADY_EXISTS) => {}
        Some(e) => return Err(e),
        None => return Err(ec::COORDINATOR_NOT_AVAILABLE),
    }
    shard.image().topics.get(name).map(|t| t.partitions.len() as i32).ok_or(ec::COORDINATOR_NOT_AVAILABLE)
}

/// Appends `records` as one batch to partition `p` of `topic` on this core, without
/// waiting; `txn`: mark the batch transactional for (producer id, epoch). Returns the end offset.
pub fn append(shard: &Shard, topic: &str, p: i32, records: &[Record], txn: Option<(i64, i16)>) -> Result<i64, i16> {
    let log = shard.log(topic, p).ok_or(ec::NOT_COORDINATOR)?;
    let kv: Vec<batch::KeyValue<'_>> = records.iter().map(|(k, v)| (Some(&k[..]), v.as_deref())).collect();
    let mut b = batch::build_batch(&kv, now_ms());
    if let Some((pid, epoch)) = txn {
        b[batch::ATTRIBUTES_POS..batch::ATTRIBUTES_POS + 2].copy_from_slice(&batch::ATTR_TRANSACTIONAL.to_be_bytes());
        b[batch::PRODUCER_ID_POS..batch::PRODUCER_ID_POS + 8].copy_from_slice(&pid.to_be_bytes());
        b[batch::PRODUCER_EPOCH_POS..batch::PRODUCER_EPOCH_POS + 2].copy_from_slice(&epoch.to_be_bytes());
        let _ = batch::fix_crc(&mut b);
    }
    let epoch = shard.image().topics.get(topic).and_then(|t| t.partitions.get(p as usize)).map(|m| m.leader_epoch).unwrap_or(0);
    let info = log.append_now(&mut b, epoch).map_err(|e| super::log_error_code(&e))?;
    Ok(info.last_offset + 1)
}

/// Waits until partition `p` of `topic` is durable up to `end`.
pub async fn wait_durable(shard: &Shard, topic: &str, p: i32, end: i64) -> Result<(), i16> {
    let log = shard.log(topic, p).ok_or(ec::NOT_COORDINATOR)?;
    log.wait_durable(end).await.map_err(|e| super::log_error_code(&e))
}

/// What [`replay`] finds, in log order.
pub enum Replayed {
    /// A record; `txn`: the producer id when the batch was transactional.
    Record { key: Bytes, value: Option<Bytes>, txn: Option<i64> },
    /// A transaction marker.
    Marker { producer_id: i64, commit: bool },
}

/// Reads partition `p` of `topic` from its log start to its end. Returns the number of
/// records read and of batches that could not be read (skipped, with a warning).
pub async fn replay(shard: &Shard, topic: &str, p: i32, mut f: impl FnMut(Replayed)) -> Result<(u64, u64), String> {
    let log = shard.log(topic, p).ok_or("partition log is not open")?;
    let mut offset = log.log_start_offset();
    let end = log.high_watermark();
    let (mut count, mut skipped) = (0u64, 0u64);
    while offset < end {
        let r = log.read(offset, 1 << 20).await.map_err(|e| e.to_string())?;
        if r.records.is_empty() {
            break;
        }
        let (spans, _) = batch::scan_batches(&r.records);
        if spans.is_empty() {
            return Err(format!("unreadable batch at offset {offset}"));
        }
        for span in spans {
            let h = span.header;
            let next = h.next_offset();
            if next <= offset {
                continue;
            }
            let b = r.records.slice(span.start..span.end);
            if h.is_control() {
                if let Some(commit) = batch::control_marker(&b) {
                    f(Replayed::Marker { producer_id: h.producer_id, commit });
                }
                offset = next;
                continue;
            }
            let txn = (h.is_transactional() && h.producer_id >= 0).then_some(h.producer_id);
            match batch::key_values(&b) {
                Ok((_, recs)) => {
                    for rec in recs.into_iter().filter(|r| r.offset >= offset) {
                        count += 1;
                        match rec.key {
                            Some(key) => f(Replayed::Record { key, value: rec.value, txn }),
                            None => skipped += 1,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(topic, partition = p, offset, error = %e, "skipping an unreadable batch of an internal topic");
                    skipped += 1;
                }
            }
            offset = next;
        }
    }
    Ok((count, skipped))
}
