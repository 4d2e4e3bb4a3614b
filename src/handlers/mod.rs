//! One handler per Kafka API family. Each decodes its request body, does its
//! work through the shard (locally or over the mesh) and encodes a response.
//!
//! [`start`] runs the part of a request that must keep the connection's
//! request order (a produce's appends are dispatched before the next request
//! is read) and returns a future for the rest, which runs concurrently with
//! later requests; the connection writes responses in request order.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod fetch_session;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod replicas;
pub mod txn;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::protocol::frame::{encode_response, Request};
use crate::shard::Shard;

pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Option<Out>, HandlerError>>>>;

/// An encoded response frame: one buffer, or chunks to write one after another
/// (a fetch passes record batches through without copying them).
#[derive(Debug)]
pub enum Out {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Out {
    pub fn len(&self) -> usize {
        match self {
            Out::One(b) => b.len(),
            Out::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The request cannot be answered: the connection is closed, as Kafka does.
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Decode { api: ApiKey, version: i16, reason: String },
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

/// Decodes a request body of type `M`, mapping failures to a connection-closing error.
/// Goes through [`crate::protocol::bounded`], so a lying array length fails the decode
/// instead of making kafka-protocol preallocate gigabytes (which aborts the process).
pub fn decode<M: Decodable>(req: &Request, api: ApiKey) -> Result<M, HandlerError> {
    crate::protocol::bounded::decode::<M>(&req.body, req.api_version).map_err(|e| HandlerError::Decode {
        api,
        version: req.api_version,
        reason: e.to_string(),
    })
}

/// Decodes `req`'s body with [`decode`] as the request type of its api key and drops it:
/// the decode step of every handler, without a shard (fuzz targets, property tests).
/// ApiVersions is decoded too, although its handler ignores the body.
pub fn decode_only(req: &Request) -> Result<(), HandlerError> {
    use kafka_protocol::messages::*;
    let api = ApiKey::try_from(req.api_key).map_err(|_| HandlerError::UnknownApi(req.api_key))?;
    fn d<M: Decodable>(req: &Request, api: ApiKey) -> Result<(), HandlerError> {
        decode::<M>(req, api).map(drop)
    }
    match api {
        ApiKey::Produce => d::<ProduceRequest>(req, api),
        ApiKey::Fetch => d::<FetchRequest>(req, api),
        ApiKey::ListOffsets => d::<ListOffsetsRequest>(req, api),
        ApiKey::Metadata => d::<MetadataRequest>(req, api),
        ApiKey::ApiVersions => d::<ApiVersionsRequest>(req, api),
        ApiKey::CreateTopics => d::<CreateTopicsRequest>(req, api),
        ApiKey::DeleteTopics => d::<DeleteTopicsRequest>(req, api),
        ApiKey::DeleteRecords => d::<DeleteRecordsRequest>(req, api),
        ApiKey::DescribeConfigs => d::<DescribeConfigsRequest>(req, api),
        ApiKey::AlterConfigs => d::<AlterConfigsRequest>(req, api),
        ApiKey::DescribeLogDirs => d::<DescribeLogDirsRequest>(req, api),
        ApiKey::CreatePartitions => d::<CreatePartitionsRequest>(req, api),
        ApiKey::IncrementalAlterConfigs => d::<IncrementalAlterConfigsRequest>(req, api),
        ApiKey::DescribeCluster => d::<DescribeClusterRequest>(req, api),
        ApiKey::ElectLeaders => d::<ElectLeadersRequest>(req, api),
        ApiKey::AlterReplicaLogDirs => d::<AlterReplicaLogDirsRequest>(req, api),
        ApiKey::AlterPartitionReassignments => d::<AlterPartitionReassignmentsRequest>(req, api),
        ApiKey::ListPartitionReassignments => d::<ListPartitionReassignmentsRequest>(req, api),
        ApiKey::FindCoordinator => d::<FindCoordinatorRequest>(req, api),
        ApiKey::JoinGroup => d::<JoinGroupRequest>(req, api),
        ApiKey::SyncGroup => d::<SyncGroupRequest>(req, api),
        ApiKey::Heartbeat => d::<HeartbeatRequest>(req, api),
        ApiKey::LeaveGroup => d::<LeaveGroupRequest>(req, api),
        ApiKey::OffsetCommit => d::<OffsetCommitRequest>(req, api),
        ApiKey::OffsetFetch => d::<OffsetFetchRequest>(req, api),
        ApiKey::DescribeGroups => d::<DescribeGroupsRequest>(req, api),
        ApiKey::ListGroups => d::<ListGroupsRequest>(req, api),
        ApiKey::DeleteGroups => d::<DeleteGroupsRequest>(req, api),
        ApiKey::OffsetDelete => d::<OffsetDeleteRequest>(req, api),
        ApiKey::InitProducerId => d::<InitProducerIdRequest>(req, api),
        ApiKey::AddPartitionsToTxn => d::<AddPartitionsToTxnRequest>(req, api),
        ApiKey::AddOffsetsToTxn => d::<AddOffsetsToTxnRequest>(req, api),
        ApiKey::EndTxn => d::<EndTxnRequest>(req, api),
        ApiKey::TxnOffsetCommit => d::<TxnOffsetCommitRequest>(req, api),
        ApiKey::DescribeTransactions => d::<DescribeTransactionsRequest>(req, api),
        ApiKey::ListTransactions => d::<ListTransactionsRequest>(req, api),
        ApiKey::DescribeProducers => d::<DescribeProducersRequest>(req, api),
        ApiKey::ConsumerGroupHeartbeat => d::<ConsumerGroupHeartbeatRequest>(req, api),
        ApiKey::ConsumerGroupDescribe => d::<ConsumerGroupDescribeRequest>(req, api),
        _ => Err(HandlerError::UnknownApi(req.api_key)),
    }
}

/// Encodes a response body for `req`.
pub fn respond<M: Encodable>(req: &Request, api: ApiKey, body: &M) -> Result<Option<Out>, HandlerError> {
    encode_response(api, req.api_version, req.correlation_id, body).map(|b| Some(Out::One(b))).map_err(HandlerError::Encode)
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Starts handling `req`; see the module docs for the split between the part
/// done now and the returned future.
pub async fn start(shard: &Rc<Shard>, req: Request) -> Result<ResponseFuture, HandlerError> {
    let api = ApiKey::try_from(req.api_key).map_err(|_| HandlerError::UnknownApi(req.api_key))?;
    let Some(range) = api_versions::supported(api) else {
        return Err(HandlerError::UnknownApi(req.api_key));
    };
    if api == ApiKey::ApiVersions {
        let r = api_versions::handle(&req);
        return Ok(Box::pin(async move { r }));
    }
    if req.api_version < range.0 || req.api_version > range.1 {
        return Err(HandlerError::UnsupportedVersion { api, version: req.api_version });
    }
    if !matches!(api, ApiKey::Produce | ApiKey::Fetch) {
        // Control-plane requests only (the data path would drown the log).
        tracing::debug!(
            api = ?api,
            version = req.api_version,
            correlation_id = req.correlation_id,
            client_id = req.header.client_id.as_deref().unwrap_or(""),
            shard = shard.id,
            "request"
        );
    }
    let shard = shard.clone();
    Ok(match api {
        ApiKey::Produce => produce::start(&shard, req).await?,
        ApiKey::Fetch => Box::pin(async move { fetch::handle(&shard, req).await }),
        ApiKey::ListOffsets => Box::pin(async move { list_offsets::handle(&shard, req).await }),
        ApiKey::Metadata => Box::pin(async move { metadata::handle(&shard, req).await }),
        ApiKey::CreateTopics => Box::pin(async move { admin::create_topics(&shard, req).await }),
        ApiKey::DeleteTopics => Box::pin(async move { admin::delete_topics(&shard, req).await }),
        ApiKey::CreatePartitions => Box::pin(async move { admin::create_partitions(&shard, req).await }),
        ApiKey::DeleteRecords => Box::pin(async move { admin::delete_records(&shard, req).await }),
        ApiKey::DescribeConfigs => Box::pin(async move { configs::describe(&shard, req).await }),
        ApiKey::AlterConfigs => Box::pin(async move { configs::alter(&shard, req).await }),
        ApiKey::IncrementalAlterConfigs => Box::pin(async move { configs::incremental_alter(&shard, req).await }),
        ApiKey::DescribeCluster => Box::pin(async move { admin::describe_cluster(&shard, req).await }),
        ApiKey::DescribeLogDirs => Box::pin(async move { admin::describe_log_dirs(&shard, req).await }),
        ApiKey::ElectLeaders => Box::pin(async move { replicas::elect_leaders(&shard, req).await }),
        ApiKey::AlterReplicaLogDirs => Box::pin(async move { replicas::alter_replica_log_dirs(&shard, req).await }),
        ApiKey::AlterPartitionReassignments => Box::pin(async move { replicas::alter_partition_reassignments(&shard, req).await }),
        ApiKey::ListPartitionReassignments => Box::pin(async move { replicas::list_partition_reassignments(&shard, req).await }),
        ApiKey::FindCoordinator => Box::pin(async move { groups::find_coordinator(&shard, req).await }),
        ApiKey::JoinGroup => Box::pin(async move { groups::join_group(&shard, req).await }),
        ApiKey::SyncGroup => Box::pin(async move { groups::sync_group(&shard, req).await }),
        ApiKey::Heartbeat => Box::pin(async move { groups::heartbeat(&shard, req).await }),
        ApiKey::LeaveGroup => Box::pin(async move { groups::leave_group(&shard, req).await }),
        ApiKey::OffsetCommit => Box::pin(async move { groups::offset_commit(&shard, req).await }),
        ApiKey::OffsetFetch => Box::pin(async move { groups::offset_fetch(&shard, req).await }),
        ApiKey::DescribeGroups => Box::pin(async move { groups::describe_groups(&shard, req).await }),
        ApiKey::ListGroups => Box::pin(async move { groups::list_groups(&shard, req).await }),
        ApiKey::DeleteGroups => Box::pin(async move { groups::delete_groups(&shard, req).await }),
        ApiKey::OffsetDelete => Box::pin(async move { groups::offset_delete(&shard, req).await }),
        ApiKey::ConsumerGroupHeartbeat => Box::pin(async move { groups::consumer_group_heartbeat(&shard, req).await }),
        ApiKey::InitProducerId => Box::pin(async move { txn::init_producer_id(&shard, req).await }),
        ApiKey::AddPartitionsToTxn => Box::pin(async move { txn::add_partitions_to_txn(&shard, req).await }),
        ApiKey::AddOffsetsToTxn => Box::pin(async move { txn::add_offsets_to_txn(&shard, req).await }),
        ApiKey::EndTxn => Box::pin(async move { txn::end_txn(&shard, req).await }),
        ApiKey::TxnOffsetCommit => Box::pin(async move { txn::txn_offset_commit(&shard, req).await }),
        ApiKey::DescribeTransactions => Box::pin(async move { txn::describe_transactions(&shard, req).await }),
        ApiKey::ListTransactions => Box::pin(async move { txn::list_transactions(&shard, req).await }),
        ApiKey::DescribeProducers => Box::pin(async move { txn::describe_producers(&shard, req).await }),
        ApiKey::ConsumerGroupDescribe => Box::pin(async move { groups::consumer_group_describe(&shard, req).await }),
        _ => return Err(HandlerError::UnknownApi(req.api_key)),
    })
}
