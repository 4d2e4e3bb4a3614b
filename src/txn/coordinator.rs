//! The per-core transaction coordinator: drives the [`super::state`] machines
//! of the transactional ids whose `__transaction_state` partition this core
//! owns. See the [`super`] module docs for the protocol.
//!
//! Every state change is appended to `__transaction_state` and durable before
//! the request is answered. An id with an operation in flight (an EndTxn
//! writing markers, say) is "busy": other requests for it get
//! CONCURRENT_TRANSACTIONS, which clients retry. A tick finishes transactions
//! left in Prepare* by a restart, aborts those past their timeout, forgets ids
//! idle past `transactional.id.expiration.ms`, and bounds the topic's size the
//! way the group coordinator does (rewrite the live records, drop the rest).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::state::{End, Init, TxnMeta, TxnState};
use super::{TxnOp, TxnReply, TXN_TOPIC};
use crate::group::partition_for;
use crate::protocol::errors as ec;
use crate::shard::{internal, Op, Reply, Shard};
use crate::util::now_ms;

const TICK_MS: u64 = 200;
const SNAPSHOT_MIN_RECORDS: u64 = 10_000;
const SNAPSHOT_RATIO: u64 = 4;

#[derive(Default)]
pub struct TxnCoordinator {
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// `__transaction_state` partitions owned here: loaded?, records since the last snapshot.
    parts: RefCell<HashMap<i32, (bool, u64)>>,
    busy: RefCell<HashSet<String>>,
    ticking: Cell<bool>,
}

fn txn_partitions(shard: &Shard) -> i32 {
    shard.image().topics.get(TXN_TOPIC).map(|t| t.partitions.len() as i32).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Records (key v0: id; value v0: producer id, epoch, timeout, state, partitions, times)
// ---------------------------------------------------------------------------------------------

fn put_str(b: &mut BytesMut, s: &str) {
    let n = s.len().min(i16::MAX as usize);
    b.put_i16(n as i16);
    b.put_slice(&s.as_bytes()[..n]);
}

pub fn encode_key(id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_str(&mut b, id);
    b.freeze()
}

pub fn encode_value(t: &TxnMeta) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(t.producer_id);
    b.put_i16(t.epoch);
    b.put_i32(t.timeout_ms);
    b.put_i8(t.state.code());
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in &t.partitions {
        by_topic.entry(topic).or_default().push(*p);
    }
    b.put_i32(by_topic.len() as i32);
    for (topic, ps) in by_topic {
        put_str(&mut b, topic);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(t.last_update_ms);
    b.put_i64(t.start_ms);
    b.freeze()
}

fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).ok()
}

pub fn decode_key(mut b: Bytes) -> Option<String> {
    if b.remaining() < 2 || b.get_i16() != 0 {
        return None;
    }
    get_str(&mut b)
}

pub fn decode_value(id: &str, mut b: Bytes) -> Option<TxnMeta> {
    if b.remaining() < 2 + 8 + 2 + 4 + 1 + 4 || b.get_i16() != 0 {
        return None;
    }
    let producer_id = b.get_i64();
    let epoch = b.get_i16();
    let timeout_ms = b.get_i32();
    let state = TxnState::from_code(b.get_i8())?;
    let topics = b.get_i32();
    if topics < 0 || topics as usize > b.remaining() / 6 {
        return None;
    }
    let mut partitions = BTreeSet::new();
    for _ in 0..topics {
        let topic = get_str(&mut b)?;
        if b.remaining() < 4 {
            return None;
        }
        let n = b.get_i32();
        if n < 0 || b.remaining() < n as usize * 4 {
            return None;
        }
        for _ in 0..n {
            partitions.insert((topic.clone(), b.get_i32()));
        }
    }
    if b.remaining() < 16 {
        return None;
    }
    let last_update_ms = b.get_i64();
    let start_ms = b.get_i64();
    Some(TxnMeta { id: id.to_string(), producer_id, epoch, timeout_ms, state, partitions, start_ms, last_update_ms })
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

impl TxnCoordinator {
    /// Called after the shard applied a metadata image: loads newly owned partitions.
    pub fn on_image(shard: &Rc<Shard>) {
        let image = shard.image();
        let Some(t) = image.topics.get(TXN_TOPIC) else { return };
        let me = &shard.txns;
        let mut new = Vec::new();
        {
            let mut parts = me.parts.borrow_mut();
            for (i, p) in t.partitions.iter().enumerate() {
                if p.owner == shard.id && !parts.contains_key(&(i as i32)) {
                    parts.insert(i as i32, (false, 0));
                    new.push(i as i32);
                }
            }
        }
        for p in new {
            let s = shard.clone();
            glommio::spawn_local(async move {
                match load_partition(&s, p).await {
                    Ok(records) => {
                        if let Some(part) = s.txns.parts.borrow_mut().get_mut(&p) {
                            *part = (true, records);
                        }
                    }
                    Err(e) => tracing::error!(partition = p, error = %e, "cannot load __transaction_state partition"),
                }
            })
            .detach();
        }
        if !me.ticking.get() && !me.parts.borrow().is_empty() {
            me.ticking.set(true);
            let s = shard.clone();
            glommio::spawn_local(async move { ticker(s).await }).detach();
        }
    }

    fn check_ready(shard: &Shard, txn_id: &str) -> Result<i32, i16> {
        let n = txn_partitions(shard);
        if n == 0 {
            return Err(ec::COORDINATOR_NOT_AVAILABLE);
        }
        let p = partition_for(txn_id, n);
        match shard.txns.parts.borrow().get(&p) {
            None => Err(ec::NOT_COORDINATOR),
            Some((false, _)) => Err(ec::COORDINATOR_LOAD_IN_PROGRESS),
            Some(_) => Ok(p),
        }
    }

    /// [`Self::check_ready`], and no other operation on this id is in flight.
    fn check_ready_and_idle(shard: &Shard, txn_id: &str) -> Result<i32, i16> {
        let p = Self::check_ready(shard, txn_id)?;
        if shard.txns.busy.borrow().contains(txn_id) {
            return Err(ec::CONCURRENT_TRANSACTIONS);
        }
        Ok(p)
    }

    pub async fn execute(shard: &Rc<Shard>, op: TxnOp) -> TxnReply {
        let now = now_ms();
        match op {
            TxnOp::Init { txn_id, timeout_ms, expected } => TxnReply::Init(init(shard, &txn_id, timeout_ms, expected).await),
            TxnOp::AddPartitions { txn_id, producer_id, epoch, parts } => {
                let p = match Self::check_ready_and_idle(shard, &txn_id) {
                    Ok(p) => p,
                    Err(e) => return TxnReply::Code(e),
                };
                let r = {
                    let mut txns = shard.txns.txns.borrow_mut();
                    match txns.get_mut(&txn_id) {
                        None => Err(ec::INVALID_PRODUCER_ID_MAPPING),
                        Some(t) => t.add_partitions(producer_id, epoch, &parts, now).map(|changed| changed.then(|| t.clone())),
                    }
                };
                TxnReply::Code(match r {
                    Err(e) => e,
                    Ok(None) => ec::NONE,
                    Ok(Some(t)) => match persist(shard, p, &t).await {
                        Ok(()) => ec::NONE,
                        Err(e) => e,
                    },
                })
            }
            TxnOp::End { txn_id, producer_id, epoch, commit } => {
                let p = match Self::check_ready_and_idle(shard, &txn_id) {
                    Ok(p) => p,
                    Err(e) => return TxnReply::Code(e),
                };
                let r = {
                    let mut txns = shard.txns.txns.borrow_mut();
                    match txns.get_mut(&txn_id) {
                        None => Err(ec::INVALID_PRODUCER_ID_MAPPING),
                        Some(t) => t.end(producer_id, epoch, commit, now).map(|e| (e, t.clone())),
                    }
                };
                TxnReply::Code(match r {
                    Err(e) => e,
                    Ok((End::AlreadyDone, _)) => ec::NONE,
                    Ok((End::Markers { commit, partitions }, t)) => match finish(shard, p, t, commit, partitions).await {
                        Ok(()) => ec::NONE,
                        Err(e) => e,
                    },
                })
            }
            TxnOp::Verify { txn_id, producer_id, epoch, parts } => {
                if let Err(e) = Self::check_ready(shard, &txn_id) {
                    return TxnReply::Codes(vec![e; parts.len()]);
                }
                let txns = shard.txns.txns.borrow();
                TxnReply::Codes(match txns.get(&txn_id) {
                    None => vec![ec::INVALID_PRODUCER_ID_MAPPING; parts.len()],
                    Some(t) => t.verify(producer_id, epoch, &parts),
                })
            }
            TxnOp::Describe { txn_id } => {
                if let Err(e) = Self::check_ready(shard, &txn_id) {
                    return TxnReply::Described(Err(e));
                }
                TxnReply::Described(shard.txns.txns.borrow().get(&txn_id).cloned().ok_or(ec::TRANSACTIONAL_ID_NOT_FOUND))
            }
            TxnOp::List => TxnReply::Listed(shard.txns.txns.borrow().values().cloned().collect()),
        }
    }
}

async fn persist(shard: &Rc<Shard>, p: i32, t: &TxnMeta) -> Result<(), i16> {
    let end = internal::append(shard, TXN_TOPIC, p, &[(encode_key(&t.id), Some(encode_value(t)))], None)?;
    if let Some(part) = shard.txns.parts.borrow_mut().get_mut(&p) {
        part.1 += 1;
    }
    internal::wait_durable(shard, TXN_TOPIC, p, end).await
}

async fn init(shard: &Rc<Shard>, txn_id: &str, timeout_ms: i32, expected: Option<(i64, i16)>) -> Result<(i64, i16), i16> {
    let p = TxnCoordinator::check_ready(shard, txn_id)?;
    if timeout_ms <= 0 || timeout_ms as i64 > shard.config.transaction_max_timeout_ms {
        return Err(ec::INVALID_TRANSACTION_TIMEOUT);
    }
    if shard.txns.busy.borrow().contains(txn_id) {
        return Err(ec::CONCURRENT_TRANSACTIONS);
    }
    // A spare id, used if this is a new transactional id or its epoch overflows.
    let fresh = shard.next_producer_id().await?;
    let mut spare = Some(fresh);
    let mut take = move || spare.take().unwrap_or(fresh);
    for _ in 0..2 {
        let now = now_ms();
        let outcome = {
            let mut txns = shard.txns.txns.borrow_mut();
            let t = txns.entry(txn_id.to_string()).or_insert_with(|| TxnMeta::new(txn_id, fresh, timeout_ms, now));
            t.init(timeout_ms, expected, &mut take, now).map(|o| (o, t.clone()))
        };
        match outcome? {
            (Init::Ready { producer_id, epoch }, t) => {
                persist(shard, p, &t).await?;
                return Ok((producer_id, epoch));
            }
            (Init::AbortFirst { partitions, .. }, t) => {
                // A new instance of this producer: abort what the old one left open, fencing it.
                finish(shard, p, t, false, partitions).await?;
            }
        }
    }
    Err(ec::CONCURRENT_TRANSACTIONS)
}

/// Persists the Prepare* state of `t`, writes the markers, persists Complete*.
async fn finish(shard: &Rc<Shard>, p: i32, t: TxnMeta, commit: bool, partitions: Vec<(String, i32)>) -> Result<(), i16> {
    let id = t.id.clone();
    shard.txns.busy.borrow_mut().insert(id.clone());
    let r = async {
        persist(shard, p, &t).await?;
        write_markers(shard, t.producer_id, t.epoch, commit, &partitions).await?;
        let done = {
            let mut txns = shard.txns.txns.borrow_mut();
            let m = txns.get_mut(&id).ok_or(ec::INVALID_PRODUCER_ID_MAPPING)?;
            m.complete(now_ms());
            m.clone()
        };
        persist(shard, p, &done).await
    }
    .await;
    shard.txns.busy.borrow_mut().remove(&id);
    r
}

/// Writes a commit or abort marker to every partition of a transaction, on their owners.
async fn write_markers(shard: &Rc<Shard>, producer_id: i64, epoch: i16, commit: bool, partitions: &[(String, i32)]) -> Result<(), i16> {
    let image = shard.image();
    let mut per_owner: BTreeMap<usize, Vec<(String, i32)>> = BTreeMap::new();
    for (t, p) in partitions {
        // A partition whose topic was deleted meanwhile needs no marker.
        if let Some(owner) = image.owner(t, *p) {
            per_owner.entry(owner).or_default().push((t.clone(), *p));
        }
    }
    let mut tasks = Vec::new();
    for (owner, parts) in per_owner {
        let s = shard.clone();
        tasks.push(glommio::spawn_local(async move { s.call(owner, Op::WriteMarkers { producer_id, epoch, commit, parts }).await }));
    }
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Reply::Markers(errors) => {
                if let Some(e) = errors.into_iter().find(|e| *e != ec::NONE) {
                    first_error.get_or_insert(e);
                }
            }
            _ => {
                first_error.get_or_insert(ec::COORDINATOR_NOT_AVAILABLE);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// On a partition owner: appends the markers and waits until they are durable.
pub async fn write_markers_local(shard: &Rc<Shard>, producer_id: i64, epoch: i16, commit: bool, parts: Vec<(String, i32)>) -> Vec<i16> {
    let mut ends = Vec::with_capacity(parts.len());
    for (topic, p) in &parts {
        let Some(log) = shard.log(topic, *p) else {
            ends.push(Err(ec::NONE));
            continue;
        };
        let leader_epoch = shard.image().topics.get(topic).and_then(|t| t.partitions.get(*p as usize)).map(|m| m.leader_epoch).unwrap_or(0);
        match log.append_marker(producer_id, epoch, commit, 0, leader_epoch) {
            Ok(info) => {
                if topic == crate::group::OFFSETS_TOPIC {
                    shard.groups.complete_txn(shard, *p, producer_id, commit);
                }
                ends.push(Ok((log, info.last_offset + 1)));
            }
            Err(e) => ends.push(Err(crate::shard::log_error_code(&e))),
        }
    }
    let mut out = Vec::with_capacity(ends.len());
    for e in ends {
        out.push(match e {
            Err(code) => code,
            Ok((log, end)) => match log.wait_durable(end).await {
                Ok(()) => ec::NONE,
                Err(e) => crate::shard::log_error_code(&e),
            },
        });
    }
    out
}

async fn ticker(shard: Rc<Shard>) {
    loop {
        let stop = shard.shutdown.listen();
        if shard.shutting_down.get() {
            return;
        }
        futures_lite::future::or(stop, glommio::timer::sleep(std::time::Duration::from_millis(TICK_MS))).await;
        if shard.shutting_down.get() {
            return;
        }
        let now = now_ms();
        let n = txn_partitions(&shard);
        // Transactions to finish: left in Prepare* (a restart), or open past their timeout.
        type Work = (i32, TxnMeta, bool, Vec<(String, i32)>);
        let mut work: Vec<Work> = Vec::new();
        let mut expired_ids = Vec::new();
        {
            let busy = shard.txns.busy.borrow();
            let mut txns = shard.txns.txns.borrow_mut();
            for t in txns.values_mut() {
                if busy.contains(&t.id) {
                    continue;
                }
                let p = partition_for(&t.id, n);
                match t.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        work.push((p, t.clone(), t.state == TxnState::PrepareCommit, t.partitions.iter().cloned().collect()));
                    }
                    TxnState::Ongoing => {
                        let fresh = t.producer_id;
                        if let Some(End::Markers { commit, partitions }) = t.expire(now, &mut || fresh) {
                            tracing::info!(txn = %t.id, "aborting a transaction past its timeout");
                            work.push((p, t.clone(), commit, partitions));
                        }
                    }
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                        if t.last_update_ms + shard.config.transactional_id_expiration_ms < now {
                            expired_ids.push((p, t.id.clone()));
                        }
                    }
                }
            }
            for (_, id) in &expired_ids {
                txns.remove(id);
            }
        }
        for (p, id) in expired_ids {
            if let Ok(end) = internal::append(&shard, TXN_TOPIC, p, &[(encode_key(&id), None)], None) {
                let _ = internal::wait_durable(&shard, TXN_TOPIC, p, end).await;
            }
        }
        for (p, t, commit, partitions) in work {
            let s = shard.clone();
            glommio::spawn_local(async move {
                if let Err(e) = finish(&s, p, t, commit, partitions).await {
                    tracing::warn!(error = e, "finishing a transaction failed; retrying on the next tick");
                }
            })
            .detach();
        }
        maybe_snapshot(&shard).await;
    }
}

async fn maybe_snapshot(shard: &Rc<Shard>) {
    let n = txn_partitions(shard);
    let due: Vec<i32> = shard.txns.parts.borrow().iter().filter(|(_, (ready, r))| *ready && *r > SNAPSHOT_MIN_RECORDS).map(|(p, _)| *p).collect();
    for p in due {
        let live: Vec<internal::Record> = shard
            .txns
            .txns
            .borrow()
            .values()
            .filter(|t| partition_for(&t.id, n) == p)
            .map(|t| (encode_key(&t.id), Some(encode_value(t))))
            .collect();
        let records = shard.txns.parts.borrow().get(&p).map(|x| x.1).unwrap_or(0);
        if records <= SNAPSHOT_RATIO * live.len() as u64 {
            continue;
        }
        let Some(log) = shard.log(TXN_TOPIC, p) else { continue };
        let start = log.log_end_offset();
        if let Some(part) = shard.txns.parts.borrow_mut().get_mut(&p) {
            part.1 = 0;
        }
        let mut end = start;
        let mut ok = true;
        for chunk in live.chunks(500) {
            match internal::append(shard, TXN_TOPIC, p, chunk, None) {
                Ok(e) => end = e,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && log.wait_durable(end).await.is_ok() {
            let _ = log.delete_records_before(start).await;
        }
    }
}

async fn load_partition(shard: &Rc<Shard>, p: i32) -> Result<u64, String> {
    let mut found: HashMap<String, Option<TxnMeta>> = HashMap::new();
    let (count, skipped) = internal::replay(shard, TXN_TOPIC, p, |r| {
        if let internal::Replayed::Record { key, value, .. } = r {
            if let Some(id) = decode_key(key) {
                let v = value.and_then(|v| decode_value(&id, v));
                found.insert(id, v);
            }
        }
    })
    .await?;
    if skipped > 0 {
        tracing::warn!(partition = p, skipped, "unreadable __transaction_state records skipped");
    }
    let mut txns = shard.txns.txns.borrow_mut();
    for (id, t) in found {
        if let Some(t) = t {
            txns.insert(id, t);
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_rejected() {
        let mut t = TxnMeta::new("tx-1", 42, 60_000, 5);
        t.epoch = 3;
        t.state = TxnState::Ongoing;
        t.partitions.insert(("a".into(), 1));
        t.partitions.insert(("a".into(), 0));
        t.partitions.insert(("b".into(), 7));
        t.start_ms = 9;
        assert_eq!(decode_key(encode_key("tx-1")).as_deref(), Some("tx-1"));
        assert_eq!(decode_value("tx-1", encode_value(&t)), Some(t.clone()));
        let good = encode_value(&t);
        for cut in 0..good.len() {
            assert_eq!(decode_value("tx-1", good.slice(..cut)), None, "truncated at {cut}");
        }
        let mut lying = BytesMut::from(&good[..]);
        lying[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_value("tx-1", lying.freeze()), None);
    }
}
