//! Misbehaving clients on raw TCP sockets. After each, the broker must still
//! serve a well-behaved client.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
use kafka_protocol::protocol::Decodable;

/// The broker process's resident memory in bytes (VmRSS in /proc/<pid>/status).
fn broker_rss(broker: &Broker) -> u64 {
    let pid = broker.pid().expect("broker running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// True if the connection is served: an ApiVersions on it is answered.
fn answers(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(&raw::encode(&ApiVersionsRequest::default(), 0, 7)).is_err() {
        return false;
    }
    matches!(read_frame(s), Ok(resp) if resp.get(0..4) == Some(&7i32.to_be_bytes()[..]))
}

/// A TCP connection to `to` from the local address `from` (any port): loopback answers for
/// all of 127.0.0.0/8, so tests can be several client addresses.
fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        assert_eq!(libc::bind(fd, &local as *const _ as *const libc::sockaddr, len), 0, "bind {from}: {}", std::io::Error::last_os_error());
        let remote = sockaddr(*to.ip(), to.port());
        assert_eq!(libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len), 0, "connect: {}", std::io::Error::last_os_error());
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

/// Opens `n` connections from `from` and returns them split into (served, closed by the broker).
fn flood(from: std::net::Ipv4Addr, sa: std::net::SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let conns: Vec<TcpStream> = (0..n).map(|_| connect_from(from, sa)).collect();
    let mut served = Vec::new();
    let mut closed = 0;
    for mut s in conns {
        if answers(&mut s) {
            served.push(s);
        } else {
            assert!(closed_within(&mut s, Duration::from_secs(10)), "a refused connection must be closed promptly");
            closed += 1;
        }
    }
    (served, closed)
}

/// One scrape of the admin endpoint's `/metrics`.
fn scrape(admin: std::net::SocketAddr) -> String {
    let mut s = raw::connect(admin);
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The sum over shards of a counter's samples whose labels contain `label`.
fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The broker must be alive and answer on fresh connections.
fn assert_healthy(broker: &mut Broker, after: &str) {
    broker.assert_alive();
    for _ in 0..4 {
        if let Err(e) = raw_api_versions_v0(broker.socket_addr(), Duration::from_secs(10)) {
            panic!("after {after}: ApiVersions on a new connection failed: {e}");
        }
    }
    let md = fetch_metadata(&broker.addr(), None, OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("after {after}: metadata failed: {e}"));
    assert_eq!(md.brokers().len(), 1, "after {after}");
}

/// Reads until EOF/reset; true if the peer closed within `timeout`.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Request header v1: api key, version, correlation id, client id.
fn header_v1(api_key: i16, version: i16, corr: i32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api_key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&corr.to_be_bytes());
    h.extend_from_slice(&3i16.to_be_bytes());
    h.extend_from_slice(b"bad");
    h
}

#[test]
fn broker_survives_malformed_frames() {
    let mut broker = Broker::start(2, &["socket.request.max.bytes=1048576"]);
    let sa = broker.socket_addr();
    assert_healthy(&mut broker, "start");

    // 1. An HTTP request: "GET " read as a size is ~1.2 GB, over the limit.
    let mut s = raw::connect(sa);
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(10)), "HTTP garbage: connection not closed");
    assert_healthy(&mut broker, "HTTP garbage");

    // 2. Negative size prefix.
    let mut s = raw::connect(sa);
    s.write_all(&(-16i32).to_be_bytes()).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(10)), "negative size: connection not closed");
    assert_healthy(&mut broker, "negative size");

    // 3. A size over socket.request.max.bytes: closed without reading a body.
    let mut s = raw::connect(sa);
    s.write_all(&(2 * 1024 * 1024i32).to_be_bytes()).unwrap();
    s.write_all(&[0u8; 100]).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(10)), "oversized frame: connection not closed");
    assert_healthy(&mut broker, "oversized size prefix");

    // 3b. Sizes at the edges: one over the limit, i32::MAX, i32::MIN.
    for size in [1024 * 1024 + 1, i32::MAX, i32::MIN] {
        let mut s = raw::connect(sa);
        s.write_all(&size.to_be_bytes()).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(10)), "size {size}: connection not closed");
    }
    // A frame exactly at the limit is read (and then rejected as garbage or answered).
    let mut s = raw::connect(sa);
    let mut body = header_v1(18, 0, 9);
    body.resize(1024 * 1024, 0);
    s.write_all(&frame(&body)).unwrap();
    let _ = closed_within(&mut s, Duration::from_secs(10));
    assert_healthy(&mut broker, "sizes at the edges");

    // 4. A truncated frame, then the client goes away.
    let mut s = raw::connect(sa);
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&header_v1(18, 0, 1)).unwrap();
    s.shutdown(Shutdown::Both).unwrap();
    drop(s);
    // And one that resets (SO_LINGER 0) in the middle of a frame.
    let s = raw::connect(sa);
    (&s).write_all(&[0, 0, 0, 50, 0, 3]).unwrap();
    set_linger_zero(&s);
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    assert_healthy(&mut broker, "truncated frames");

    // 5. A well-sized frame of garbage (api key 0x7a7a...).
    let mut s = raw::connect(sa);
    let junk: Vec<u8> = (0..64u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x40).collect();
    s.write_all(&frame(&junk)).unwrap();
    let _ = closed_within(&mut s, Duration::from_secs(2));
    assert_healthy(&mut broker, "garbage frame");

    // 6. A frame too short to hold a request header.
    let mut s = raw::connect(sa);
    s.write_all(&frame(&[0, 18])).unwrap();
    let _ = closed_within(&mut s, Duration::from_secs(2));
    assert_healthy(&mut broker, "short frame");

    // 7. Zero-length frame.
    let mut s = raw::connect(sa);
    s.write_all(&0i32.to_be_bytes()).unwrap();
    let _ = closed_within(&mut s, Duration::from_secs(2));
    assert_healthy(&mut broker, "empty frame");
}

#[test]
fn unknown_api_and_unsupported_versions() {
    let mut broker = Broker::start(2, &[]);
    let sa = broker.socket_addr();

    // Unknown API key: Kafka closes the connection; an answer, if any, must
    // carry our correlation id.
    let mut s = raw::connect(sa);
    let mut body = header_v1(9999, 0, 77);
    body.extend_from_slice(&[0u8; 8]);
    s.write_all(&frame(&body)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match read_frame(&mut s) {
        Ok(resp) => assert_eq!(&resp[0..4], &77i32.to_be_bytes(), "unknown api: response correlation id"),
        Err(_) => {} // closed: fine
    }
    assert_healthy(&mut broker, "unknown api key");

    // ApiVersions v127: answered in v0 format with UNSUPPORTED_VERSION (35)
    // and the list of supported APIs, and the connection stays usable.
    let mut s = raw::connect(sa);
    let mut body = header_v1(18, 127, 4711);
    // What a future client might send: compact strings + tagged fields.
    body.extend_from_slice(&[0x00, 4, b'f', b'o', b'o', 2, b'1', 0]);
    s.write_all(&frame(&body)).unwrap();
    let resp = read_frame(&mut s).expect("ApiVersions v127 must be answered");
    assert_eq!(&resp[0..4], &4711i32.to_be_bytes(), "correlation id");
    let mut b = Bytes::copy_from_slice(&resp[4..]);
    let av = ApiVersionsResponse::decode(&mut b, 0).expect("v0-format ApiVersions response");
    assert_eq!(av.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(!av.api_keys.is_empty(), "the error answer must list the supported APIs");
    let find = |k: i16| av.api_keys.iter().find(|a| a.api_key == k);
    let apiv = find(18).expect("ApiVersions listed");
    assert!(apiv.max_version >= 3 && apiv.min_version == 0, "ApiVersions range {apiv:?}");
    for k in [0i16, 1, 2, 3, 19, 20, 32] {
        let a = find(k).unwrap_or_else(|| panic!("api {k} missing from {:?}", av.api_keys));
        assert!(a.min_version <= a.max_version, "api {k}: {a:?}");
    }
    // Same connection, now a version it supports (what librdkafka does).
    let ok = raw::call(&mut s, &ApiVersionsRequest::default(), 0);
    assert_eq!(ok.error_code, 0);
    assert_eq!(ok.api_keys, av.api_keys, "v0 and error answers list the same APIs");
    // And v3 (flexible) works too.
    let v3 = raw::call(
        &mut s,
        &ApiVersionsRequest::default()
            .with_client_software_name(kafka_protocol::protocol::StrBytes::from_static_str("raw-test"))
            .with_client_software_version(kafka_protocol::protocol::StrBytes::from_static_str("1.0")),
        3,
    );
    assert_eq!(v3.error_code, 0);
    assert_eq!(v3.api_keys.len(), av.api_keys.len());

    // A supported API at an unsupported version (Metadata v99): the broker
    // must not crash (it may close the connection).
    let mut s = raw::connect(sa);
    let mut body = header_v1(3, 99, 5);
    body.extend_from_slice(&[0u8; 16]);
    s.write_all(&frame(&body)).unwrap();
    let _ = closed_within(&mut s, Duration::from_secs(2));
    assert_healthy(&mut broker, "Metadata v99");
}

#[test]
fn pipelined_and_byte_by_byte_requests() {
    let mut broker = Broker::start(2, &[]);
    let sa = broker.socket_addr();

    // 300 requests in one write: 300 answers, in order (more than a connection takes in
    // flight at once, and more than the broker gathers into one write).
    let mut s = raw::connect(sa);
    let mut all = Vec::new();
    for corr in 0..300 {
        if corr % 2 == 0 {
            all.extend(raw::encode(&ApiVersionsRequest::default(), 0, 1000 + corr));
        } else {
            all.extend(raw::encode(&MetadataRequest::default().with_topics(None), 1, 1000 + corr));
        }
    }
    s.write_all(&all).unwrap();
    for corr in 0..300 {
        let resp = read_frame(&mut s).unwrap_or_else(|e| panic!("pipelined response {corr}: {e}"));
        let got = i32::from_be_bytes(resp[0..4].try_into().unwrap());
        assert_eq!(got, 1000 + corr, "responses must come back in request order");
    }

    // One request dribbled a byte at a time.
    let mut s = raw::connect(sa);
    let req = raw::encode(&ApiVersionsRequest::default(), 0, 31337);
    for b in &req {
        s.write_all(&[*b]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let resp = read_frame(&mut s).expect("response to a slowly written request");
    assert_eq!(&resp[0..4], &31337i32.to_be_bytes());

    // Many short-lived connections.
    for _ in 0..200 {
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(5)).expect("connect");
        drop(s);
    }
    assert_healthy(&mut broker, "connection churn");

    // Finally a real client round trip.
    let topic = unique("after-abuse");
    create_topic(&broker.addr(), &topic, 2, &[]);
    let acks = produce_ok(&producer_config(&broker.addr()), &topic, &[TestRecord::value(b"still fine".to_vec()).to_partition(1)]);
    assert_eq!(acks, vec![(1, 0)]);
    let got = consume_all(&broker.addr(), &topic, &[0, 1], Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"still fine"[..]));
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}


#[test]
fn connection_floods_are_cut_at_the_limits_and_the_room_comes_back() {
    // 2 cores: each holds ceil(4 / 2) = 2 of max.connections.
    let admin_port = free_port();
    let admin = format!("admin.listen=127.0.0.1:{admin_port}");
    let mut broker = Broker::start(2, &["max.connections=4", &admin]);
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let sa = broker.socket_addr();
    let local = std::net::Ipv4Addr::LOCALHOST;
    for round in 0..3 {
        let (served, closed) = flood(local, sa, 24);
        // Each core serves at most its 2; with 24 connections spread by the kernel's hash,
        // both cores get some (a core getting fewer than 2 of 24 is a 1-in-10^5 event).
        assert!((2..=4).contains(&served.len()), "round {round}: {} connections served, {closed} closed", served.len());
        assert_eq!(served.len() + closed, 24);
        // Once the flood goes away, its room comes back (the broker sees the closes
        // asynchronously, hence the wait).
        drop(served);
        wait_for("every connection served again after the flood closed", OP_TIMEOUT, || {
            (0..8).all(|_| raw_api_versions_v0(sa, Duration::from_secs(5)).is_ok()).then_some(())
        });
        assert_healthy(&mut broker, &format!("connection flood, round {round}"));
    }
    let text = scrape(admin);
    let rejected = metric_sum(&text, "corestream_connections_rejected_total", "limit=\"max.connections\"");
    assert!(rejected >= 3.0 * 20.0, "rejections counted: {rejected}\n{text}");
    assert!(broker.log().contains("connection refused"), "a warning names the refusals");
    // The warning is rate-limited: one per core per 10 s, not one per connection.
    let warnings = broker.log().matches("connection refused").count();
    assert!(warnings <= 2 * 3, "{warnings} warnings for {rejected} refusals");

    // A real client works afterwards.
    let topic = unique("after-flood");
    create_topic(&broker.addr(), &topic, 1, &[]);
    let acks = produce_ok(&producer_config(&broker.addr()), &topic, &[TestRecord::value(b"hello".to_vec())]);
    assert_eq!(acks, vec![(0, 0)]);
}

#[test]
fn per_ip_limit_and_overrides() {
    // Per core: ceil(4 / 2) = 2 for every address, ceil(40 / 2) = 20 for 127.0.0.2.
    let mut broker = Broker::start(2, &["max.connections.per.ip=4", "max.connections.per.ip.overrides=127.0.0.2:40"]);
    let sa = broker.socket_addr();
    let (a, a_closed) = flood(std::net::Ipv4Addr::new(127, 0, 0, 1), sa, 16);
    assert!((2..=4).contains(&a.len()), "127.0.0.1: {} served, {a_closed} closed", a.len());
    // Another address has its own budget, here raised by the override.
    let (b, b_closed) = flood(std::net::Ipv4Addr::new(127, 0, 0, 2), sa, 16);
    assert_eq!((b.len(), b_closed), (16, 0), "127.0.0.2 is under its override");
    // A third address has the default budget, untouched by the others.
    let (c, _) = flood(std::net::Ipv4Addr::new(127, 0, 0, 3), sa, 8);
    assert!((2..=4).contains(&c.len()), "127.0.0.3: {} served", c.len());
    drop((a, b, c));
    // Room comes back on close.
    wait_for("127.0.0.1 served again", OP_TIMEOUT, || {
        (0..8).all(|_| raw_api_versions_v0(sa, Duration::from_secs(5)).is_ok()).then_some(())
    });
    assert_healthy(&mut broker, "per-ip floods");
}

#[test]
fn slowloris_stalls_nobody_and_idle_connections_are_closed() {
    let mut broker = Broker::start(2, &["connections.max.idle.ms=3000"]);
    let sa = broker.socket_addr();
    let rss_before = broker_rss(&broker);

    // 1. Connections that promise a 90 MB frame (under socket.request.max.bytes), send a
    // few bytes of it and stop; one that connects and sends nothing at all.
    let mut stalled: Vec<TcpStream> = (0..16)
        .map(|i| {
            let mut s = raw::connect(sa);
            s.write_all(&(90 * 1024 * 1024i32).to_be_bytes()).unwrap();
            s.write_all(&header_v1(0, 3, i)).unwrap();
            s
        })
        .collect();
    stalled.push(raw::connect(sa));
    // 2. Connections that trickle a promised frame one byte per second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let mut s = raw::connect(sa);
            std::thread::spawn(move || {
                let _ = s.write_all(&(1024 * 1024i32).to_be_bytes());
                let mut sent = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && s.write_all(&[0x41]).is_ok() {
                    sent += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                sent
            })
        })
        .collect();

    // Meanwhile other clients are answered (generous bound: this is no timing test).
    for i in 0..6 {
        let t = Instant::now();
        raw_api_versions_v0(sa, Duration::from_secs(10)).unwrap_or_else(|e| panic!("ApiVersions {i} while stalled: {e}"));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    let topic = unique("slowloris");
    create_topic(&broker.addr(), &topic, 1, &[]);
    assert_eq!(produce_ok(&producer_config(&broker.addr()), &topic, &[TestRecord::value(b"x".to_vec())]), vec![(0, 0)]);

    // A promised frame costs the broker what was sent, not what was promised (16 x 90 MB
    // used to be allocated and zeroed up front).
    let grown = broker_rss(&broker).saturating_sub(rss_before);
    assert!(grown < 256 << 20, "RSS grew by {} MiB for 16 stalled frames", grown >> 20);

    // The stalled ones are closed once idle for connections.max.idle.ms (3 s).
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(closed_within(s, Duration::from_secs(20)), "stalled connection {i} not closed by the idle timeout");
    }
    // Trickling ones move bytes, so they are not idle (as in Kafka); once they stop, they are.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tricklers {
        let sent = t.join().unwrap();
        assert!(sent >= 3, "trickler sent only {sent} bytes before being cut");
    }
    assert_healthy(&mut broker, "slowloris");
}

#[test]
fn idle_timeout_spares_connections_waiting_for_an_answer() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut broker = Broker::start(1, &["connections.max.idle.ms=1000"]);
    let topic = unique("long-poll");
    create_topic(&broker.addr(), &topic, 1, &[]);
    // A fetch long-polling an empty partition for 4 s, 4x the idle timeout: the
    // connection is waiting for its answer, not idle.
    let mut s = raw::connect(broker.socket_addr());
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(4000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.clone())))
            .with_partitions(vec![FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20)])]);
    let t = Instant::now();
    let resp = raw::call(&mut s, &req, 11);
    assert_eq!(resp.error_code, 0);
    assert!(t.elapsed() >= Duration::from_secs(3), "the fetch waited its max_wait_ms");
    // Right after the answer it is usable; after more than the idle timeout of silence it is closed.
    assert!(answers(&mut s), "connection usable after its long poll");
    assert!(closed_within(&mut s, Duration::from_secs(10)), "idle connection not closed");
    assert_healthy(&mut broker, "idle timeouts");
}

#[test]
fn a_client_that_never_reads_its_responses_is_bounded() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut broker = Broker::start(1, &[]);
    let sa = broker.socket_addr();
    let topic = unique("never-read");
    create_topic(&broker.addr(), &topic, 1, &[]);
    // 24 MiB in the partition: every fetch below can be answered with that much.
    let records: Vec<TestRecord> = (0..24 * 1024).map(|i| TestRecord::value(vec![(i % 251) as u8; 1024]).to_partition(0)).collect();
    produce_ok(&producer_config(&broker.addr()), &topic, &records);
    let rss_before = broker_rss(&broker);

    // Pipelined fetches of everything (and metadata requests), never reading an answer.
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(64 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.clone())))
            .with_partitions(vec![FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(64 << 20)])]);
    let mut hog = raw::connect(sa);
    hog.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sent = 0;
    for i in 0..2000 {
        let req = if i % 2 == 0 { raw::encode(&fetch, 11, i) } else { raw::encode(&MetadataRequest::default().with_topics(None), 1, i) };
        if hog.write_all(&req).is_err() {
            break; // the broker stopped reading: backpressure
        }
        sent += 1;
    }
    // Whatever the broker took in, its memory stays bounded while the hog sits there.
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(broker_rss(&broker));
        std::thread::sleep(Duration::from_millis(300));
    }
    let grown = peak.saturating_sub(rss_before);
    assert!(grown < 1 << 30, "RSS grew by {} MiB with {sent} unread requests", grown >> 20);
    // Other clients keep being served meanwhile.
    raw_api_versions_v0(sa, Duration::from_secs(10)).expect("ApiVersions while a client hogs its connection");
    let got = consume_n(&broker.addr(), &topic, &[(0, rdkafka::Offset::Offset(24 * 1024 - 1))], 1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "fetch on another connection while a client hogs its connection");
    drop(hog);
    assert_healthy(&mut broker, "a client that never reads");
    eprintln!("sent {sent} requests; RSS grew by {} MiB", grown >> 20);
}

/// Sends one request frame and waits for its answer or the connection's end (either is
/// fine); returns the answer if there was one.
fn answer_or_close(sa: std::net::SocketAddr, frame: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let mut s = raw::connect(sa);
    s.set_write_timeout(Some(timeout)).unwrap();
    if s.write_all(frame).is_err() {
        return None; // closed while we were still sending
    }
    s.set_read_timeout(Some(timeout)).unwrap();
    match read_frame(&mut s) {
        Ok(resp) => Some(resp),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!("no answer and no close within {timeout:?}"),
        Err(_) => None,
    }
}

#[test]
fn requests_naming_huge_numbers_of_partitions() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ListOffsetsRequest, ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut broker = Broker::start(2, &[]);
    let sa = broker.socket_addr();
    let topic = unique("huge");
    create_topic(&broker.addr(), &topic, 2, &[]);
    let name = || TopicName(StrBytes::from_string(topic.clone()));
    let bound = Duration::from_secs(120);

    // ListOffsets for 1,000,000 partitions of a 2-partition topic (12 MB): answered
    // partition by partition (all but two unknown) or closed.
    let parts: Vec<ListOffsetsPartition> = (0..1_000_000).map(|p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(-1)).collect();
    let req = ListOffsetsRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default().with_name(name()).with_partitions(parts)]);
    let frame = raw::encode(&req, 1, 1);
    assert!(frame.len() < 100 << 20);
    if let Some(resp) = answer_or_close(sa, &frame, bound) {
        assert_eq!(&resp[0..4], &1i32.to_be_bytes());
    }
    assert_healthy(&mut broker, "ListOffsets with 1,000,000 partitions");

    // Produce to 1,000,000 partitions, no records.
    let parts: Vec<PartitionProduceData> = (0..1_000_000).map(|p| PartitionProduceData::default().with_index(p)).collect();
    let req = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default().with_name(name()).with_partition_data(parts)]);
    if let Some(resp) = answer_or_close(sa, &raw::encode(&req, 3, 2), bound) {
        assert_eq!(&resp[0..4], &2i32.to_be_bytes());
    }
    assert_healthy(&mut broker, "Produce to 1,000,000 partitions");

    // Metadata for 200,000 unknown topics, without auto-creation.
    let topics: Vec<MetadataRequestTopic> =
        (0..200_000).map(|i| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(format!("no-such-{i}")))))).collect();
    let req = MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(false);
    if let Some(resp) = answer_or_close(sa, &raw::encode(&req, 4, 3), bound) {
        assert_eq!(&resp[0..4], &3i32.to_be_bytes());
    }
    assert_healthy(&mut broker, "Metadata for 200,000 topics");
    assert_eq!(partition_count(&broker.addr(), "no-such-0"), None, "no topic was auto-created");
}

#[test]
#[ignore = "aborts the broker until the bounded decoding of src/protocol/bounded.rs (in progress with the fuzz work) is wired into handlers::decode; un-ignore then"]
fn lying_array_lengths_do_not_abort_the_broker() {
    let mut broker = Broker::start(1, &[]);
    let sa = broker.socket_addr();
    let bound = Duration::from_secs(30);
    // A count of i32::MAX (or a compact varint of u32::MAX) with a few bytes behind it:
    // kafka-protocol preallocates from the count before decoding an element.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Metadata v1 topics = i32::MAX", {
            let mut b = header_v1(3, 1, 1);
            b.extend_from_slice(&i32::MAX.to_be_bytes());
            b
        }),
        ("Metadata v9 (flexible) topics = u32::MAX varint", {
            // Header v2: key, version, correlation id, client id, no tagged fields.
            let mut b = header_v1(3, 9, 2);
            b.push(0);
            b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            b.extend_from_slice(&[0, 0, 0]);
            b
        }),
        ("Produce v3 topics = i32::MAX", {
            let mut b = header_v1(0, 3, 3);
            b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id
            b.extend_from_slice(&1i16.to_be_bytes()); // acks
            b.extend_from_slice(&5000i32.to_be_bytes()); // timeout
            b.extend_from_slice(&i32::MAX.to_be_bytes());
            b
        }),
        ("ListOffsets v1 partitions = i32::MAX", {
            let mut b = header_v1(2, 1, 4);
            b.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
            b.extend_from_slice(&1i32.to_be_bytes()); // one topic
            b.extend_from_slice(&1i16.to_be_bytes());
            b.push(b't');
            b.extend_from_slice(&i32::MAX.to_be_bytes());
            b.extend_from_slice(&[0; 12]);
            b
        }),
    ];
    for (what, body) in cases {
        let _ = answer_or_close(sa, &frame(&body), bound);
        assert_healthy(&mut broker, what);
    }
}
