//! Topics with `cleanup.policy=compact`: the policy is accepted (compaction itself
//! is not built yet, so nothing is dropped) and records without a key are refused
//! with INVALID_RECORD and per-record errors, as Kafka does.

mod common;

use common::*;
use corestream::protocol::batch;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[test]
fn keyless_records_are_refused_on_compacted_topics() {
    let b = Broker::start(1, &[]);
    let addr = b.addr();
    let topic = unique("compacted");
    create_topic(&addr, &topic, 1, &[("cleanup.policy", "compact")]);
    let mut sock = raw::connect(b.socket_addr());
    let produce = |sock: &mut std::net::TcpStream, recs: &[batch::KeyValue<'_>]| {
        let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch::build_batch(recs, 1).freeze()))])]);
        raw::call(sock, &req, 9).responses[0].partition_responses[0].clone()
    };
    let r = produce(&mut sock, &[(Some(b"k1"), Some(b"v")), (None, Some(b"v")), (Some(b"k3"), Some(b"v")), (None, None)]);
    assert_eq!(r.error_code, 87, "INVALID_RECORD");
    assert_eq!(r.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(watermarks(&addr, &topic, 0).1, 0, "nothing of the batch was written");
    let r = produce(&mut sock, &[(Some(b"k1"), Some(b"v")), (Some(b"k2"), None)]);
    assert_eq!((r.error_code, r.base_offset), (0, 0), "keyed records (and tombstones) are fine");
    // A delete-policy topic takes keyless records.
    let plain = unique("plain");
    create_topic(&addr, &plain, 1, &[("cleanup.policy", "delete")]);
    let recs = vec![TestRecord::value("no key")];
    assert_eq!(produce_ok(&producer_config(&addr), &plain, &recs).len(), 1);
}
