//! The admin endpoint serves Prometheus text whose counters follow real traffic.

mod common;

use std::io::{Read, Write};

use common::*;

fn scrape(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The sum over shards of every sample of `name` whose labels contain `filter`
/// (a sample without labels, such as the process's resident memory, counts too).
fn total(body: &str, name: &str, filter: &str) -> f64 {
    body.lines()
        .filter(|l| (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_follow_produce_traffic() {
    let admin = free_port();
    let admin_set = format!("admin.listen=127.0.0.1:{admin}");
    let broker = Broker::start(2, &[admin_set.as_str()]);
    let topic = unique("metrics");
    create_topic(&broker.addr(), &topic, 4, &[]);

    let (_, before) = scrape(admin, "/metrics");
    assert_eq!(total(&before, "corestream_partition_produced_records_total", &topic), 0.0);

    let n = 200;
    let records: Vec<TestRecord> = (0..n).map(|i| TestRecord::value(format!("m{i}"))).collect();
    let mut cfg = producer_config(&broker.addr());
    cfg.set("acks", "all");
    let acked = produce_ok(&cfg, &topic, &records);
    assert_eq!(acked.len(), n);

    let (status, body) = scrape(admin, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.matches("# TYPE corestream_requests_total counter").count(), 1, "one TYPE line per family");
    assert_eq!(total(&body, "corestream_partition_produced_records_total", &topic), n as f64);
    assert!(total(&body, "corestream_requests_total", "api=\"Produce\"") >= 1.0);
    assert!(total(&body, "corestream_fsyncs_total", "") >= 1.0, "acks=all produce must have synced");
    let writes = total(&body, "corestream_segment_writes_total", "");
    assert!(writes >= 1.0, "produced batches must have been written");
    assert_eq!(total(&body, "corestream_segment_write_seconds_count", ""), writes, "every write is timed");
    assert!(total(&body, "corestream_bytes_in_total", "") > 0.0);
    assert!(body.contains("shard=\"0\"") && body.contains("shard=\"1\""), "both shards report");

    let (status, _) = scrape(admin, "/nope");
    assert!(status.contains("404"), "{status}");
}

/// A record produced alone in its request is kept in its partition's in-memory tail:
/// it must not keep the connection's whole read buffer (64 KiB) alive with it. Before
/// the fix each 1 KiB record here pinned 64 KiB, about 190 MiB for the 3,000 records.
#[test]
fn records_produced_one_per_request_do_not_pin_read_buffers() {
    let admin = free_port();
    let admin_set = format!("admin.listen=127.0.0.1:{admin}");
    let broker = Broker::start(1, &[admin_set.as_str()]);
    let topic = unique("pinning");
    create_topic(&broker.addr(), &topic, 1, &[]);
    // One record per request, one request at a time: each arrives alone in the read buffer.
    let mut cfg = producer_config(&broker.addr());
    cfg.set("linger.ms", "0").set("batch.num.messages", "1").set("max.in.flight.requests.per.connection", "1").set("acks", "1");
    let value = "x".repeat(1024);
    let records = |n: usize| (0..n).map(|_| TestRecord::value(value.clone())).collect::<Vec<_>>();
    let resident = || {
        let rss = total(&scrape(admin, "/metrics").1, "corestream_resident_memory_bytes", "");
        assert!(rss > 0.0, "resident memory reported");
        rss
    };
    assert_eq!(produce_ok(&cfg, &topic, &records(200)).len(), 200);
    let before = resident();
    assert_eq!(produce_ok(&cfg, &topic, &records(3000)).len(), 3000);
    let grown = (resident() - before) / (1024.0 * 1024.0);
    assert!(grown < 48.0, "resident memory grew {grown:.1} MiB for 3,000 records of 1 KiB");
}
