//! Idempotent producer state of one partition: per producer id, its epoch and
//! the sequence ranges and offsets of its last five batches (a producer keeps
//! at most five requests in flight, so a retry is always one of them).
//!
//! [`ProducerStates::check`] decides, before an append, whether a batch is
//! new (append it), a retry of one already written (answer with its original
//! offsets, write nothing), or invalid: an older epoch
//! (INVALID_PRODUCER_EPOCH) or a sequence gap (OUT_OF_ORDER_SEQUENCE_NUMBER).
//! Following Kafka, a producer this partition knows nothing about (state
//! expired, or never written here) may start at any sequence, and a new epoch
//! must start at 0.
//!
//! The state is snapshotted to `<offset>.snapshot` files (at segment roll and
//! clean shutdown) and rebuilt after a crash from the latest snapshot plus the
//! batches after it. Pure data and encoding here, no I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::errors as ec;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound for idempotence).
pub const BATCHES_PER_PRODUCER: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// When it last wrote (broker clock, ms), for expiry.
    pub last_write_ms: i64,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Append,
    /// Already written: these are its offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// The sequence number after `seq` (sequences wrap from i32::MAX to 0).
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The last sequence of a batch of `count` records starting at `first`.
pub fn last_seq(first: i32, count: i32) -> i32 {
    let last = first as i64 + count as i64 - 1;
    (last % (i32::MAX as i64 + 1)) as i32
}

/// A transaction aborted on this partition: read_committed consumers skip its
/// records (`first_offset..=last_offset`, the abort marker at `last_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    map: HashMap<i64, ProducerEntry>,
    /// Open transactions: producer id -> offset of its first batch here.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.map.get(&producer_id)
    }

    /// Checks a batch of `producer_id`/`epoch` with sequences `first..=last`; Kafka error code on refusal.
    pub fn check(&self, producer_id: i64, epoch: i16, first: i32, last: i32) -> Result<Check, i16> {
        let Some(e) = self.map.get(&producer_id) else {
            return Ok(Check::Append);
        };
        if epoch < e.epoch {
            return Err(ec::INVALID_PRODUCER_EPOCH);
        }
        if epoch > e.epoch {
            return if first == 0 { Ok(Check::Append) } else { Err(ec::OUT_OF_ORDER_SEQUENCE_NUMBER) };
        }
        if let Some(b) = e.batches.iter().find(|b| b.first_seq == first && b.last_seq == last) {
            return Ok(Check::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset });
        }
        match e.batches.back() {
            Some(b) if next_seq(b.last_seq) == first => Ok(Check::Append),
            Some(_) => Err(ec::OUT_OF_ORDER_SEQUENCE_NUMBER),
            None => Ok(Check::Append),
        }
    }

    /// Records a written batch.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta, now_ms: i64) {
        let e = self.map.entry(producer_id).or_insert_with(|| ProducerEntry { epoch, batches: VecDeque::new(), last_write_ms: now_ms });
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.batches.push_back(batch);
        while e.batches.len() > BATCHES_PER_PRODUCER {
            e.batches.pop_front();
        }
        e.last_write_ms = e.last_write_ms.max(now_ms);
    }

    /// Every producer: (id, epoch, last sequence, last write time, first offset of its open transaction or -1).
    pub fn summary(&self) -> Vec<(i64, i16, i32, i64, i64)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(id, e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                (*id, e.epoch, last_seq, e.last_write_ms, self.ongoing.get(id).copied().unwrap_or(-1))
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// A transactional batch of `producer_id` was written at `offset`.
    pub fn begin_txn(&mut self, producer_id: i64, offset: i64) {
        self.ongoing.entry(producer_id).or_insert(offset);
    }

    /// A commit or abort marker of `producer_id` (epoch `epoch`) was written at `offset`.
    pub fn end_txn(&mut self, producer_id: i64, epoch: i16, commit: bool, offset: i64) {
        if let Some(first) = self.ongoing.remove(&producer_id) {
            if !commit {
                self.aborted.push(AbortedTxn { producer_id, first_offset: first, last_offset: offset });
            }
        }
        // The coordinator bumps the epoch when it aborts for a new producer instance:
        // batches of the old epoch are fenced from here on.
        if let Some(e) = self.map.get_mut(&producer_id) {
            if epoch > e.epoch {
                e.epoch = epoch;
                e.batches.clear();
            }
        }
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// Open transactions: (producer id, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(p, o)| (*p, *o))
    }

    /// Aborted transactions whose records overlap `[from, to)`: (producer id, first offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.aborted.iter().filter(|a| a.last_offset >= from && a.first_offset < to).map(|a| (a.producer_id, a.first_offset)).collect()
    }

    /// Drops aborted-transaction entries wholly below `log_start`.
    pub fn prune_aborted(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Forgets producers that have not written for `max_idle_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.map.len();
        let ongoing = &self.ongoing;
        self.map.retain(|id, e| e.last_write_ms + max_idle_ms > now_ms || ongoing.contains_key(id));
        before - self.map.len()
    }

    /// Snapshot bytes: magic, crc32c of the rest, count, then per producer its id, epoch,
    /// last write time and batches.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.map.len() * 64);
        body.extend_from_slice(&(self.map.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.map.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.map[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_write_ms.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        body.extend_from_slice(&(self.ongoing.len() as u32).to_be_bytes());
        for (p, o) in &self.ongoing {
            body.extend_from_slice(&p.to_be_bytes());
            body.extend_from_slice(&o.to_be_bytes());
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            body.extend_from_slice(&a.producer_id.to_be_bytes());
            body.extend_from_slice(&a.first_offset.to_be_bytes());
            body.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(b"CSP2");
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a snapshot; any damage (bad magic, CRC, truncation) is an error.
    pub fn decode(buf: &[u8]) -> Result<ProducerStates, String> {
        if buf.len() < 12 || (&buf[..4] != b"CSP1" && &buf[..4] != b"CSP2") {
            return Err("not a producer snapshot".into());
        }
        let with_txns = &buf[..4] == b"CSP2";
        let crc = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
        let body = &buf[8..];
        if crc32c::crc32c(body) != crc {
            return Err("producer snapshot CRC mismatch".into());
        }
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let s = body.get(pos..pos + n).ok_or("producer snapshot truncated")?;
            pos += n;
            Ok(s)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4")) as usize;
        let mut map = HashMap::with_capacity(count.min(body.len() / 19));
        for _ in 0..count {
            let id = i64::from_be_bytes(take(8)?.try_into().expect("8"));
            let epoch = i16::from_be_bytes(take(2)?.try_into().expect("2"));
            let last_write_ms = i64::from_be_bytes(take(8)?.try_into().expect("8"));
            let n = take(1)?[0] as usize;
            let mut batches = VecDeque::with_capacity(n.min(BATCHES_PER_PRODUCER));
            for _ in 0..n {
                let first_seq = i32::from_be_bytes(take(4)?.try_into().expect("4"));
                let last_seq = i32::from_be_bytes(take(4)?.try_into().expect("4"));
                let base_offset = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                let last_offset = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                batches.push_back(BatchMeta { first_seq, last_seq, base_offset, last_offset });
            }
            map.insert(id, ProducerEntry { epoch, batches, last_write_ms });
        }
        let mut ongoing = BTreeMap::new();
        let mut aborted = Vec::new();
        if with_txns {
            let n = u32::from_be_bytes(take(4)?.try_into().expect("4")) as usize;
            for _ in 0..n {
                let p = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                let o = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                ongoing.insert(p, o);
            }
            let n = u32::from_be_bytes(take(4)?.try_into().expect("4")) as usize;
            aborted.reserve(n.min(body.len() / 24));
            for _ in 0..n {
                let producer_id = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                let first_offset = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                let last_offset = i64::from_be_bytes(take(8)?.try_into().expect("8"));
                aborted.push(AbortedTxn { producer_id, first_offset, last_offset });
            }
        }
        if pos != body.len() {
            return Err("trailing bytes in producer snapshot".into());
        }
        Ok(ProducerStates { map, ongoing, aborted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, last: i32, off: i64) -> BatchMeta {
        BatchMeta { first_seq: first, last_seq: last, base_offset: off, last_offset: off + (last - first) as i64 }
    }

    #[test]
    fn sequence_rules() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), Ok(Check::Append));
        s.record(7, 0, b(0, 4, 100), 1);
        assert_eq!(s.check(7, 0, 5, 9), Ok(Check::Append));
        s.record(7, 0, b(5, 9, 105), 2);
        // A retry of either batch is a duplicate with its original offsets.
        assert_eq!(s.check(7, 0, 0, 4), Ok(Check::Duplicate { base_offset: 100, last_offset: 104 }));
        assert_eq!(s.check(7, 0, 5, 9), Ok(Check::Duplicate { base_offset: 105, last_offset: 109 }));
        // Gaps and overlaps are out of order; old epochs are fenced; a new epoch starts at 0.
        assert_eq!(s.check(7, 0, 11, 12), Err(ec::OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(7, 0, 3, 6), Err(ec::OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(7, -1, 10, 10), Err(ec::INVALID_PRODUCER_EPOCH));
        assert_eq!(s.check(7, 1, 10, 10), Err(ec::OUT_OF_ORDER_SEQUENCE_NUMBER));
        assert_eq!(s.check(7, 1, 0, 0), Ok(Check::Append));
        s.record(7, 1, b(0, 0, 110), 3);
        assert_eq!(s.check(7, 0, 10, 10), Err(ec::INVALID_PRODUCER_EPOCH));
        // Unknown producers may start anywhere.
        assert_eq!(s.check(8, 0, 42, 50), Ok(Check::Append));
    }

    #[test]
    fn only_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(1, 0, b(i, i, i as i64), 0);
        }
        assert_eq!(s.get(1).unwrap().batches.len(), BATCHES_PER_PRODUCER);
        assert_eq!(s.check(1, 0, 1, 1), Err(ec::OUT_OF_ORDER_SEQUENCE_NUMBER), "too old to be a retry");
        assert_eq!(last_seq(i32::MAX - 1, 3), 0);
        assert_eq!(next_seq(i32::MAX), 0);
        let mut s = ProducerStates::default();
        s.record(2, 0, b(i32::MAX - 1, i32::MAX, 0), 0);
        assert_eq!(s.check(2, 0, 0, 3), Ok(Check::Append));
    }

    #[test]
    fn transactions_track_the_first_unstable_offset_and_aborts() {
        let mut s = ProducerStates::default();
        s.record(1, 0, b(0, 1, 10), 0);
        s.begin_txn(1, 10);
        s.begin_txn(1, 12);
        s.begin_txn(2, 11);
        assert_eq!(s.first_unstable_offset(), Some(10));
        s.end_txn(1, 0, false, 13);
        assert_eq!(s.first_unstable_offset(), Some(11));
        s.end_txn(2, 0, true, 14);
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(s.aborted_between(0, 100), vec![(1, 10)]);
        assert_eq!(s.aborted_between(14, 100), vec![]);
        assert_eq!(s.aborted_between(0, 10), vec![]);
        // A marker with a higher epoch fences the old one.
        s.end_txn(1, 3, false, 15);
        assert_eq!(s.check(1, 0, 2, 2), Err(ec::INVALID_PRODUCER_EPOCH));
        let round = ProducerStates::decode(&s.encode()).unwrap();
        assert_eq!(round, s);
        s.prune_aborted(14);
        assert!(s.aborted_between(0, 100).is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_detect_damage() {
        let mut s = ProducerStates::default();
        s.record(1, 3, b(0, 9, 0), 5);
        s.record(2, 0, b(4, 4, 10), 6);
        let bytes = s.encode();
        assert_eq!(ProducerStates::decode(&bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(ProducerStates::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(s.expire(100, 50), 2);
    }
}
