//! ApiVersions: the APIs this broker implements and their version ranges.
//! Only what is built is advertised.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::{respond, HandlerError};
use crate::protocol::errors as ec;
use crate::protocol::frame::{encode_response, Request};

/// (api, min version, max version) for every API the broker serves.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == api).map(|&(_, lo, hi)| (lo, hi))
}

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| ApiVersion::default().with_api_key(k as i16).with_min_version(lo).with_max_version(hi))
        .collect()
}

/// Answers ApiVersions. An unsupported version gets a v0-format answer with
/// UNSUPPORTED_VERSION and the supported ranges, so the client can retry.
pub fn handle(req: &Request) -> Result<Option<super::Out>, HandlerError> {
    let (lo, hi) = supported(ApiKey::ApiVersions).expect("ApiVersions is supported");
    if req.api_version < lo || req.api_version > hi {
        let body = ApiVersionsResponse::default().with_error_code(ec::UNSUPPORTED_VERSION).with_api_keys(api_list());
        return encode_response(ApiKey::ApiVersions, 0, req.correlation_id, &body)
            .map(|b| Some(super::Out::One(b)))
            .map_err(HandlerError::Encode);
    }
    // The request body (client software name/version) is informational; a body that
    // does not decode is still answered, as Kafka does for ApiVersions.
    let body = ApiVersionsResponse::default().with_error_code(ec::NONE).with_api_keys(api_list());
    respond(req, ApiKey::ApiVersions, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_what_the_codec_knows() {
        for &(k, lo, hi) in SUPPORTED {
            let v = k.valid_versions();
            assert!(lo <= hi && lo >= v.min && hi <= v.max, "{k:?} {lo}..{hi} vs {v}");
        }
        assert_eq!(supported(ApiKey::Fetch), Some(crate::protocol::fetch_encode::VERSIONS), "the fetch encoder covers what is advertised");
    }
}
