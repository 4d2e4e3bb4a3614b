//! Every request decoder the broker advertises: the first two bytes pick an advertised
//! (api key, version), the rest is the body. The decode goes through the connection's path
//! (`handlers::decode_only`, the allocation guard of `protocol::bounded`); when it accepts a
//! body, kafka-protocol's plain decode must give the same message. Run with
//! `-malloc_limit_mb=256`: a lying array length must not turn into a big allocation.
#![no_main]

use bytes::Bytes;
use corestream::handlers::api_versions::SUPPORTED;
use corestream::handlers::{decode_only, HandlerError};
use corestream::protocol::bounded;
use corestream::protocol::frame::Request;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fn same<M: Decodable + PartialEq + std::fmt::Debug>(body: &Bytes, version: i16) {
    if let Ok(m) = bounded::decode::<M>(body, version) {
        match M::decode(&mut body.clone(), version) {
            Ok(p) => assert_eq!(p, m, "bounded and plain decodes differ"),
            Err(e) => panic!("bounded decode accepted what the plain one rejects: {e}"),
        }
    }
}

macro_rules! by_api {
    ($api:expr, $f:ident, $($arg:expr),*) => {
        match $api {
            ApiKey::Produce => $f::<ProduceRequest>($($arg),*),
            ApiKey::Fetch => $f::<FetchRequest>($($arg),*),
            ApiKey::ListOffsets => $f::<ListOffsetsRequest>($($arg),*),
            ApiKey::Metadata => $f::<MetadataRequest>($($arg),*),
            ApiKey::ApiVersions => $f::<ApiVersionsRequest>($($arg),*),
            ApiKey::CreateTopics => $f::<CreateTopicsRequest>($($arg),*),
            ApiKey::DeleteTopics => $f::<DeleteTopicsRequest>($($arg),*),
            ApiKey::DeleteRecords => $f::<DeleteRecordsRequest>($($arg),*),
            ApiKey::DescribeConfigs => $f::<DescribeConfigsRequest>($($arg),*),
            ApiKey::AlterConfigs => $f::<AlterConfigsRequest>($($arg),*),
            ApiKey::DescribeLogDirs => $f::<DescribeLogDirsRequest>($($arg),*),
            ApiKey::CreatePartitions => $f::<CreatePartitionsRequest>($($arg),*),
            ApiKey::IncrementalAlterConfigs => $f::<IncrementalAlterConfigsRequest>($($arg),*),
            ApiKey::DescribeCluster => $f::<DescribeClusterRequest>($($arg),*),
            ApiKey::ElectLeaders => $f::<ElectLeadersRequest>($($arg),*),
            ApiKey::AlterReplicaLogDirs => $f::<AlterReplicaLogDirsRequest>($($arg),*),
            ApiKey::AlterPartitionReassignments => $f::<AlterPartitionReassignmentsRequest>($($arg),*),
            ApiKey::ListPartitionReassignments => $f::<ListPartitionReassignmentsRequest>($($arg),*),
            ApiKey::FindCoordinator => $f::<FindCoordinatorRequest>($($arg),*),
            ApiKey::JoinGroup => $f::<JoinGroupRequest>($($arg),*),
            ApiKey::SyncGroup => $f::<SyncGroupRequest>($($arg),*),
            ApiKey::Heartbeat => $f::<HeartbeatRequest>($($arg),*),
            ApiKey::LeaveGroup => $f::<LeaveGroupRequest>($($arg),*),
            ApiKey::OffsetCommit => $f::<OffsetCommitRequest>($($arg),*),
            ApiKey::OffsetFetch => $f::<OffsetFetchRequest>($($arg),*),
            ApiKey::DescribeGroups => $f::<DescribeGroupsRequest>($($arg),*),
            ApiKey::ListGroups => $f::<ListGroupsRequest>($($arg),*),
            ApiKey::DeleteGroups => $f::<DeleteGroupsRequest>($($arg),*),
            ApiKey::OffsetDelete => $f::<OffsetDeleteRequest>($($arg),*),
            ApiKey::InitProducerId => $f::<InitProducerIdRequest>($($arg),*),
            ApiKey::AddPartitionsToTxn => $f::<AddPartitionsToTxnRequest>($($arg),*),
            ApiKey::AddOffsetsToTxn => $f::<AddOffsetsToTxnRequest>($($arg),*),
            ApiKey::EndTxn => $f::<EndTxnRequest>($($arg),*),
            ApiKey::TxnOffsetCommit => $f::<TxnOffsetCommitRequest>($($arg),*),
            ApiKey::DescribeTransactions => $f::<DescribeTransactionsRequest>($($arg),*),
            ApiKey::ListTransactions => $f::<ListTransactionsRequest>($($arg),*),
            ApiKey::DescribeProducers => $f::<DescribeProducersRequest>($($arg),*),
            ApiKey::ConsumerGroupHeartbeat => $f::<ConsumerGroupHeartbeatRequest>($($arg),*),
            ApiKey::ConsumerGroupDescribe => $f::<ConsumerGroupDescribeRequest>($($arg),*),
            other => panic!("{other:?} is advertised but has no decoder here"),
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let [which, v, body @ ..] = data else { return };
    let (api, lo, hi) = SUPPORTED[*which as usize % SUPPORTED.len()];
    let version = lo + (*v as i16) % (hi - lo + 1);
    let body = Bytes::copy_from_slice(body);
    let req = Request {
        api_key: api as i16,
        api_version: version,
        correlation_id: 1,
        header: RequestHeader::default(),
        body: body.clone(),
        peer: None,
    };
    if let Err(e) = decode_only(&req) {
        assert!(matches!(e, HandlerError::Decode { .. }), "{e}");
    }
    by_api!(api, same, &body, version);
});
