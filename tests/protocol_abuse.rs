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

    // Ten requests in one write: ten answers, in order.
    let mut s = raw::connect(sa);
    let mut all = Vec::new();
    for corr in 0..10 {
        if corr % 2 == 0 {
            all.extend(raw::encode(&ApiVersionsRequest::default(), 0, 1000 + corr));
        } else {
            all.extend(raw::encode(&MetadataRequest::default().with_topics(None), 1, 1000 + corr));
        }
    }
    s.write_all(&all).unwrap();
    for corr in 0..10 {
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
