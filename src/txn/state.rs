//! One transactional id's state, as a state machine with no I/O.
//!
//! `Empty -> Ongoing -> PrepareCommit|PrepareAbort -> CompleteCommit|CompleteAbort -> Ongoing ...`
//!
//! The driver persists the state after each transition that matters
//! (Prepare*, Complete*, a new epoch, added partitions) before answering, and
//! writes the markers between Prepare* and Complete*. A broker that restarts
//! in a Prepare* state finishes the transaction; an Ongoing one that outlives
//! its timeout is aborted with a bumped epoch, which fences the producer.

use std::collections::BTreeSet;

use crate::protocol::errors as ec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's state names (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// The code Kafka's `__transaction_state` records use.
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub fn from_code(c: i8) -> Option<TxnState> {
        Some(match c {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }
}

pub type Tp = (String, i32);

#[derive(Debug, Clone, PartialEq)]
pub struct TxnMeta {
    pub id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<Tp>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// An open transaction must be aborted first (with this bumped epoch, fencing the old producer).
    AbortFirst { epoch: i16, partitions: Vec<Tp> },
    /// Done: the producer id and epoch to return (persist first).
    Ready { producer_id: i64, epoch: i16 },
}

/// What EndTxn must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Write these markers (after persisting the Prepare state), then complete.
    Markers { commit: bool, partitions: Vec<Tp> },
    /// A retry of an EndTxn that already completed.
    AlreadyDone,
}

impl TxnMeta {
    pub fn new(id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> TxnMeta {
        TxnMeta {
            id: id.to_string(),
            producer_id,
            epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
        }
    }

    /// InitProducerId. `expected`: the (producer id, epoch) a v3+ client says it has.
    pub fn init(&mut self, timeout_ms: i32, expected: Option<(i64, i16)>, new_pid: &mut dyn FnMut() -> i64, now: i64) -> Result<Init, i16> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(ec::CONCURRENT_TRANSACTIONS),
            TxnState::Ongoing => {
                let epoch = self.bump_epoch(new_pid);
                self.state = TxnState::PrepareAbort;
                self.last_update_ms = now;
                return Ok(Init::AbortFirst { epoch, partitions: self.partitions.iter().cloned().collect() });
            }
            _ => {}
        }
        if let Some((pid, epoch)) = expected {
            if pid >= 0 && (pid != self.producer_id || epoch != self.epoch) {
                return Err(ec::PRODUCER_FENCED);
            }
        }
        self.bump_epoch(new_pid);
        self.timeout_ms = timeout_ms;
        self.state = TxnState::Empty;
        self.partitions.clear();
        self.last_update_ms = now;
        Ok(Init::Ready { producer_id: self.producer_id, epoch: self.epoch })
    }

    fn bump_epoch(&mut self, new_pid: &mut dyn FnMut() -> i64) -> i16 {
        if self.epoch >= i16::MAX - 1 {
            self.producer_id = new_pid();
            self.epoch = 0;
        } else {
            self.epoch += 1;
        }
        self.epoch
    }

    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            return Err(ec::INVALID_PRODUCER_ID_MAPPING);
        }
        if epoch != self.epoch {
            return Err(ec::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn. Returns whether anything new was added.
    pub fn add_partitions(&mut self, producer_id: i64, epoch: i16, parts: &[Tp], now: i64) -> Result<bool, i16> {
        self.check_producer(producer_id, epoch)?;
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(ec::CONCURRENT_TRANSACTIONS),
            TxnState::Ongoing => {}
            _ => {
                self.state = TxnState::Ongoing;
                self.start_ms = now;
                self.partitions.clear();
            }
        }
        let before = self.partitions.len();
        self.partitions.extend(parts.iter().cloned());
        self.last_update_ms = now;
        Ok(self.partitions.len() != before || before == 0)
    }

    /// AddPartitionsToTxn v4+ with `verify_only` (KIP-890): is each partition part of the
    /// producer's open transaction? One error code per partition.
    pub fn verify(&self, producer_id: i64, epoch: i16, parts: &[Tp]) -> Vec<i16> {
        let common = match self.check_producer(producer_id, epoch) {
            Err(e) => Some(e),
            Ok(()) if self.state != TxnState::Ongoing => Some(ec::INVALID_TXN_STATE),
            Ok(()) => None,
        };
        parts
            .iter()
            .map(|p| common.unwrap_or(if self.partitions.contains(p) { ec::NONE } else { ec::INVALID_TXN_STATE }))
            .collect()
    }

    /// EndTxn.
    pub fn end(&mut self, producer_id: i64, epoch: i16, commit: bool, now: i64) -> Result<End, i16> {
        self.check_producer(producer_id, epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                self.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
                self.last_update_ms = now;
                Ok(End::Markers { commit, partitions: self.partitions.iter().cloned().collect() })
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(End::AlreadyDone),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(ec::CONCURRENT_TRANSACTIONS),
            // Aborting a transaction that has no partitions yet is allowed (Kafka too).
            (TxnState::Empty, false) => Ok(End::AlreadyDone),
            _ => Err(ec::INVALID_TXN_STATE),
        }
    }

    /// The markers are written: Prepare* -> Complete*.
    pub fn complete(&mut self, now: i64) {
        self.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            s => s,
        };
        self.partitions.clear();
        self.last_update_ms = now;
    }

    /// An open transaction past its timeout: abort it with a bumped epoch (fencing the
    /// producer). Returns the markers to write.
    pub fn expire(&mut self, now: i64, new_pid: &mut dyn FnMut() -> i64) -> Option<End> {
        if self.state != TxnState::Ongoing || self.start_ms + self.timeout_ms as i64 > now {
            return None;
        }
        self.bump_epoch(new_pid);
        self.state = TxnState::PrepareAbort;
        self.last_update_ms = now;
        Some(End::Markers { commit: false, partitions: self.partitions.iter().cloned().collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_abort_and_fencing() {
        let mut next = 100;
        let mut pid = || {
            next += 1;
            next
        };
        let mut t = TxnMeta::new("t", 7, 60_000, 0);
        assert_eq!(t.init(60_000, None, &mut pid, 0), Ok(Init::Ready { producer_id: 7, epoch: 0 }));
        let parts = vec![("a".to_string(), 0), ("b".to_string(), 1)];
        assert_eq!(t.add_partitions(7, 0, &parts, 1), Ok(true));
        assert_eq!(t.state, TxnState::Ongoing);
        assert_eq!(t.add_partitions(7, 1, &parts, 1), Err(ec::PRODUCER_FENCED));
        assert_eq!(t.add_partitions(8, 0, &parts, 1), Err(ec::INVALID_PRODUCER_ID_MAPPING));
        assert_eq!(t.end(7, 0, true, 2), Ok(End::Markers { commit: true, partitions: parts.clone() }));
        assert_eq!(t.add_partitions(7, 0, &parts, 2), Err(ec::CONCURRENT_TRANSACTIONS));
        t.complete(3);
        assert_eq!(t.state, TxnState::CompleteCommit);
        assert_eq!(t.end(7, 0, true, 4), Ok(End::AlreadyDone), "a retried commit");
        assert_eq!(t.end(7, 0, false, 4), Err(ec::INVALID_TXN_STATE));
        // A second instance with the same id: the open transaction is aborted with a new epoch.
        t.add_partitions(7, 0, &parts, 5).unwrap();
        match t.init(60_000, None, &mut pid, 6).unwrap() {
            Init::AbortFirst { epoch, partitions } => {
                assert_eq!(epoch, 1);
                assert_eq!(partitions, parts);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.init(60_000, None, &mut pid, 6), Err(ec::CONCURRENT_TRANSACTIONS));
        t.complete(7);
        assert_eq!(t.init(60_000, None, &mut pid, 8), Ok(Init::Ready { producer_id: 7, epoch: 2 }));
        assert_eq!(t.add_partitions(7, 0, &parts, 9), Err(ec::PRODUCER_FENCED), "the zombie is fenced");
    }

    #[test]
    fn timeouts_abort_and_epochs_overflow_to_a_new_id() {
        let mut pid = || 555;
        let mut t = TxnMeta::new("t", 7, 1000, 0);
        t.init(1000, None, &mut pid, 0).unwrap();
        t.add_partitions(7, 0, &[("a".into(), 0)], 10).unwrap();
        assert_eq!(t.expire(1009, &mut pid), None);
        assert!(matches!(t.expire(1010, &mut pid), Some(End::Markers { commit: false, .. })));
        assert_eq!(t.epoch, 1);
        t.complete(1011);
        assert_eq!(t.state, TxnState::CompleteAbort);
        t.epoch = i16::MAX - 1;
        assert_eq!(t.init(1000, None, &mut pid, 2000), Ok(Init::Ready { producer_id: 555, epoch: 0 }));
        assert_eq!(t.init(1000, Some((1, 0)), &mut pid, 2000), Err(ec::PRODUCER_FENCED));
    }
}
