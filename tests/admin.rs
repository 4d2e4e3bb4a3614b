//! Admin API: CreateTopics (configs, validate_only, errors), Metadata,
//! DescribeConfigs / AlterConfigs / IncrementalAlterConfigs, CreatePartitions,
//! DeleteRecords, DeleteTopics, auto-creation, DescribeCluster and
//! DescribeLogDirs (the last two with raw requests: rdkafka 0.38 has no API
//! for them).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_lite::future::block_on;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as LegacyAlterResource, AlterableConfig as LegacyAlterable,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AlterConfigsRequest, DescribeClusterRequest, DescribeLogDirsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AlterConfig, ConfigResource, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

fn describe_topic(addr: &str, topic: &str) -> ConfigResource {
    let admin = admin(addr);
    let res = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &admin_opts()))
        .unwrap_or_else(|e| panic!("describe_configs({topic}): {e}"));
    assert_eq!(res.len(), 1);
    res.into_iter().next().unwrap().unwrap_or_else(|e| panic!("describe_configs({topic}) error: {e:?}"))
}

fn config_value(cr: &ConfigResource, key: &str) -> (Option<String>, bool) {
    let e = cr.get(key).unwrap_or_else(|| {
        panic!("describe_configs has no `{key}`; entries: {:?}", cr.entries.iter().map(|e| &e.name).collect::<Vec<_>>())
    });
    // A per-topic override is DYNAMIC_TOPIC_CONFIG; anything else (default,
    // static broker config) is inherited.
    let overridden = e.source == ConfigSource::DynamicTopic;
    if overridden {
        assert!(!e.is_default, "`{key}`: a topic override cannot be is_default");
    }
    (e.value.clone(), overridden)
}

fn create(addr: &str, nt: &NewTopic<'_>, validate_only: bool) -> Result<String, (String, RDKafkaErrorCode)> {
    let admin = admin(addr);
    let opts = admin_opts().validate_only(validate_only);
    let mut res = block_on(admin.create_topics([nt], &opts)).expect("create_topics request");
    assert_eq!(res.len(), 1);
    res.pop().unwrap()
}

/// All topic names, from a new client (panics if metadata fails).
fn topic_names(addr: &str) -> Vec<String> {
    let md = fetch_metadata(addr, None, OP_TIMEOUT).expect("metadata for all topics");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The whole life of a topic on a broker with auto-creation disabled.
#[test]
fn topic_lifecycle_without_auto_create() {
    let broker = Broker::start(2, &["auto.create.topics.enable=false", "log.segment.bytes=1048576"]);
    let addr = broker.addr();
    let topic = unique("life");
    let plain = unique("plain");

    // validate_only: accepted, but nothing is created.
    let nt = NewTopic::new(&topic, 3, TopicReplication::Fixed(1))
        .set("retention.ms", "123456")
        .set("max.message.bytes", "50000");
    assert_eq!(create(&addr, &nt, true), Ok(topic.clone()), "validate_only create");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!topic_names(&addr).contains(&topic), "validate_only must not create the topic");
    assert_eq!(partition_count(&addr, &topic), None, "validate_only must not create the topic");
    // Validation still validates.
    let bad_cfg = NewTopic::new(&topic, 3, TopicReplication::Fixed(1)).set("retention.ms", "soon");
    assert_eq!(create(&addr, &bad_cfg, true), Err((topic.clone(), RDKafkaErrorCode::InvalidConfig)));

    // Real creation, with overrides.
    assert_eq!(create(&addr, &nt, false), Ok(topic.clone()));
    assert_eq!(partition_count(&addr, &topic), Some(3), "partitions right after create (new client)");
    create_topic(&addr, &plain, 1, &[]);

    // Errors.
    assert_eq!(create(&addr, &nt, false), Err((topic.clone(), RDKafkaErrorCode::TopicAlreadyExists)));
    assert_eq!(create(&addr, &nt, true), Err((topic.clone(), RDKafkaErrorCode::TopicAlreadyExists)), "validate_only duplicate");
    let long_name = "a".repeat(250);
    for bad in ["bad/name", "..", ".", "has space", long_name.as_str()] {
        let nt = NewTopic::new(bad, 1, TopicReplication::Fixed(1));
        assert_eq!(create(&addr, &nt, false), Err((bad.to_string(), RDKafkaErrorCode::InvalidTopic)), "topic name {bad:?}");
    }
    let other = unique("other");
    for (k, v) in [("retention.ms", "soon"), ("no.such.config", "1"), ("cleanup.policy", "bogus")] {
        let nt = NewTopic::new(&other, 1, TopicReplication::Fixed(1)).set(k, v);
        assert_eq!(create(&addr, &nt, false), Err((other.clone(), RDKafkaErrorCode::InvalidConfig)), "config {k}={v}");
    }
    let nt = NewTopic::new(&other, 0, TopicReplication::Fixed(1));
    assert_eq!(create(&addr, &nt, false), Err((other.clone(), RDKafkaErrorCode::InvalidPartitions)), "0 partitions");
    let names = topic_names(&addr);
    assert!(!names.contains(&other), "failed creates must not create the topic");
    assert!(!names.iter().any(|n| n.contains('/') || n == ".." || n == "."), "invalid topics created: {names:?}");

    // Listing.
    let md = fetch_metadata(&addr, None, OP_TIMEOUT).expect("metadata");
    assert_eq!(md.brokers().len(), 1);
    let broker_id = md.brokers()[0].id();
    assert_eq!(md.brokers()[0].host(), "127.0.0.1");
    assert_eq!(md.brokers()[0].port() as u16, broker.port());
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert!(names.contains(&topic.as_str()) && names.contains(&plain.as_str()), "listed topics: {names:?}");
    assert!(!names.iter().any(|n| n.contains('/') || *n == ".."), "invalid topics listed: {names:?}");
    let t = md.topics().iter().find(|t| t.name() == topic).unwrap();
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2]);
    for p in t.partitions() {
        assert_eq!(p.leader(), broker_id, "leader of partition {}", p.id());
        assert!(p.error().is_none());
    }

    // DescribeConfigs: overrides, and the broker's defaults for the rest.
    let cr = describe_topic(&addr, &topic);
    assert_eq!(config_value(&cr, "retention.ms"), (Some("123456".into()), true));
    assert_eq!(config_value(&cr, "max.message.bytes"), (Some("50000".into()), true));
    assert_eq!(config_value(&cr, "segment.bytes"), (Some("1048576".into()), false), "inherits log.segment.bytes");
    assert_eq!(config_value(&cr, "retention.bytes"), (Some("-1".into()), false));
    assert_eq!(config_value(&cr, "cleanup.policy"), (Some("delete".into()), false));
    let plain_cr = describe_topic(&addr, &plain);
    let (default_max, _) = config_value(&plain_cr, "max.message.bytes");
    let (default_retention, _) = config_value(&plain_cr, "retention.ms");

    // The per-topic max.message.bytes is enforced.
    let mut pcfg = producer_config(&addr);
    pcfg.set("compression.type", "none").set("message.send.max.retries", "0");
    let big = TestRecord::value(vec![b'z'; 60_000]).to_partition(0);
    match produce_all(&pcfg, &topic, &[big.clone()], Duration::from_secs(30)).pop().unwrap() {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {}
        other => panic!("60 KB record with max.message.bytes=50000: {other:?}"),
    }

    // AlterConfigs (legacy): the given set replaces all overrides.
    let admin_c = admin(&addr);
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "999000");
    let res = block_on(admin_c.alter_configs([&alter], &admin_opts())).expect("alter_configs");
    assert_eq!(res.len(), 1, "alter_configs: {res:?}");
    let cr = describe_topic(&addr, &topic);
    assert_eq!(config_value(&cr, "retention.ms"), (Some("999000".into()), true));
    assert_eq!(config_value(&cr, "max.message.bytes"), (default_max.clone(), false), "legacy AlterConfigs resets unspecified keys");
    // ... and the reset limit is in force: the 60 KB record now goes through.
    let ok = produce_all(&pcfg, &topic, &[big], Duration::from_secs(30)).pop().unwrap();
    assert_eq!(ok.expect("60 KB record after max.message.bytes reset"), (0, 0));
    // An invalid alter is refused with INVALID_CONFIG and changes nothing.
    // (rdkafka 0.38 drops AlterConfigs' per-resource errors, so this one is raw.)
    let mut s = raw::connect(broker.socket_addr());
    for (k, v) in [("retention.ms", "never"), ("no.such.config", "1")] {
        let req = AlterConfigsRequest::default().with_resources(vec![LegacyAlterResource::default()
            .with_resource_type(2) // TOPIC
            .with_resource_name(StrBytes::from_string(topic.clone()))
            .with_configs(vec![LegacyAlterable::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))])]);
        let resp = raw::call(&mut s, &req, 0);
        assert_eq!(resp.responses.len(), 1);
        assert_eq!(resp.responses[0].error_code, 40, "AlterConfigs {k}={v}: INVALID_CONFIG expected");
        let cr = describe_topic(&addr, &topic);
        assert_eq!(config_value(&cr, "retention.ms"), (Some("999000".into()), true), "after refused AlterConfigs {k}={v}");
    }

    // IncrementalAlterConfigs (raw): SET one key, DELETE another, others stay.
    let mut s = raw::connect(broker.socket_addr());
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2) // TOPIC
        .with_resource_name(StrBytes::from_string(topic.clone()))
        .with_configs(vec![
            AlterableConfig::default()
                .with_name(StrBytes::from_static_str("max.message.bytes"))
                .with_config_operation(0) // SET
                .with_value(Some(StrBytes::from_static_str("70000"))),
            AlterableConfig::default()
                .with_name(StrBytes::from_static_str("segment.ms"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("3600000"))),
        ])]);
    let resp = raw::call(&mut s, &req, 0);
    assert_eq!(resp.responses.len(), 1);
    assert_eq!(resp.responses[0].error_code, 0, "incremental alter: {:?}", resp.responses[0].error_message);
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(topic.clone()))
        .with_configs(vec![AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_config_operation(1) // DELETE
            .with_value(None)])]);
    let resp = raw::call(&mut s, &req, 0);
    assert_eq!(resp.responses[0].error_code, 0, "incremental delete: {:?}", resp.responses[0].error_message);
    let cr = describe_topic(&addr, &topic);
    assert_eq!(config_value(&cr, "max.message.bytes"), (Some("70000".into()), true));
    assert_eq!(config_value(&cr, "segment.ms"), (Some("3600000".into()), true));
    assert_eq!(config_value(&cr, "retention.ms"), (default_retention, false), "DELETE restores the default");

    // CreatePartitions: 3 → 5, visible at once to a new client.
    let np = NewPartitions::new(&topic, 5);
    let res = block_on(admin_c.create_partitions([&np], &admin_opts())).expect("create_partitions");
    assert_eq!(res[0], Ok(topic.clone()));
    assert_eq!(partition_count(&addr, &topic), Some(5), "partition count right after CreatePartitions");
    let np = NewPartitions::new(&topic, 2);
    let res = block_on(admin_c.create_partitions([&np], &admin_opts())).expect("create_partitions");
    assert_eq!(res[0], Err((topic.clone(), RDKafkaErrorCode::InvalidPartitions)), "shrinking");
    assert_eq!(partition_count(&addr, &topic), Some(5));
    let acks = produce_ok(&producer_config(&addr), &topic, &[TestRecord::value(b"in p4".to_vec()).to_partition(4)]);
    assert_eq!(acks, vec![(4, 0)]);

    // DeleteRecords moves the low watermark.
    let recs: Vec<TestRecord> = (0..10).map(|i| TestRecord::value(format!("dr{i}")).to_partition(1)).collect();
    produce_ok(&producer_config(&addr), &topic, &recs);
    assert_eq!(watermarks(&addr, &topic, 1), (0, 10));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(4)).unwrap();
    let res = block_on(admin_c.delete_records(&tpl, &admin_opts())).expect("delete_records");
    let el = res.find_partition(&topic, 1).expect("partition 1 in delete_records result");
    assert!(el.error().is_ok(), "delete_records: {:?}", el.error());
    assert_eq!(el.offset(), Offset::Offset(4), "low watermark reported by delete_records");
    assert_eq!(watermarks(&addr, &topic, 1), (4, 10));
    let got = consume_n(&addr, &topic, &[(1, Offset::Beginning)], 6, Duration::from_secs(20));
    let offs: Vec<i64> = got.iter().map(|c| c.offset).collect();
    assert_eq!(offs, vec![4, 5, 6, 7, 8, 9], "consuming from the beginning after DeleteRecords");
    assert_eq!(got[0].value.as_deref(), Some(&b"dr4"[..]));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(11)).unwrap();
    let res = block_on(admin_c.delete_records(&tpl, &admin_opts()));
    let refused = match res {
        Err(_) => true,
        Ok(tpl) => tpl.find_partition(&topic, 1).map_or(true, |e| e.error().is_err()),
    };
    assert!(refused, "delete_records beyond the high watermark must fail");
    assert_eq!(watermarks(&addr, &topic, 1), (4, 10));

    // DeleteTopics.
    let res = block_on(admin_c.delete_topics(&[&topic], &admin_opts())).expect("delete_topics");
    assert_eq!(res[0], Ok(topic.clone()));
    wait_for("deleted topic to leave metadata", Duration::from_secs(10), || {
        let md = fetch_metadata(&addr, None, OP_TIMEOUT).ok()?;
        (!md.topics().iter().any(|t| t.name() == topic)).then_some(())
    });
    assert_eq!(partition_count(&addr, &topic), None);
    assert!(topic_names(&addr).contains(&plain), "deleting one topic must keep the others");
    let res = block_on(admin_c.delete_topics(&[&topic], &admin_opts())).expect("delete_topics");
    assert_eq!(res[0], Err((topic.clone(), RDKafkaErrorCode::UnknownTopicOrPartition)), "deleting twice");

    // Producing to it now fails: auto-creation is disabled.
    let mut pcfg = producer_config(&addr);
    pcfg.set("message.timeout.ms", "8000").set("topic.metadata.propagation.max.ms", "1000");
    let res = produce_all(&pcfg, &topic, &[TestRecord::value(b"ghost".to_vec())], Duration::from_secs(30)).pop().unwrap();
    match res {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => {}
        other => panic!("produce to deleted topic without auto-create: {other:?}"),
    }
    assert_eq!(partition_count(&addr, &topic), None, "must not be auto-created");
    assert!(!topic_names(&addr).contains(&topic), "must not be auto-created");

    // The name can be reused and starts empty.
    create_topic(&addr, &topic, 1, &[]);
    assert_eq!(watermarks(&addr, &topic, 0), (0, 0), "recreated topic must be empty");
    let cr = describe_topic(&addr, &topic);
    assert_eq!(config_value(&cr, "max.message.bytes"), (default_max, false), "recreated topic has no old overrides");
}

/// With auto-creation on, producing to an unknown (or deleted) topic creates
/// it with num.partitions partitions.
#[test]
fn auto_create_and_topic_level_timestamp_type() {
    let broker = Broker::start(2, &["auto.create.topics.enable=true", "num.partitions=3"]);
    let addr = broker.addr();
    let topic = unique("auto");
    let acks = produce_ok(&producer_config(&addr), &topic, &[TestRecord::value(b"first".to_vec()).to_partition(0)]);
    assert_eq!(acks, vec![(0, 0)]);
    assert_eq!(partition_count(&addr, &topic), Some(3), "auto-created with num.partitions");

    let admin_c = admin(&addr);
    let res = block_on(admin_c.delete_topics(&[&topic], &admin_opts())).expect("delete_topics");
    assert_eq!(res[0], Ok(topic.clone()));
    wait_for("deleted topic to leave metadata", Duration::from_secs(10), || {
        (partition_count(&addr, &topic).is_none()).then_some(())
    });
    let acks = produce_ok(&producer_config(&addr), &topic, &[TestRecord::value(b"again".to_vec()).to_partition(0)]);
    assert_eq!(acks, vec![(0, 0)], "re-auto-created topic starts at offset 0");
    let got = consume_all(&addr, &topic, &[0], Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"again"[..]));

    // message.timestamp.type=LogAppendTime: the broker's clock replaces the
    // producer's timestamp.
    let lat = unique("lat");
    create_topic(&addr, &lat, 1, &[("message.timestamp.type", "LogAppendTime")]);
    let before = now_ms();
    produce_ok(&producer_config(&addr), &lat, &[TestRecord::value(b"t".to_vec()).to_partition(0).with_timestamp(1_000)]);
    let after = now_ms();
    let got = consume_all(&addr, &lat, &[0], Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert!(got[0].log_append_time, "timestamp type must be LogAppendTime: {:?}", got[0]);
    let ts = got[0].timestamp.unwrap();
    assert!(ts >= before - 1000 && ts <= after + 1000, "log append time {ts} not within [{before}, {after}]");
}

/// DescribeCluster and DescribeLogDirs, raw.
#[test]
fn describe_cluster_and_log_dirs() {
    let broker = Broker::start(1, &[]);
    let addr = broker.addr();
    let topic = unique("dirs");
    create_topic(&addr, &topic, 2, &[]);
    produce_ok(&producer_config(&addr), &topic, &(0..20).map(|i| TestRecord::value(vec![b'd'; 1000 + i]).to_partition(0)).collect::<Vec<_>>());

    let md = fetch_metadata(&addr, None, OP_TIMEOUT).expect("metadata");
    let broker_id = md.brokers()[0].id();

    let mut s = raw::connect(broker.socket_addr());
    let resp = raw::call(&mut s, &DescribeClusterRequest::default(), 0);
    assert_eq!(resp.error_code, 0, "DescribeCluster: {:?}", resp.error_message);
    assert!(!resp.cluster_id.is_empty(), "cluster id");
    assert_eq!(*resp.controller_id, broker_id, "controller id");
    assert_eq!(resp.brokers.len(), 1);
    let b = &resp.brokers[0];
    assert_eq!((*b.broker_id, b.host.as_str(), b.port), (broker_id, "127.0.0.1", broker.port() as i32));

    let req = DescribeLogDirsRequest::default().with_topics(Some(vec![DescribableLogDirTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
        .with_partitions(vec![0, 1])]));
    let resp = raw::call(&mut s, &req, 1);
    assert_eq!(resp.results.len(), 1, "one log dir");
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0);
    assert!(!r.log_dir.is_empty());
    let t = r.topics.iter().find(|t| t.name.0.as_str() == topic).expect("topic in DescribeLogDirs");
    let size = |p: i32| t.partitions.iter().find(|x| x.partition_index == p).map(|x| x.partition_size);
    let p0 = size(0).expect("partition 0 listed");
    assert!(p0 >= 20 * 1000, "partition 0 size {p0} < the 20 KB written");
    assert!(size(1).unwrap_or(0) < p0, "empty partition 1 must be smaller");
}
