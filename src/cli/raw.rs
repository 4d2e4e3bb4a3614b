//! A small blocking Kafka protocol client for the CLI commands that librdkafka
//! has no API for (see [`super::txn`]).
//!
//! One [`Conn`] is one `std::net::TcpStream` to one broker: frames are a
//! 4-byte size, a request header and a body, encoded and decoded with the
//! `kafka-protocol` crate. Every connection starts with ApiVersions, and
//! [`Conn::version`] picks the highest version both sides support. Every
//! socket operation has a timeout; [`Cluster`] adds an overall deadline for
//! retries (finding a coordinator or leader that is still loading or moving).
//!
//! Like the other client commands this shares no code with the broker and
//! works against any Kafka-compatible broker.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// How long connecting to one address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may wait to be written or for its response.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a command keeps retrying retriable errors (a coordinator still
/// loading, a leader moving) before it gives up.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between retries.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Largest response frame accepted.
const MAX_RESPONSE_BYTES: i32 = 100 * 1024 * 1024;
/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;
const CLIENT_ID: &str = "corestream-cli";

/// How to reach the cluster: flattened into every raw-protocol command.
#[derive(clap::Args, Debug, Clone)]
pub struct RawConnection {
    /// Bootstrap broker(s), `host:port[,host:port...]`.
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
}

/// A Kafka error code as `Name (code)`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "no error".to_string(),
        Some(ResponseError::Unknown(c)) => format!("error code {c}"),
        Some(e) => format!("{e} ({code})"),
    }
}

/// Whether Kafka defines the error code as retriable.
pub fn is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

/// `host:port`, with brackets around an IPv6 host.
pub fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One connection to one broker, with the API versions it supports.
pub struct Conn {
    name: String,
    stream: TcpStream,
    next_correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    /// Connects to `target` (`host:port`; every address it resolves to is
    /// tried in turn) and asks for the broker's API versions.
    pub fn connect(target: &str) -> Result<Conn> {
        let addrs: Vec<SocketAddr> = target
            .to_socket_addrs()
            .map_err(|e| anyhow!("cannot resolve broker address {target}: {e}"))?
            .collect();
        let mut last = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let setup = || -> io::Result<()> {
                        stream.set_read_timeout(Some(IO_TIMEOUT))?;
                        stream.set_write_timeout(Some(IO_TIMEOUT))?;
                        stream.set_nodelay(true)
                    };
                    setup().map_err(|e| anyhow!("cannot set up connection to {target}: {e}"))?;
                    let mut conn = Conn { name: target.to_string(), stream, next_correlation_id: 1, versions: HashMap::new() };
                    conn.handshake()?;
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
                bail!("cannot connect to broker {target}: no answer within {CONNECT_TIMEOUT:?}")
            }
            Some(e) => bail!("cannot connect to broker {target}: {e}"),
            None => bail!("broker address {target} resolves to no address"),
        }
    }

    /// The address this connection was opened to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// ApiVersions v3; a broker that does not know v3 answers in the v0
    /// format with UNSUPPORTED_VERSION and its version ranges, which serve as well.
    fn handshake(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self.exchange(&req, 3)?;
        let code = if body.len() >= 2 { i16::from_be_bytes([body[0], body[1]]) } else { 0 };
        let version = if code == UNSUPPORTED_VERSION { 0 } else { 3 };
        let resp = <kafka_protocol::messages::ApiVersionsResponse as Decodable>::decode(&mut body, version)
            .map_err(|e| anyhow!("broker {}: cannot decode the ApiVersions response: {e}", self.name))?;
        // An UNSUPPORTED_VERSION answer still lists the broker's version ranges.
        let usable = resp.error_code == 0 || (code == UNSUPPORTED_VERSION && !resp.api_keys.is_empty());
        if !usable {
            bail!("broker {}: ApiVersions failed: {}", self.name, error_name(resp.error_code));
        }
        self.versions = resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(())
    }

    /// The highest version of `R` that both this client and the broker
    /// support, and that is at least `min` (older versions lack what the
    /// caller needs).
    pub fn version<R: Request>(&self, min: i16) -> Result<i16> {
        let api = ApiKey::try_from(R::KEY).map(|k| format!("{k:?}")).unwrap_or_else(|_| format!("API {}", R::KEY));
        let Some(&(lo, hi)) = self.versions.get(&R::KEY) else {
            bail!("broker {} does not support {api}", self.name);
        };
        let lo = lo.max(R::VERSIONS.min).max(min);
        let hi = hi.min(R::VERSIONS.max);
        if lo > hi {
            bail!("broker {} supports {api} only in versions this client cannot use", self.name);
        }
        Ok(hi)
    }

    /// Sends `req` as version `version` and decodes the response.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let mut body = self.exchange(req, version)?;
        <R::Response as Decodable>::decode(&mut body, version)
            .map_err(|e| anyhow!("broker {}: cannot decode the response to API {} v{version}: {e}", self.name, R::KEY))
    }

    /// Like [`Conn::call`] at the highest common version ([`Conn::version`]).
    pub fn call_latest<R: Request>(&mut self, req: &R, min: i16) -> Result<R::Response> {
        let v = self.version::<R>(min)?;
        self.call(req, v)
    }

    /// Writes one request frame and reads its response frame; returns the
    /// response body after the (checked) response header.
    fn exchange<R: Request>(&mut self, req: &R, version: i16) -> Result<Bytes> {
        let corr = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| anyhow!("cannot encode API {} v{version} request: {e}", R::KEY))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).map_err(|e| self.io_err("send a request to", e))?;

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(|e| self.io_err("read a response from", e))?;
        let size = i32::from_be_bytes(size);
        if !(4..=MAX_RESPONSE_BYTES).contains(&size) {
            bail!("broker {} sent a response frame of invalid size {size}", self.name);
        }
        let mut frame = vec![0u8; size as usize];
        self.stream.read_exact(&mut frame).map_err(|e| self.io_err("read a response from", e))?;
        let mut body = Bytes::from(frame);
        let hv = <R::Response as HeaderVersion>::header_version(version);
        let h = ResponseHeader::decode(&mut body, hv)
            .map_err(|e| anyhow!("broker {}: cannot decode a response header: {e}", self.name))?;
        if h.correlation_id != corr {
            bail!("broker {}: response has correlation id {} instead of {corr}", self.name, h.correlation_id);
        }
        Ok(body)
    }

    fn io_err(&self, what: &str, e: io::Error) -> anyhow::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                anyhow!("cannot {what} broker {}: timed out after {IO_TIMEOUT:?}", self.name)
            }
            io::ErrorKind::UnexpectedEof => anyhow!("cannot {what} broker {}: connection closed by the broker", self.name),
            _ => anyhow!("cannot {what} broker {}: {e}", self.name),
        }
    }
}

/// A broker found through Metadata or FindCoordinator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

impl Node {
    pub fn addr(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// The connections a command uses: one to a bootstrap broker, and one to each
/// other broker it is sent to, opened on first use. Retry loops stop at the
/// deadline set when the cluster is opened.
pub struct Cluster {
    bootstrap: String,
    conns: HashMap<String, Conn>,
    deadline: Instant,
}

impl Cluster {
    /// Connects to the first reachable broker of a `host:port[,host:port...]` list.
    pub fn connect(conn: &RawConnection) -> Result<Cluster> {
        let deadline = Instant::now() + RETRY_TIMEOUT;
        let mut errors = Vec::new();
        for target in conn.bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Conn::connect(target) {
                Ok(c) => {
                    let mut conns = HashMap::new();
                    conns.insert(target.to_string(), c);
                    return Ok(Cluster { bootstrap: target.to_string(), conns, deadline });
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if errors.is_empty() {
            bail!("no bootstrap broker given");
        }
        bail!("{}", errors.join("; "))
    }

    /// The bootstrap broker's connection.
    pub fn bootstrap(&mut self) -> &mut Conn {
        self.conns.get_mut(&self.bootstrap).expect("bootstrap connection")
    }

    /// The connection to `node`, opened if needed.
    pub fn node(&mut self, node: &Node) -> Result<&mut Conn> {
        let addr = node.addr();
        if !self.conns.contains_key(&addr) {
            let c = Conn::connect(&addr).with_context(|| format!("broker {} (node {})", addr, node.id))?;
            self.conns.insert(addr.clone(), c);
        }
        Ok(self.conns.get_mut(&addr).expect("just inserted"))
    }

    /// Whether there is time left to retry; sleeps the back-off if there is.
    pub fn may_retry(&self) -> bool {
        if Instant::now() + RETRY_BACKOFF >= self.deadline {
            return false;
        }
        std::thread::sleep(RETRY_BACKOFF);
        true
    }

    /// Metadata from the bootstrap broker: every broker, and the given topics
    /// (none: no topic at all). Never creates a topic.
    pub fn metadata(&mut self, topics: &[&str]) -> Result<MetadataResponse> {
        let c = self.bootstrap();
        let v = c.version::<MetadataRequest>(1)?;
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.to_string())))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        c.call(&req, v)
    }

    /// Every broker of the cluster, by node id.
    pub fn brokers(&mut self) -> Result<Vec<Node>> {
        let md = self.metadata(&[])?;
        let mut nodes: Vec<Node> = md
            .brokers
            .iter()
            .map(|b| Node { id: b.node_id.0, host: b.host.to_string(), port: b.port })
            .collect();
        nodes.sort();
        if nodes.is_empty() {
            bail!("broker {} lists no brokers in its metadata", self.bootstrap);
        }
        Ok(nodes)
    }

    /// Finds the coordinator of each key (`key_type` 0: group, 1: transactional
    /// id), retrying retriable errors until the deadline. Keys whose lookup
    /// failed with a non-retriable error get that error code.
    pub fn find_coordinators(&mut self, key_type: i8, keys: &[String]) -> Result<Vec<(String, Result<Node, i16>)>> {
        let mut done: HashMap<String, Result<Node, i16>> = HashMap::new();
        let mut last_err = String::from("no answer");
        loop {
            let pending: Vec<String> = keys.iter().filter(|k| !done.contains_key(*k)).cloned().collect();
            if pending.is_empty() {
                break;
            }
            let c = self.bootstrap();
            let v = c.version::<FindCoordinatorRequest>(1)?;
            let answers: Vec<(String, i16, Node)> = if v >= 4 {
                let req = FindCoordinatorRequest::default()
                    .with_key_type(key_type)
                    .with_coordinator_keys(pending.iter().map(|k| StrBytes::from_string(k.clone())).collect());
                c.call(&req, v)?
                    .coordinators
                    .into_iter()
                    .map(|x| (x.key.to_string(), x.error_code, Node { id: x.node_id.0, host: x.host.to_string(), port: x.port }))
                    .collect()
            } else {
                let mut out = Vec::new();
                for k in &pending {
                    let req = FindCoordinatorRequest::default().with_key_type(key_type).with_key(StrBytes::from_string(k.clone()));
                    let r = c.call(&req, v)?;
                    out.push((k.clone(), r.error_code, Node { id: r.node_id.0, host: r.host.to_string(), port: r.port }));
                }
                out
            };
            for (k, code, node) in answers {
                if !pending.contains(&k) {
                    continue;
                }
                if code == 0 {
                    done.insert(k, Ok(node));
                } else if is_retriable(code) {
                    last_err = error_name(code);
                } else {
                    done.insert(k, Err(code));
                }
            }
            if done.len() < keys.len() && !self.may_retry() {
                bail!("cannot find the coordinator: {last_err} (still after {RETRY_TIMEOUT:?})");
            }
        }
        Ok(keys.iter().map(|k| (k.clone(), done[k].clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("127.0.0.1", 9092), "127.0.0.1:9092");
        assert_eq!(host_port("::1", 9092), "[::1]:9092");
        assert_eq!(host_port("[::1]", 9092), "[::1]:9092");
    }

    #[test]
    fn error_names() {
        assert_eq!(error_name(15), "CoordinatorNotAvailable (15)");
        assert!(is_retriable(14));
        assert!(!is_retriable(105));
        assert_eq!(error_name(9999), "error code 9999");
    }
}
