//! Transaction APIs: InitProducerId (idempotent and transactional),
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
//! DescribeTransactions, ListTransactions, DescribeProducers.
//!
//! Requests naming a transactional id go to the core that coordinates it (see
//! [`crate::txn`]); TxnOffsetCommit goes to the group's coordinator.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{decode, respond, str_bytes, HandlerError};
use crate::group::{partition_for, CommitPart, GroupOp, GroupReply, OFFSETS_TOPIC};
use crate::protocol::errors as ec;
use crate::protocol::frame::Request;
use crate::shard::{internal, Op, Reply, Shard};
use crate::txn::state::TxnMeta;
use crate::txn::{TxnOp, TxnReply, TXN_TOPIC};

type Res = Result<Option<super::Out>, HandlerError>;

/// Creates `__transaction_state` when needed; returns its partition count.
pub async fn ensure_txn_topic(shard: &Rc<Shard>) -> Result<i32, i16> {
    internal::ensure_topic(shard, TXN_TOPIC, shard.config.txn_state_partitions).await
}

async fn call(shard: &Rc<Shard>, txn_id: &str, op: TxnOp) -> Result<TxnReply, i16> {
    let n = ensure_txn_topic(shard).await?;
    let owner = shard.image().owner(TXN_TOPIC, partition_for(txn_id, n)).ok_or(ec::COORDINATOR_NOT_AVAILABLE)?;
    match shard.call(owner, Op::Txn(op)).await {
        Reply::Txn(r) => Ok(r),
        _ => Err(ec::COORDINATOR_NOT_AVAILABLE),
    }
}

/// Older request versions know PRODUCER_FENCED as INVALID_PRODUCER_EPOCH (KIP-588).
fn fenced_for(code: i16, version: i16, first_version_with_fenced: i16) -> i16 {
    if code == ec::PRODUCER_FENCED && version < first_version_with_fenced {
        ec::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

fn code_of(r: Result<TxnReply, i16>) -> i16 {
    match r {
        Ok(TxnReply::Code(c)) => c,
        Ok(_) => ec::UNKNOWN_SERVER_ERROR,
        Err(e) => e,
    }
}

pub async fn init_producer_id(shard: &Rc<Shard>, req: Request) -> Res {
    let body: InitProducerIdRequest = decode(&req, ApiKey::InitProducerId)?;
    let fail = |e: i16| InitProducerIdResponse::default().with_error_code(e).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    let txn_id = body.transactional_id.as_ref().map(|t| t.to_string()).filter(|t| !t.is_empty());
    let r = match txn_id {
        // Idempotent only: a fresh producer id every time, as Kafka does.
        None => shard.next_producer_id().await.map(|id| (id, 0)),
        Some(txn_id) => {
            let expected = (req.api_version >= 3 && body.producer_id.0 >= 0).then_some((body.producer_id.0, body.producer_epoch));
            match call(shard, &txn_id, TxnOp::Init { txn_id: txn_id.clone(), timeout_ms: body.transaction_timeout_ms, expected }).await {
                Ok(TxnReply::Init(r)) => r,
                Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
                Err(e) => Err(e),
            }
        }
    };
    let resp = match r {
        Ok((id, epoch)) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch),
        Err(e) => fail(fenced_for(e, req.api_version, 4)),
    };
    respond(&req, ApiKey::InitProducerId, &resp)
}

pub async fn add_partitions_to_txn(shard: &Rc<Shard>, req: Request) -> Res {
    let body: AddPartitionsToTxnRequest = decode(&req, ApiKey::AddPartitionsToTxn)?;
    if req.api_version >= 4 {
        return add_partitions_batched(shard, &req, body).await;
    }
    let txn_id = body.v3_and_below_transactional_id.to_string();
    let image = shard.image();
    let mut parts = Vec::new();
    let mut unknown = Vec::new();
    for t in &body.v3_and_below_topics {
        for p in &t.partitions {
            let known = image.topics.get(t.name.as_str()).is_some_and(|tm| *p >= 0 && (*p as usize) < tm.partitions.len());
            if known {
                parts.push((t.name.to_string(), *p));
            } else {
                unknown.push((t.name.to_string(), *p));
            }
        }
    }
    let code = if !unknown.is_empty() {
        None
    } else {
        let op = TxnOp::AddPartitions {
            txn_id: txn_id.clone(),
            producer_id: body.v3_and_below_producer_id.0,
            epoch: body.v3_and_below_producer_epoch,
            parts: parts.clone(),
        };
        Some(fenced_for(code_of(call(shard, &txn_id, op).await), req.api_version, 2))
    };
    // Per partition: the common answer, or (with unknown partitions) UNKNOWN for those and
    // OPERATION_NOT_ATTEMPTED for the rest.
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for t in &body.v3_and_below_topics {
        let r = t
            .partitions
            .iter()
            .map(|p| {
                let e = match code {
                    Some(c) => c,
                    None if unknown.contains(&(t.name.to_string(), *p)) => ec::UNKNOWN_TOPIC_OR_PARTITION,
                    None => ec::OPERATION_NOT_ATTEMPTED,
                };
                AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(e)
            })
            .collect();
        results.push(AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(r));
    }
    respond(&req, ApiKey::AddPartitionsToTxn, &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
}

/// AddPartitionsToTxn v4+: several transactions per request, each either added to or
/// only verified (KIP-890).
async fn add_partitions_batched(shard: &Rc<Shard>, req: &Request, body: AddPartitionsToTxnRequest) -> Res {
    use kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnResult;
    let image = shard.image();
    let mut results = Vec::with_capacity(body.transactions.len());
    for t in &body.transactions {
        let txn_id = t.transactional_id.to_string();
        let parts: Vec<(String, i32)> = t.topics.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.name.to_string(), *p))).collect();
        let unknown: Vec<bool> =
            parts.iter().map(|(n, p)| !image.topics.get(n).is_some_and(|tm| *p >= 0 && (*p as usize) < tm.partitions.len())).collect();
        let codes: Vec<i16> = if unknown.iter().any(|u| *u) {
            unknown.iter().map(|u| if *u { ec::UNKNOWN_TOPIC_OR_PARTITION } else { ec::OPERATION_NOT_ATTEMPTED }).collect()
        } else if t.verify_only {
            let op = TxnOp::Verify { txn_id: txn_id.clone(), producer_id: t.producer_id.0, epoch: t.producer_epoch, parts: parts.clone() };
            match call(shard, &txn_id, op).await {
                Ok(TxnReply::Codes(c)) => c,
                Ok(_) => vec![ec::UNKNOWN_SERVER_ERROR; parts.len()],
                Err(e) => vec![e; parts.len()],
            }
        } else {
            let op = TxnOp::AddPartitions { txn_id: txn_id.clone(), producer_id: t.producer_id.0, epoch: t.producer_epoch, parts: parts.clone() };
            vec![code_of(call(shard, &txn_id, op).await); parts.len()]
        };
        let mut topic_results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
        for ((topic, p), code) in parts.iter().zip(codes) {
            let r = AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(code);
            match topic_results.iter_mut().find(|x| x.name.as_str() == topic) {
                Some(x) => x.results_by_partition.push(r),
                None => topic_results.push(AddPartitionsToTxnTopicResult::default().with_name(TopicName(str_bytes(topic))).with_results_by_partition(vec![r])),
            }
        }
        results.push(AddPartitionsToTxnResult::default().with_transactional_id(t.transactional_id.clone()).with_topic_results(topic_results));
    }
    respond(req, ApiKey::AddPartitionsToTxn, &AddPartitionsToTxnResponse::default().with_results_by_transaction(results))
}

pub async fn add_offsets_to_txn(shard: &Rc<Shard>, req: Request) -> Res {
    let body: AddOffsetsToTxnRequest = decode(&req, ApiKey::AddOffsetsToTxn)?;
    let txn_id = body.transactional_id.to_string();
    let code = match super::groups::ensure_offsets_topic(shard).await {
        Err(e) => e,
        Ok(n) => {
            let p = partition_for(body.group_id.as_str(), n);
            let op = TxnOp::AddPartitions {
                txn_id: txn_id.clone(),
                producer_id: body.producer_id.0,
                epoch: body.producer_epoch,
                parts: vec![(OFFSETS_TOPIC.to_string(), p)],
            };
            fenced_for(code_of(call(shard, &txn_id, op).await), req.api_version, 2)
        }
    };
    respond(&req, ApiKey::AddOffsetsToTxn, &AddOffsetsToTxnResponse::default().with_error_code(code))
}

pub async fn end_txn(shard: &Rc<Shard>, req: Request) -> Res {
    let body: EndTxnRequest = decode(&req, ApiKey::EndTxn)?;
    let txn_id = body.transactional_id.to_string();
    let op = TxnOp::End { txn_id: txn_id.clone(), producer_id: body.producer_id.0, epoch: body.producer_epoch, commit: body.committed };
    let code = fenced_for(code_of(call(shard, &txn_id, op).await), req.api_version, 2);
    respond(&req, ApiKey::EndTxn, &EndTxnResponse::default().with_error_code(code))
}

pub async fn txn_offset_commit(shard: &Rc<Shard>, req: Request) -> Res {
    let body: TxnOffsetCommitRequest = decode(&req, ApiKey::TxnOffsetCommit)?;
    let group = body.group_id.to_string();
    let parts: Vec<CommitPart> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| CommitPart {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let keys: Vec<(String, i32)> = parts.iter().map(|c| (c.topic.clone(), c.partition)).collect();
    let op = GroupOp::TxnCommit {
        group: group.clone(),
        producer_id: body.producer_id.0,
        epoch: body.producer_epoch,
        member_id: if req.api_version >= 3 { body.member_id.to_string() } else { String::new() },
        generation: if req.api_version >= 3 { body.generation_id } else { -1 },
        parts,
    };
    let results: Vec<(String, i32, i16)> = match super::groups::call(shard, &group, op).await {
        Ok(GroupReply::Commit(r)) => r,
        Ok(_) => keys.into_iter().map(|(t, p)| (t, p, ec::UNKNOWN_SERVER_ERROR)).collect(),
        Err(e) => keys.into_iter().map(|(t, p)| (t, p, e)).collect(),
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (t, p, e) in results {
        let part = TxnOffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(fenced_for(e, req.api_version, 3));
        match topics.iter_mut().find(|x| x.name.as_str() == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(TxnOffsetCommitResponseTopic::default().with_name(TopicName(str_bytes(&t))).with_partitions(vec![part])),
        }
    }
    respond(&req, ApiKey::TxnOffsetCommit, &TxnOffsetCommitResponse::default().with_topics(topics))
}

fn topics_of(t: &TxnMeta) -> Vec<describe_transactions_response::TopicData> {
    let mut out: Vec<describe_transactions_response::TopicData> = Vec::new();
    for (topic, p) in &t.partitions {
        match out.iter_mut().find(|x| x.topic.as_str() == topic) {
            Some(x) => x.partitions.push(*p),
            None => out.push(describe_transactions_response::TopicData::default().with_topic(TopicName(str_bytes(topic))).with_partitions(vec![*p])),
        }
    }
    out
}

pub async fn describe_transactions(shard: &Rc<Shard>, req: Request) -> Res {
    let body: DescribeTransactionsRequest = decode(&req, ApiKey::DescribeTransactions)?;
    let mut states = Vec::new();
    for id in &body.transactional_ids {
        let txn_id = id.to_string();
        let r = match call(shard, &txn_id, TxnOp::Describe { txn_id: txn_id.clone() }).await {
            Ok(TxnReply::Described(r)) => r,
            Ok(_) => Err(ec::UNKNOWN_SERVER_ERROR),
            Err(e) => Err(e),
        };
        let s = describe_transactions_response::TransactionState::default().with_transactional_id(id.clone());
        states.push(match r {
            Err(e) => s.with_error_code(e).with_producer_id(ProducerId(-1)).with_producer_epoch(-1).with_transaction_state(str_bytes("")),
            Ok(t) => s
                .with_transaction_state(str_bytes(t.state.name()))
                .with_transaction_timeout_ms(t.timeout_ms)
                .with_transaction_start_time_ms(t.start_ms)
                .with_producer_id(ProducerId(t.producer_id))
                .with_producer_epoch(t.epoch)
                .with_topics(topics_of(&t)),
        });
    }
    respond(&req, ApiKey::DescribeTransactions, &DescribeTransactionsResponse::default().with_transaction_states(states))
}

pub async fn list_transactions(shard: &Rc<Shard>, req: Request) -> Res {
    let body: ListTransactionsRequest = decode(&req, ApiKey::ListTransactions)?;
    let known = ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "PrepareEpochFence", "Dead"];
    let unknown: Vec<StrBytes> = body.state_filters.iter().filter(|s| !known.contains(&s.as_str())).cloned().collect();
    let now = crate::util::now_ms();
    let mut all = Vec::new();
    if shard.image().topics.contains_key(TXN_TOPIC) {
        for s in 0..shard.nr_shards {
            if let Reply::Txn(TxnReply::Listed(l)) = shard.call(s, Op::Txn(TxnOp::List)).await {
                all.extend(l);
            }
        }
    }
    let states = all
        .into_iter()
        .filter(|t| body.state_filters.is_empty() || body.state_filters.iter().any(|s| s.as_str() == t.state.name()))
        .filter(|t| body.producer_id_filters.is_empty() || body.producer_id_filters.iter().any(|p| p.0 == t.producer_id))
        .filter(|t| req.api_version < 1 || body.duration_filter < 0 || (t.start_ms >= 0 && now - t.start_ms >= body.duration_filter))
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(&t.id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(str_bytes(t.state.name()))
        })
        .collect();
    respond(&req, ApiKey::ListTransactions, &ListTransactionsResponse::default().with_unknown_state_filters(unknown).with_transaction_states(states))
}

pub async fn describe_producers(shard: &Rc<Shard>, req: Request) -> Res {
    use describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
    let body: DescribeProducersRequest = decode(&req, ApiKey::DescribeProducers)?;
    let image = shard.image();
    let mut topics = Vec::new();
    for t in &body.topics {
        let mut parts = Vec::new();
        for p in &t.partition_indexes {
            let r = match image.owner(t.name.as_str(), *p) {
                None => Err(ec::UNKNOWN_TOPIC_OR_PARTITION),
                Some(owner) => match shard.call(owner, Op::DescribeProducers { topic: t.name.to_string(), partition: *p }).await {
                    Reply::Producers(r) => r,
                    _ => Err(ec::UNKNOWN_SERVER_ERROR),
                },
            };
            let pr = PartitionResponse::default().with_partition_index(*p);
            parts.push(match r {
                Err(e) => pr.with_error_code(e),
                Ok(list) => pr.with_active_producers(
                    list.into_iter()
                        .map(|(id, epoch, last_seq, last_ts, txn_start)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(epoch as i32)
                                .with_last_sequence(last_seq)
                                .with_last_timestamp(last_ts)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(txn_start)
                        })
                        .collect(),
                ),
            });
        }
        topics.push(TopicResponse::default().with_name(t.name.clone()).with_partitions(parts));
    }
    respond(&req, ApiKey::DescribeProducers, &DescribeProducersResponse::default().with_topics(topics))
}
