//! Transactions: the transaction coordinator.
//!
//! Each transactional id maps to a partition of the internal topic
//! `__transaction_state` (Kafka's hash, like groups) and so to the core that
//! owns it; that core's [`coordinator`] keeps the id's [`state::TxnMeta`]
//! (producer id and epoch, state, partitions in the transaction) as records of
//! that topic. Ending a transaction persists PrepareCommit/PrepareAbort, writes
//! a commit/abort marker (a control batch) to every partition of the
//! transaction on its owning core, then persists CompleteCommit/CompleteAbort.
//! After a restart a Prepare* state is finished; an Ongoing transaction past
//! its timeout is aborted with a bumped epoch, fencing its producer.
//!
//! The partitions' side (open transactions, last stable offset, aborted
//! transactions for read_committed) lives in [`crate::storage::producers`];
//! offsets committed inside a transaction in [`crate::group::coordinator`].

pub mod coordinator;
pub mod state;

/// The internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// What a transaction request asks the coordinating core to do.
#[derive(Debug)]
pub enum TxnOp {
    Init { txn_id: String, timeout_ms: i32, expected: Option<(i64, i16)> },
    AddPartitions { txn_id: String, producer_id: i64, epoch: i16, parts: Vec<(String, i32)> },
    End { txn_id: String, producer_id: i64, epoch: i16, commit: bool },
    /// AddPartitionsToTxn v4+ `verify_only`: one error code per partition.
    Verify { txn_id: String, producer_id: i64, epoch: i16, parts: Vec<(String, i32)> },
    Describe { txn_id: String },
    /// Every transaction this core coordinates.
    List,
}

#[derive(Debug)]
pub enum TxnReply {
    Init(Result<(i64, i16), i16>),
    Code(i16),
    Codes(Vec<i16>),
    Described(Result<state::TxnMeta, i16>),
    Listed(Vec<state::TxnMeta>),
}
