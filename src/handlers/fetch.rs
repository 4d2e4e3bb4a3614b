//! Fetch: read from each partition's owner, long-poll until `min_bytes` or
//! `max_wait_ms`, and trim the response to `max_bytes`.
//!
//! Long-polling: after a read that found too little, every owning core is
//! asked to watch its partitions; the first core whose partitions get data
//! (or the deadline) ends the wait, and all partitions are read again.
//!
//! Fetch sessions (KIP-227, see [`super::fetch_session`]): a full fetch with
//! epoch 0 opens a session; incremental fetches then name only what changed
//! and get back only partitions with news.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};

use super::fetch_session::{Plan, RequestedPartition};
use super::{decode, respond, HandlerError};
use crate::limits::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MS_MAX};
use crate::protocol::errors as ec;
use crate::protocol::fetch_encode::{self, PartitionOut, TopicOut};
use crate::protocol::frame::Request;
use crate::shard::{FetchPart, FetchPartResult, Op, Reply, Shard};

struct Wanted {
    topic: Arc<str>,
    partition: i32,
    /// The owner shard and the part, or the error to answer with.
    target: Result<(usize, FetchPart), i16>,
}

async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<FetchPartResult> {
    let mut per_owner: BTreeMap<usize, Vec<(usize, FetchPart)>> = BTreeMap::new();
    for (i, w) in wanted.iter().enumerate() {
        if let Ok((owner, part)) = &w.target {
            per_owner.entry(*owner).or_default().push((i, part.clone()));
        }
    }
    // Other owners are asked first (they read concurrently); this core's own
    // partitions are then read right here, without a task or a boxed op.
    let mut tasks = Vec::new();
    let mut local = Vec::new();
    for (owner, parts) in per_owner {
        if owner == shard.id {
            local = parts;
            continue;
        }
        let s = shard.clone();
        let (idx, parts): (Vec<usize>, Vec<FetchPart>) = parts.into_iter().unzip();
        tasks.push((idx, glommio::spawn_local(async move { s.call(owner, Op::Fetch { parts }).await })));
    }
    let mut out: Vec<FetchPartResult> = wanted
        .iter()
        .map(|w| FetchPartResult {
            error: w.target.as_ref().err().copied().unwrap_or(ec::NONE),
            high_watermark: -1,
            log_start_offset: -1,
            ..Default::default()
        })
        .collect();
    for (i, part) in local {
        out[i] = shard.fetch_local(&part).await;
    }
    for (idx, task) in tasks {
        if let Reply::Fetch(results) = task.await {
            for (i, r) in idx.into_iter().zip(results) {
                out[i] = r;
            }
        }
    }
    out
}

/// Waits until any owner reports data past the fetch offsets, or `wait`.
async fn watch_all(shard: &Rc<Shard>, wanted: &[Wanted], wait: Duration, committed: bool) {
    let mut per_owner: BTreeMap<usize, Vec<(Arc<str>, i32, i64)>> = BTreeMap::new();
    for w in wanted {
        if let Ok((owner, part)) = &w.target {
            per_owner.entry(*owner).or_default().push((part.topic.clone(), part.partition, part.offset));
        }
    }
    let wait_ms = wait.as_millis() as i64;
    let mut futures: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for (owner, parts) in per_owner {
        let s = shard.clone();
        futures.push(if owner == shard.id {
            Box::pin(async move { s.watch_local(&parts, wait_ms, committed).await })
        } else {
            Box::pin(async move {
                s.call(owner, Op::Watch { parts, wait_ms, committed }).await;
            })
        });
    }
    futures.push(Box::pin(glommio::timer::sleep(wait)));
    crate::util::first_of(futures).await;
}

pub async fn handle(shard: &Rc<Shard>, req: Request) -> Result<Option<super::Out>, HandlerError> {
    let f: FetchRequest = decode(&req, ApiKey::Fetch)?;
    let requested: Vec<RequestedPartition> = f
        .topics
        .iter()
        .flat_map(|t| {
            let topic: Arc<str> = Arc::from(t.topic.0.as_str());
            t.partitions.iter().map(move |p| RequestedPartition {
                topic: topic.clone(),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            })
        })
        .collect();
    let plan = if req.api_version >= 7 {
        let forgotten: Vec<(String, i32)> = f
            .forgotten_topics_data
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect();
        shard.fetch_sessions.borrow_mut().begin(shard.id, f.session_id, f.session_epoch, &requested, &forgotten)
    } else {
        Plan::Sessionless
    };
    let (session_id, incremental, partitions) = match plan {
        Plan::Error(code) => {
            let body = FetchResponse::default().with_error_code(code).with_session_id(0);
            return respond(&req, ApiKey::Fetch, &body);
        }
        Plan::Sessionless => (0, false, requested),
        Plan::Full { id } => (id, false, requested),
        Plan::Incremental { id } => {
            let parts = shard.fetch_sessions.borrow().partitions(id);
            let parts = parts
                .into_iter()
                .map(|p| RequestedPartition { topic: p.topic, partition: p.partition, fetch_offset: p.fetch_offset, max_bytes: p.max_bytes })
                .collect();
            (id, true, parts)
        }
    };
    let image = shard.image();
    let committed = f.isolation_level == 1;
    let max_bytes = if req.api_version >= 3 { f.max_bytes.max(0) as usize } else { usize::MAX }.min(FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = f.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(f.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX as i32) as u64);
    let deadline = Instant::now() + wait;
    let wanted: Vec<Wanted> = partitions
        .into_iter()
        .map(|p| {
            let tm = image.topics.get(&*p.topic);
            let target = match tm.and_then(|tm| usize::try_from(p.partition).ok().and_then(|i| tm.partitions.get(i))) {
                None => Err(ec::UNKNOWN_TOPIC_OR_PARTITION),
                Some(pm) => Ok((
                    pm.owner,
                    FetchPart {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: (p.max_bytes.max(0) as usize).min(max_bytes),
                        committed,
                    },
                )),
            };
            Wanted { topic: p.topic, partition: p.partition, target }
        })
        .collect();
    let mut results = read_all(shard, &wanted).await;
    loop {
        let total: usize = results.iter().map(|r| r.records.len()).sum();
        let errors = results.iter().any(|r| r.error != ec::NONE);
        let now = Instant::now();
        if total >= min_bytes.max(1) || errors || now >= deadline || shard.shutting_down.get() {
            break;
        }
        watch_all(shard, &wanted, deadline - now, committed).await;
        results = read_all(shard, &wanted).await;
        if Instant::now() >= deadline {
            break;
        }
    }
    // Trim to max_bytes: the first non-empty partition always goes out whole.
    let mut budget = max_bytes;
    let mut topics: Vec<TopicOut> = Vec::new();
    for (w, r) in wanted.into_iter().zip(results) {
        let records = if r.records.len() <= budget || budget == max_bytes {
            budget = budget.saturating_sub(r.records.len());
            r.records
        } else {
            bytes::Bytes::new()
        };
        if session_id != 0 {
            let include = shard.fetch_sessions.borrow_mut().note_sent(
                session_id,
                &w.topic,
                w.partition,
                !records.is_empty(),
                r.error,
                r.high_watermark,
                r.log_start_offset,
            );
            if incremental && !include {
                continue;
            }
        }
        let pd = PartitionOut {
            partition: w.partition,
            error: r.error,
            high_watermark: r.high_watermark,
            last_stable_offset: r.last_stable_offset,
            aborted: if committed { Some(r.aborted) } else { None },
            log_start_offset: if req.api_version >= 5 { r.log_start_offset } else { -1 },
            records,
        };
        match topics.last_mut() {
            Some(t) if t.name == w.topic => t.partitions.push(pd),
            _ => topics.push(TopicOut { name: w.topic, partitions: vec![pd] }),
        }
    }
    let chunks = fetch_encode::encode(req.api_version, req.correlation_id, ec::NONE, session_id, &topics);
    Ok(Some(super::Out::Many(chunks)))
}
