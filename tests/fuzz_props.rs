//! Property tests of everything that reads untrusted bytes: request framing, every request
//! decoder the broker advertises, record batch validation, and segment recovery. The
//! cargo-fuzz targets in `tests/fuzz/` drive the same functions for long runs; findings of
//! either become cases here.
//!
//! Cheap by default (a few seconds in all): each property runs `PROPTEST_CASES` cases
//! (default 64; recovery, which opens a real log per case, a quarter of that).
//! `PROPTEST_CASES=10000 cargo test --test fuzz_props` for a long run.
//!
//! A counting global allocator records, per thread, the largest single allocation, so the
//! decoders are checked for what they ask the allocator for, not just for panics.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use corestream::handlers::api_versions::SUPPORTED;
use corestream::handlers::{decode_only, HandlerError};
use corestream::protocol::batch::{self, BatchError, BATCH_HEADER_BYTES, PARTITION_LEADER_EPOCH_POS};
use corestream::protocol::bounded;
use corestream::protocol::frame::{frame_size, parse_request, FrameError, Request};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size)
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

/// What decoding a small body may ask for at once: `CLAMP_FLOOR + 1` elements of the largest
/// request element type is a few MiB; the bug this guards against asked for ~150 GB.
const DECODE_ALLOCATION_MAX: usize = 64 << 20;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig { cases: cases(default), failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Frames and headers
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn frame_size_accepts_exactly_1_to_max(buf in prop::collection::vec(any::<u8>(), 0..8), max in 0usize..1 << 20) {
        match frame_size(&buf, max) {
            Ok(None) => prop_assert!(buf.len() < 4),
            Ok(Some(s)) => {
                prop_assert_eq!(s as i64, i32::from_be_bytes(buf[..4].try_into().unwrap()) as i64);
                prop_assert!(s >= 1 && s <= max);
            }
            Err(FrameError::BadSize { size, .. }) => prop_assert!(size <= 0 || size as usize > max),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn parse_request_never_panics(buf in prop::collection::vec(any::<u8>(), 0..64)) {
        let ((), largest) = largest_allocation(|| {
            match parse_request(Bytes::from(buf.clone())) {
                Ok(r) => {
                    assert_eq!(r.api_key, i16::from_be_bytes([buf[0], buf[1]]));
                    assert!(r.body.len() <= buf.len() - 8);
                }
                Err(FrameError::UnknownApi(k)) => assert!(ApiKey::try_from(k).is_err()),
                Err(_) => {}
            }
        });
        prop_assert!(largest < DECODE_ALLOCATION_MAX);
    }
}

// ---------------------------------------------------------------------------------------------
// Request decoders
// ---------------------------------------------------------------------------------------------

/// Every (api key, version) the broker advertises.
fn advertised() -> Vec<(i16, i16)> {
    SUPPORTED.iter().flat_map(|&(k, lo, hi)| (lo..=hi).map(move |v| (k as i16, v))).collect()
}

fn request(api_key: i16, api_version: i16, body: Bytes) -> Request {
    Request { api_key, api_version, correlation_id: 1, header: RequestHeader::default(), body, peer: None }
}

/// Decodes `body` both ways. Whenever the bounded decode accepts it, the plain kafka-protocol
/// decode must be safe to run too (that is the module's argument) and give the same message.
fn same<M: Decodable + PartialEq + Debug>(body: &Bytes, version: i16) -> Result<(), String> {
    let Ok(m) = bounded::decode::<M>(body, version) else { return Ok(()) };
    let (plain, largest) = largest_allocation(|| M::decode(&mut body.clone(), version));
    if largest >= DECODE_ALLOCATION_MAX + body.len() * 64 {
        return Err(format!("plain decode of an accepted body allocated {largest} bytes"));
    }
    match plain {
        Ok(p) if p == m => Ok(()),
        Ok(p) => Err(format!("bounded {m:?} != plain {p:?}")),
        Err(e) => Err(format!("bounded accepted, plain failed: {e}")),
    }
}

fn encode<M: Encodable>(m: &M, version: i16) -> Option<Bytes> {
    let mut b = BytesMut::new();
    m.encode(&mut b, version).ok()?;
    Some(b.freeze())
}

/// Runs `$f::<RequestType>($args)` for the request type of `$api`.
macro_rules! by_api {
    ($api:expr, $f:ident, $($arg:expr),*) => {
        match ApiKey::try_from($api).expect("advertised api") {
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

fn default_encoding<M: Encodable + Default>(version: i16) -> Option<Bytes> {
    encode(&M::default(), version)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Valid encodings with non-empty arrays, strings and records, for the requests clients send
/// most; every other advertised request is seeded with its default.
fn populated(api: i16, version: i16) -> Vec<Bytes> {
    let topic = || TopicName(s("orders"));
    let batch = batch::build_batch(&[(Some(b"k"), Some(b"value")), (None, Some(b""))], 1_700_000_000_000).freeze();
    let mut out = Vec::new();
    match ApiKey::try_from(api).unwrap() {
        ApiKey::Produce => out.extend(encode(
            &ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
                produce_request::TopicProduceData::default().with_name(topic()).with_partition_data(vec![
                    produce_request::PartitionProduceData::default().with_index(3).with_records(Some(batch.clone())),
                ]),
            ]),
            version,
        )),
        ApiKey::Fetch => out.extend(encode(
            &FetchRequest::default().with_max_wait_ms(500).with_session_id(1_843_820_931).with_topics(vec![
                fetch_request::FetchTopic::default().with_topic(topic()).with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0).with_fetch_offset(42).with_partition_max_bytes(1 << 20),
                ]),
            ]),
            version,
        )),
        ApiKey::Metadata => out.extend(encode(
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
                metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s("b")))),
            ])),
            version,
        )),
        ApiKey::JoinGroup => out.extend(encode(
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(45_000)
                .with_rebalance_timeout_ms(300_000)
                .with_member_id(s("m-1"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's']))]),
            version,
        )),
        ApiKey::OffsetCommit => out.extend(encode(
            &OffsetCommitRequest::default().with_group_id(GroupId(s("g"))).with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default().with_name(topic()).with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(1).with_committed_offset(99),
                ]),
            ]),
            version,
        )),
        _ => {}
    }
    out
}

/// Seeds for one (api, version): its default encoding and any populated ones.
fn seeds(api: i16, version: i16) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = by_api!(api, default_encoding, version).into_iter().collect();
    out.extend(populated(api, version));
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    /// An interesting i32 written over four bytes: counts, lengths.
    SetI32(usize, i32),
    /// A long unsigned varint written over five bytes: compact counts and lengths.
    SetVarint(usize, u32),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![0, -1, 1, 0x7fff_ffff, i32::MIN, 0x0001_0001, 0x00ff_ffff, 1 << 24]);
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (any::<usize>(), interesting).prop_map(|(a, v)| Mutation::SetI32(a, v)),
        (any::<usize>(), prop_oneof![Just(u32::MAX), Just(0x1_0002), any::<u32>()]).prop_map(|(a, v)| Mutation::SetVarint(a, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    let n = body.len();
    match *m {
        Mutation::Flip(a, bit) if n > 0 => body[a % n] ^= 1 << bit,
        Mutation::Set(a, b) if n > 0 => body[a % n] = b,
        Mutation::SetI32(a, v) if n >= 4 => {
            let at = a % (n - 3);
            body[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        Mutation::SetVarint(a, v) if n >= 5 => {
            let at = a % (n - 4);
            for i in 0..5 {
                let group = ((v >> (7 * i)) & 0x7f) as u8;
                body[at + i] = if i < 4 { group | 0x80 } else { group };
            }
        }
        Mutation::Truncate(a) => body.truncate(a % (n + 1)),
        Mutation::Insert(a, b) => body.insert(a % (n + 1), b),
        _ => {}
    }
}

/// Decodes `body` through the connection's decode path; checks it neither panics nor asks
/// for an absurd allocation, and that an accepted body decodes the same without the guard.
fn check_decode(api: i16, version: i16, body: Bytes) -> Result<(), TestCaseError> {
    let (r, largest) = largest_allocation(|| decode_only(&request(api, version, body.clone())));
    prop_assert!(
        largest < DECODE_ALLOCATION_MAX,
        "api {api} v{version}: decoding {} bytes allocated {largest} at once ({:?})",
        body.len(),
        r.err()
    );
    if let Err(e) = &r {
        prop_assert!(matches!(e, HandlerError::Decode { .. }), "{e}");
    }
    by_api!(api, same, &body, version).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary bodies for every advertised (api key, version).
    #[test]
    fn every_request_decoder_survives_arbitrary_bodies(
        (api, version) in prop::sample::select(advertised()),
        body in prop::collection::vec(any::<u8>(), 0..160),
    ) {
        check_decode(api, version, Bytes::from(body))?;
    }

    /// Valid encodings decode; mutated ones fail cleanly or decode the same with and without
    /// the allocation guard.
    #[test]
    fn every_request_decoder_survives_mutated_encodings(
        (api, version) in prop::sample::select(advertised()),
        pick in any::<usize>(),
        muts in prop::collection::vec(mutation(), 0..4),
    ) {
        let seeds = seeds(api, version);
        prop_assume!(!seeds.is_empty());
        let seed = &seeds[pick % seeds.len()];
        prop_assert!(decode_only(&request(api, version, seed.clone())).is_ok(), "api {api} v{version}: a valid encoding fails");
        let mut body = seed.to_vec();
        for m in &muts {
            apply(&mut body, m);
        }
        check_decode(api, version, Bytes::from(body))?;
    }
}

/// Every valid seed of every advertised (api, version) decodes through the guard to the same
/// message as without it: the guard costs well-formed clients nothing.
#[test]
fn every_advertised_version_decodes_its_valid_encodings() {
    let mut checked = 0;
    let mut unseeded = Vec::new();
    for (api, version) in advertised() {
        let seeds = seeds(api, version);
        if seeds.is_empty() {
            unseeded.push((api, version));
        }
        for seed in seeds {
            decode_only(&request(api, version, seed.clone())).unwrap_or_else(|e| panic!("api {api} v{version}: {e}"));
            by_api!(api, same, &seed, version).unwrap_or_else(|e| panic!("api {api} v{version}: {e}"));
            checked += 1;
        }
    }
    assert!(unseeded.is_empty(), "no valid encoding for {unseeded:?}");
    assert!(checked > advertised().len(), "only {checked} seeds");
}

/// Regression: 5-byte Metadata v0 and 7-byte v9 bodies declaring 2^31-1 and 2^32-2 topics made
/// kafka-protocol 0.18.0 preallocate ~150 GB / ~300 GB (`Vec::with_capacity` of the count),
/// which aborts the process. A count the allocator can give (2^22) shows the amplification
/// without the guard; with it, the decode fails and allocates little.
#[test]
fn lying_array_counts_do_not_allocate() {
    let mut modest = vec![0x00, 0x40, 0x00, 0x00];
    modest.push(0);
    let modest = Bytes::from(modest);
    let (plain, largest) = largest_allocation(|| MetadataRequest::decode(&mut modest.clone(), 0));
    assert!(plain.is_err());
    assert!(largest >= 128 << 20, "kafka-protocol preallocated only {largest} bytes: has it been fixed upstream?");

    for (version, body) in [
        (0, &[0x7f, 0xff, 0xff, 0xff, 0][..]),
        (9, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0][..]),
        (12, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0][..]),
    ] {
        let (r, largest) = largest_allocation(|| decode_only(&request(3, version, Bytes::copy_from_slice(body))));
        assert!(r.is_err());
        assert!(largest < DECODE_ALLOCATION_MAX, "{largest}");
    }
    // A Produce v9 whose topic array claims 2^32-2 entries, and a v3 one whose partition array
    // claims i32::MAX.
    let mut v3 = Vec::new();
    v3.extend_from_slice(&(-1i16).to_be_bytes());
    v3.extend_from_slice(&1i16.to_be_bytes());
    v3.extend_from_slice(&30_000i32.to_be_bytes());
    v3.extend_from_slice(&1i32.to_be_bytes());
    v3.extend_from_slice(&1i16.to_be_bytes());
    v3.push(b't');
    v3.extend_from_slice(&i32::MAX.to_be_bytes());
    let v9 = [0u8, 0, 1, 0, 0, 0x75, 0x30, 0xff, 0xff, 0xff, 0xff, 0x0f, 0];
    for (version, body) in [(3, &v3[..]), (9, &v9[..])] {
        let (r, largest) = largest_allocation(|| decode_only(&request(0, version, Bytes::copy_from_slice(body))));
        assert!(r.is_err());
        assert!(largest < DECODE_ALLOCATION_MAX, "{largest}");
    }
}

// ---------------------------------------------------------------------------------------------
// Record batches
// ---------------------------------------------------------------------------------------------

fn records() -> impl Strategy<Value = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>> {
    prop::collection::vec(
        (prop::option::of(prop::collection::vec(any::<u8>(), 0..12)), prop::option::of(prop::collection::vec(any::<u8>(), 0..40))),
        1..6,
    )
}

fn build(recs: &[(Option<Vec<u8>>, Option<Vec<u8>>)]) -> BytesMut {
    let kv: Vec<batch::KeyValue<'_>> = recs.iter().map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
    batch::build_batch(&kv, 1_700_000_000_000)
}

/// What a batch that passed validation must look like to anyone reading it afterwards,
/// including kafka-protocol's `RecordBatchDecoder` (which preallocates from `recordsCount`,
/// its issue #156): validation must run first and leave nothing for the decoder to trip on.
fn check_accepted(buf: &[u8], spans: &[batch::BatchSpan], max: usize) -> Result<(), TestCaseError> {
    let mut at = 0;
    for span in spans {
        prop_assert_eq!(span.start, at);
        prop_assert!(span.header.total_bytes() <= max);
        let bytes = Bytes::copy_from_slice(&buf[span.start..span.end]);
        prop_assert_eq!(batch::check_stored_batch(&bytes).map(|h| h.records_count), Ok(span.header.records_count));
        if span.header.compression() == 0 {
            let (set, largest) = largest_allocation(|| kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes.clone()));
            let set = set.map_err(|e| TestCaseError::fail(format!("validated batch does not decode: {e}")))?;
            prop_assert_eq!(set.records.len(), span.header.records_count as usize);
            prop_assert!(largest <= 4096 + 256 * bytes.len(), "{largest}");
            let (_, kvs) = batch::key_values(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(kvs.len(), set.records.len());
        }
        at = span.end;
    }
    prop_assert_eq!(at, buf.len());
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn batch_validation_never_panics_on_arbitrary_bytes(buf in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..4096) {
        let (r, largest) = largest_allocation(|| batch::split_and_validate(&buf, max));
        prop_assert!(largest < 4096, "{largest}");
        if let Ok(spans) = r {
            check_accepted(&buf, &spans, max)?;
        }
        let (spans, why) = batch::scan_batches(&buf);
        prop_assert_eq!(why.is_none(), spans.last().map_or(0, |s| s.end) == buf.len());
        let _ = batch::check_stored_batch(&buf);
        let _ = batch::key_values(&Bytes::from(buf));
    }

    /// Valid batches pass; a flipped bit anywhere the CRC or the produce rules cover is
    /// rejected. The 4 bytes of `partitionLeaderEpoch` are the only ones neither covers (Kafka's
    /// format: the broker stamps them), so a flip there is accepted.
    #[test]
    fn valid_batches_pass_and_bit_flips_are_rejected(recs in records(), at in any::<usize>(), bit in 0u8..8, fix in any::<bool>()) {
        let good = build(&recs);
        let spans = batch::split_and_validate(&good, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_accepted(&good, &spans, usize::MAX)?;

        let mut bad = good.to_vec();
        let at = at % bad.len();
        bad[at] ^= 1 << bit;
        let epoch = PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4;
        match batch::split_and_validate(&bad, usize::MAX) {
            Ok(spans) => {
                prop_assert!(epoch.contains(&at), "flip at byte {at} accepted");
                check_accepted(&bad, &spans, usize::MAX)?;
            }
            Err(_) => prop_assert!(!epoch.contains(&at)),
        }
        // With the CRC recomputed, only the record walk and the header rules stand between a
        // damaged batch and the log; whatever they accept must still be a sound batch.
        if fix && at >= BATCH_HEADER_BYTES - 4 {
            let _ = batch::fix_crc(&mut bad);
            if let Ok(spans) = batch::split_and_validate(&bad, usize::MAX) {
                check_accepted(&bad, &spans, usize::MAX)?;
            }
        }
    }

    /// A batch whose `recordsCount` lies (CRC fixed up so it gets past the CRC) never reaches
    /// a decoder: validation rejects it.
    #[test]
    fn lying_record_counts_are_rejected(recs in records(), count in prop_oneof![Just(i32::MAX), Just(-1), any::<i32>()]) {
        let mut b = build(&recs);
        prop_assume!(count != recs.len() as i32);
        b[batch::RECORDS_COUNT_POS..batch::RECORDS_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
        let _ = batch::fix_crc(&mut b);
        prop_assert!(batch::split_and_validate(&b, usize::MAX).is_err());
        prop_assert!(batch::key_values(&b.clone().freeze()).is_err());
        // And with lastOffsetDelta agreeing with the lie, too.
        b[batch::LAST_OFFSET_DELTA_POS..batch::LAST_OFFSET_DELTA_POS + 4].copy_from_slice(&count.wrapping_sub(1).to_be_bytes());
        let _ = batch::fix_crc(&mut b);
        let r = batch::split_and_validate(&b, usize::MAX);
        prop_assert!(matches!(r, Err(BatchError::InvalidRecord(_)) | Err(BatchError::InvalidRecordCount)), "{r:?}");
    }

    /// The pure part of recovery: a scan of stored batches keeps exactly the CRC-valid prefix.
    #[test]
    fn scan_keeps_the_valid_prefix(batches in prop::collection::vec(records(), 1..5), cut in any::<usize>(), garbage in prop::collection::vec(any::<u8>(), 0..80)) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        let mut next = 0i64;
        for recs in &batches {
            let mut b = build(recs);
            batch::stamp(&mut b, next, 0, None);
            next += recs.len() as i64;
            buf.extend_from_slice(&b);
            ends.push(buf.len());
        }
        let cut = cut % (buf.len() + 1);
        buf.truncate(cut);
        buf.extend_from_slice(&garbage);
        let (spans, _) = batch::scan_batches(&buf);
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        prop_assert!(spans.len() >= whole);
        let mut expect = 0;
        for s in &spans {
            prop_assert!(batch::check_stored_batch(&buf[s.start..s.end]).is_ok());
            if s.start < cut {
                prop_assert_eq!(s.header.base_offset, expect);
                expect = s.header.next_offset();
            }
        }
    }
}

/// No code outside tests hands bytes to kafka-protocol's `RecordBatchDecoder`: the broker
/// reads batches with its own bounds-checked walkers (`batch::key_values`,
/// `batch::control_marker`) after `check_stored_batch`/`split_and_validate`. A new use (e.g.
/// for compaction or a tool) must validate first; this test makes sure it is noticed.
#[test]
fn record_batch_decoder_is_only_used_in_tests() {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let tests_from = text.find("#[cfg(test)]").unwrap_or(text.len());
                for (i, _) in text.match_indices("RecordBatchDecoder") {
                    if i < tests_from && !text[..i].ends_with("`") {
                        out.push(format!("{}:{}", p.display(), text[..i].lines().count()));
                    }
                }
            }
        }
    }
    let mut uses = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut uses);
    assert!(uses.is_empty(), "RecordBatchDecoder used outside tests (validate the batch first, see tests/fuzz_props.rs): {uses:?}");
}

// ---------------------------------------------------------------------------------------------
// Segment recovery
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Zero(usize, usize),
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| Damage::Flip(a, b)),
        (any::<usize>(), 1usize..200).prop_map(|(a, n)| Damage::Zero(a, n)),
        prop::collection::vec(any::<u8>(), 1..100).prop_map(Damage::Garbage),
    ]
}

/// Opens a partition log over a segment holding `batches` (offsets from 0) damaged by
/// `damage`, as after a crash (no clean-shutdown marker, no index files), and reads it back.
/// Returns the first damaged byte position and the batches the log serves.
fn recover(batches: &[BytesMut], damage: &Damage) -> (usize, Vec<Bytes>, i64) {
    let mut file = Vec::new();
    for b in batches {
        file.extend_from_slice(b);
    }
    let len = file.len();
    let first_bad = match *damage {
        Damage::Truncate(a) => {
            file.truncate(a % (len + 1));
            file.len()
        }
        Damage::Flip(a, bit) => {
            file[a % len] ^= 1 << bit;
            a % len
        }
        Damage::Zero(a, n) => {
            let a = a % len;
            let end = (a + n).min(len);
            file[a..end].fill(0);
            // Zeroing bytes that were already zero changes nothing.
            (a..end).find(|&i| batches_bytes(batches)[i] != 0).unwrap_or(len)
        }
        Damage::Garbage(ref g) => {
            file.extend_from_slice(g);
            len
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("t-0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join(format!("{:020}.log", 0)), &file).unwrap();
    let out = std::rc::Rc::new(std::cell::RefCell::new((Vec::new(), 0i64)));
    let out2 = out.clone();
    glommio::LocalExecutorBuilder::default()
        .io_memory(512 * 1024)
        .make()
        .expect("creating a glommio executor (io_uring, RLIMIT_MEMLOCK)")
        .run(async move {
            let cfg = corestream::config::LogConfig::with_segment_bytes(1 << 20);
            let log = corestream::storage::log::PartitionLog::open(part, cfg).await.expect("recovery opens the log");
            let end = log.log_end_offset();
            let mut offset = log.log_start_offset();
            let mut got = Vec::new();
            while offset < end {
                let r = log.read(offset, 1 << 20).await.expect("read");
                let (spans, why) = batch::scan_batches(&r.records);
                assert!(why.is_none() && !spans.is_empty(), "served bytes do not scan: {why:?}");
                for s in spans {
                    got.push(r.records.slice(s.start..s.end));
                    offset = s.header.next_offset();
                }
            }
            log.close().await.expect("close");
            *out2.borrow_mut() = (got, end);
        });
    let (got, end) = std::mem::take(&mut *out.borrow_mut());
    (first_bad, got, end)
}

fn batches_bytes(batches: &[BytesMut]) -> Vec<u8> {
    batches.iter().flat_map(|b| b.iter().copied()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64).div_ceil(4).max(1), ..config(16) })]

    /// Recovery of an arbitrarily damaged segment opens, serves only CRC-valid batches with
    /// dense offsets from 0, keeps every batch that lies wholly before the damage, and keeps
    /// nothing that was not written (but the uncovered leader epoch bytes).
    #[test]
    fn recovery_keeps_exactly_the_valid_prefix(batches in prop::collection::vec(records(), 1..5), damage in damage()) {
        let mut stored = Vec::new();
        let mut next = 0i64;
        for recs in &batches {
            let mut b = build(recs);
            batch::stamp(&mut b, next, 0, None);
            next += recs.len() as i64;
            stored.push(b);
        }
        let (first_bad, got, end) = recover(&stored, &damage);
        let mut at = 0;
        let mut whole = 0;
        for b in &stored {
            at += b.len();
            if at <= first_bad {
                whole += 1;
            }
        }
        prop_assert!(got.len() >= whole, "kept {} of the {whole} undamaged batches ({damage:?})", got.len());
        prop_assert!(got.len() <= stored.len());
        let mut expect = 0;
        let mask = |b: &[u8]| {
            let mut v = b.to_vec();
            v[PARTITION_LEADER_EPOCH_POS..PARTITION_LEADER_EPOCH_POS + 4].fill(0);
            v
        };
        for (g, s) in got.iter().zip(&stored) {
            let h = batch::check_stored_batch(g).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(h.base_offset, expect);
            expect = h.next_offset();
            prop_assert_eq!(mask(g), mask(s));
        }
        prop_assert_eq!(end, expect);
    }
}
