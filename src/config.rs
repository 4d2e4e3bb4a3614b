//! Broker and topic configuration, under Kafka's names.
//!
//! The broker configuration comes from embedded defaults, then a TOML file
//! (`--config`), then `--set key=value` flags, then the dedicated CLI flags.
//! Topic configuration is a set of per-topic overrides over the broker's
//! `log.*` defaults; [`LogConfig`] is the typed, effective result a partition
//! log runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::limits;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("unknown configuration key `{0}`")]
    UnknownKey(String),
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue { key: String, value: String, reason: String },
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue { key: key.to_string(), value: value.to_string(), reason: reason.into() }
}

fn parse_i64(key: &str, value: &str, min: i64) -> Result<i64, ConfigError> {
    let v: i64 = value.trim().parse().map_err(|_| invalid(key, value, "not an integer"))?;
    if v < min {
        return Err(invalid(key, value, format!("must be at least {min}")));
    }
    Ok(v)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

/// How a batch's timestamps are taken (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

impl TimestampType {
    fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        match value.trim() {
            "CreateTime" => Ok(Self::CreateTime),
            "LogAppendTime" => Ok(Self::LogAppendTime),
            _ => Err(invalid(key, value, "expected CreateTime or LogAppendTime")),
        }
    }
}

/// The typed, effective configuration one partition log runs with.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    pub flush_ms: i64,
    pub flush_messages: i64,
    pub index_interval_bytes: u64,
    /// `cleanup.policy` includes `delete`: retention applies.
    pub cleanup_delete: bool,
    /// `cleanup.policy` includes `compact`: records must have keys.
    pub cleanup_compact: bool,
}

impl LogConfig {
    /// A configuration for tests and tools: Kafka's defaults with the given segment size.
    pub fn with_segment_bytes(segment_bytes: u64) -> Self {
        let mut cfg = BrokerConfig::default().log_config(&TopicOverrides::default());
        cfg.segment_bytes = segment_bytes;
        cfg
    }
}

/// A topic-level configuration key, its broker-level synonym and how it is validated.
pub struct TopicKey {
    pub name: &'static str,
    pub broker_synonym: &'static str,
    pub sensitive: bool,
    /// Kafka's ConfigType code for DescribeConfigs v3+ (3 = INT, 5 = LONG, 2 = STRING ...).
    pub config_type: i8,
}

const CT_STRING: i8 = 2;
const CT_INT: i8 = 3;
const CT_LONG: i8 = 5;

/// Every topic configuration key the broker accepts.
pub const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey { name: "cleanup.policy", broker_synonym: "log.cleanup.policy", sensitive: false, config_type: 7 },
    TopicKey { name: "compression.type", broker_synonym: "compression.type", sensitive: false, config_type: CT_STRING },
    TopicKey { name: "flush.messages", broker_synonym: "log.flush.interval.messages", sensitive: false, config_type: CT_LONG },
    TopicKey { name: "flush.ms", broker_synonym: "log.flush.interval.ms", sensitive: false, config_type: CT_LONG },
    TopicKey { name: "index.interval.bytes", broker_synonym: "log.index.interval.bytes", sensitive: false, config_type: CT_INT },
    TopicKey { name: "max.message.bytes", broker_synonym: "message.max.bytes", sensitive: false, config_type: CT_INT },
    // Deprecated in Kafka 3.x and ignored there for message format v2; accepted for compatibility.
    TopicKey { name: "message.format.version", broker_synonym: "log.message.format.version", sensitive: false, config_type: CT_STRING },
    TopicKey { name: "message.timestamp.type", broker_synonym: "log.message.timestamp.type", sensitive: false, config_type: CT_STRING },
    TopicKey { name: "min.insync.replicas", broker_synonym: "min.insync.replicas", sensitive: false, config_type: CT_INT },
    TopicKey { name: "retention.bytes", broker_synonym: "log.retention.bytes", sensitive: false, config_type: CT_LONG },
    TopicKey { name: "retention.ms", broker_synonym: "log.retention.ms", sensitive: false, config_type: CT_LONG },
    TopicKey { name: "segment.bytes", broker_synonym: "log.segment.bytes", sensitive: false, config_type: CT_INT },
    TopicKey { name: "segment.ms", broker_synonym: "log.roll.ms", sensitive: false, config_type: CT_LONG },
];

pub fn topic_key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|k| k.name == name)
}

/// Per-topic overrides (only keys set explicitly on the topic).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopicOverrides(pub BTreeMap<String, String>);

impl TopicOverrides {
    /// Validates one topic-level key and value.
    pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
        let Some(k) = topic_key(key) else {
            return Err(ConfigError::UnknownKey(key.to_string()));
        };
        match k.name {
            "cleanup.policy" => {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if items.is_empty() || items.iter().any(|i| *i != "delete" && *i != "compact") {
                    Err(invalid(key, value, "expected delete, compact or both"))
                } else {
                    Ok(())
                }
            }
            "compression.type" => match value.trim() {
                "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
                _ => Err(invalid(key, value, "unknown compression type")),
            },
            "message.timestamp.type" => TimestampType::parse(key, value).map(|_| ()),
            "retention.ms" | "retention.bytes" => parse_i64(key, value, -1).map(|_| ()),
            "segment.bytes" => {
                let v = parse_i64(key, value, 14)?;
                if v > i32::MAX as i64 {
                    return Err(invalid(key, value, "must fit in an int"));
                }
                Ok(())
            }
            "max.message.bytes" => parse_i64(key, value, 0).map(|_| ()),
            "segment.ms" | "flush.ms" | "flush.messages" | "index.interval.bytes" => {
                parse_i64(key, value, if k.name == "segment.ms" { 1 } else { 0 }).map(|_| ())
            }
            "min.insync.replicas" => parse_i64(key, value, 1).map(|_| ()),
            _ => Ok(()),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// The broker's own configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub data_dir: PathBuf,
    pub num_partitions: i32,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: i64,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub log_flush_interval_ms: i64,
    pub log_flush_interval_messages: i64,
    pub log_index_interval_bytes: u64,
    pub log_message_timestamp_type: TimestampType,
    pub compression_type: String,
    pub min_insync_replicas: i64,
    /// Run glommio's busy-poll for this many microseconds before parking (0 = park at once).
    pub spin_before_park_us: u64,
    /// Where shard 0 serves `/metrics` (None: no admin endpoint).
    pub admin_listen: Option<SocketAddr>,
    /// io_uring buffer memory per core (0: glommio's default).
    pub io_memory_bytes: usize,
    /// Scheduler shares of background work (retention) against request handling's 1000.
    pub background_shares: usize,
    /// Report tasks that hold a reactor longer than this (0: stall detection off).
    pub stall_threshold_ms: u64,
    /// Consumer-group coordinator settings.
    pub group: GroupConfig,
    /// `producer.id.expiration.ms`: idempotent producer state idle this long is forgotten.
    pub producer_id_expiration_ms: i64,
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`.
    pub txn_state_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i64,
    /// `transactional.id.expiration.ms`: transactional ids idle this long are forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `max.connections`: client connections the broker keeps open at once. Enforced per core,
    /// see [`per_core_budget`].
    pub max_connections: i32,
    /// `max.connections.per.ip`: client connections one address keeps open at once. Enforced
    /// per core, see [`per_core_budget`].
    pub max_connections_per_ip: i32,
    /// `max.connections.per.ip.overrides`: per-address exceptions to `max.connections.per.ip`
    /// (IP addresses only; host names are not resolved).
    pub max_connections_per_ip_overrides: Vec<(std::net::IpAddr, i32)>,
    /// `connections.max.idle.ms`: a connection that moves no bytes for this long while no
    /// request of it is being processed is closed (-1: never).
    pub connections_max_idle_ms: i64,
}

/// The share of a broker-wide connection limit that one core enforces: `ceil(limit / shards)`.
///
/// Each core has its own listener (SO_REUSEPORT) and counts only its own connections, with
/// no state shared between cores, so `max.connections` and `max.connections.per.ip` (and its
/// overrides) are split into equal per-core budgets. The kernel spreads connections over the
/// listeners by a hash of their addresses and ports, not by load, so a new connection can be
/// refused by a core whose budget is spent while another core still has room: the broker
/// admits at least one core's budget and at most `shards * ceil(limit / shards)` connections
/// (at most `shards - 1` over the limit). A limit of 0 refuses every connection.
pub fn per_core_budget(limit: i32, shards: usize) -> u64 {
    (limit.max(0) as u64).div_ceil(shards.max(1) as u64)
}

fn parse_ip_overrides(key: &str, value: &str) -> Result<Vec<(std::net::IpAddr, i32)>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (ip, n) = item.rsplit_once(':').ok_or_else(|| invalid(key, value, format!("`{item}`: expected IP:count")))?;
        let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr =
            ip.parse().map_err(|_| invalid(key, value, format!("`{ip}` is not an IP address (host names are not resolved)")))?;
        let n = parse_i64(key, n, 0)?.min(i32::MAX as i64) as i32;
        out.retain(|(other, _)| *other != ip);
        out.push((ip, n));
    }
    Ok(out)
}

/// Settings of the group coordinator, under Kafka's names.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`: the session timeouts members may ask for.
    pub min_session_timeout_ms: i64,
    pub max_session_timeout_ms: i64,
    /// `group.max.size`: members per group.
    pub max_size: usize,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` (fixed once the topic exists).
    pub offsets_topic_partitions: i32,
    /// `offset.metadata.max.bytes`: the longest metadata string a commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes` in ms: committed offsets of an empty group are dropped after this long.
    pub offsets_retention_ms: i64,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            offsets_topic_partitions: 50,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            consumer_heartbeat_interval_ms: 5000,
            consumer_session_timeout_ms: 45_000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let addr: SocketAddr = "127.0.0.1:9092".parse().expect("literal address");
        BrokerConfig {
            node_id: 1,
            listen: addr,
            advertise: addr,
            data_dir: PathBuf::from("./data"),
            num_partitions: 1,
            auto_create_topics_enable: true,
            delete_topic_enable: true,
            log_segment_bytes: 1024 * 1024 * 1024,
            log_roll_ms: 7 * 24 * 3600 * 1000,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 300_000,
            message_max_bytes: limits::MESSAGE_BYTES_MAX_DEFAULT,
            socket_request_max_bytes: limits::REQUEST_BYTES_MAX_DEFAULT,
            log_flush_interval_ms: i64::MAX,
            log_flush_interval_messages: i64::MAX,
            log_index_interval_bytes: 4096,
            log_message_timestamp_type: TimestampType::CreateTime,
            compression_type: "producer".to_string(),
            min_insync_replicas: 1,
            spin_before_park_us: 0,
            admin_listen: Some("127.0.0.1:9644".parse().expect("literal address")),
            io_memory_bytes: 0,
            background_shares: 100,
            stall_threshold_ms: 0,
            group: GroupConfig::default(),
            producer_id_expiration_ms: 86_400_000,
            txn_state_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            max_connections: i32::MAX,
            max_connections_per_ip: i32::MAX,
            max_connections_per_ip_overrides: Vec::new(),
            connections_max_idle_ms: 600_000,
        }
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let v = value.trim().trim_start_matches("PLAINTEXT://");
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| invalid(key, value, "expected host:port"))
}

impl BrokerConfig {
    /// Applies one `key=value` setting under Kafka's name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "node.id" | "broker.id" => self.node_id = parse_i64(key, value, 0)? as i32,
            "listeners" | "listen" => self.listen = parse_addr(key, value)?,
            "advertised.listeners" | "advertise" => self.advertise = parse_addr(key, value)?,
            "log.dirs" | "log.dir" | "data.dir" => self.data_dir = PathBuf::from(value.trim()),
            "num.partitions" => {
                let v = parse_i64(key, value, 1)?;
                if v > limits::TOPIC_PARTITIONS_MAX as i64 {
                    return Err(invalid(key, value, "too many partitions"));
                }
                self.num_partitions = v as i32;
            }
            "auto.create.topics.enable" => self.auto_create_topics_enable = parse_bool(key, value)?,
            "delete.topic.enable" => self.delete_topic_enable = parse_bool(key, value)?,
            "log.segment.bytes" => {
                TopicOverrides::validate("segment.bytes", value)?;
                self.log_segment_bytes = parse_i64(key, value, 14)? as u64;
            }
            "log.roll.ms" => self.log_roll_ms = parse_i64(key, value, 1)?,
            "log.roll.hours" => self.log_roll_ms = parse_i64(key, value, 1)? * 3_600_000,
            "log.retention.ms" => self.log_retention_ms = parse_i64(key, value, -1)?,
            "log.retention.minutes" => self.log_retention_ms = parse_i64(key, value, -1)? * 60_000,
            "log.retention.hours" => self.log_retention_ms = parse_i64(key, value, -1)? * 3_600_000,
            "log.retention.bytes" => self.log_retention_bytes = parse_i64(key, value, -1)?,
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval_ms = parse_i64(key, value, 1)?
            }
            "message.max.bytes" => self.message_max_bytes = parse_i64(key, value, 0)? as usize,
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = parse_i64(key, value, 1024)? as usize
            }
            "log.flush.interval.ms" => self.log_flush_interval_ms = parse_i64(key, value, 0)?,
            "log.flush.interval.messages" => {
                self.log_flush_interval_messages = parse_i64(key, value, 1)?
            }
            "log.index.interval.bytes" => {
                self.log_index_interval_bytes = parse_i64(key, value, 0)? as u64
            }
            "log.message.timestamp.type" => {
                self.log_message_timestamp_type = TimestampType::parse(key, value)?
            }
            "compression.type" => {
                TopicOverrides::validate(key, value)?;
                self.compression_type = value.trim().to_string();
            }
            "min.insync.replicas" => self.min_insync_replicas = parse_i64(key, value, 1)?,
            "reactor.spin.before.park.us" => self.spin_before_park_us = parse_i64(key, value, 0)? as u64,
            "admin.listen" => {
                self.admin_listen = match value.trim() {
                    "" | "none" | "off" => None,
                    v => Some(parse_addr(key, v)?),
                }
            }
            "reactor.io.memory.bytes" => self.io_memory_bytes = parse_i64(key, value, 0)? as usize,
            "reactor.background.shares" => {
                let v = parse_i64(key, value, 1)?;
                if v > 1000 {
                    return Err(invalid(key, value, "at most 1000 (request handling has 1000)"));
                }
                self.background_shares = v as usize;
            }
            "reactor.stall.threshold.ms" => self.stall_threshold_ms = parse_i64(key, value, 0)? as u64,
            "group.initial.rebalance.delay.ms" => self.group.initial_rebalance_delay_ms = parse_i64(key, value, 0)?,
            "group.min.session.timeout.ms" => self.group.min_session_timeout_ms = parse_i64(key, value, 0)?,
            "group.max.session.timeout.ms" => self.group.max_session_timeout_ms = parse_i64(key, value, 0)?,
            "group.max.size" => self.group.max_size = parse_i64(key, value, 1)?.min(i32::MAX as i64) as usize,
            "offsets.topic.num.partitions" => {
                let v = parse_i64(key, value, 1)?;
                if v > 1000 {
                    return Err(invalid(key, value, "at most 1000"));
                }
                self.group.offsets_topic_partitions = v as i32;
            }
            "offset.metadata.max.bytes" => self.group.offset_metadata_max_bytes = parse_i64(key, value, 0)? as usize,
            "offsets.retention.minutes" => self.group.offsets_retention_ms = parse_i64(key, value, 1)? * 60_000,
            "group.consumer.heartbeat.interval.ms" => {
                self.group.consumer_heartbeat_interval_ms = parse_i64(key, value, 1)?.min(i32::MAX as i64) as i32
            }
            "group.consumer.session.timeout.ms" => self.group.consumer_session_timeout_ms = parse_i64(key, value, 1)?,
            "producer.id.expiration.ms" => self.producer_id_expiration_ms = parse_i64(key, value, 1)?,
            "transaction.state.log.num.partitions" => {
                let v = parse_i64(key, value, 1)?;
                if v > 1000 {
                    return Err(invalid(key, value, "at most 1000"));
                }
                self.txn_state_partitions = v as i32;
            }
            "transaction.max.timeout.ms" => self.transaction_max_timeout_ms = parse_i64(key, value, 1)?,
            "transactional.id.expiration.ms" => self.transactional_id_expiration_ms = parse_i64(key, value, 1)?,
            "max.connections" => self.max_connections = parse_i64(key, value, 0)?.min(i32::MAX as i64) as i32,
            "max.connections.per.ip" => self.max_connections_per_ip = parse_i64(key, value, 0)?.min(i32::MAX as i64) as i32,
            "max.connections.per.ip.overrides" => self.max_connections_per_ip_overrides = parse_ip_overrides(key, value)?,
            "connections.max.idle.ms" => {
                let v = parse_i64(key, value, -1)?;
                if v == 0 {
                    return Err(invalid(key, value, "must be -1 (never) or at least 1"));
                }
                self.connections_max_idle_ms = v;
            }
            // Accepted for compatibility with Kafka set-ups: one broker means one replica.
            "offsets.topic.replication.factor" | "transaction.state.log.replication.factor" | "transaction.state.log.min.isr" => {
                parse_i64(key, value, 1)?;
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Applies a TOML file of `key = value` pairs (keys under Kafka's names, quoted
    /// where they contain dots: `"log.segment.bytes" = 1073741824`).
    pub fn apply_toml(&mut self, text: &str, path: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File { path: path.to_string(), reason: e.to_string() })?;
        let mut flat = Vec::new();
        flatten_toml("", &table, &mut flat);
        for (k, v) in flat {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// The effective log configuration for a topic with the given overrides.
    pub fn log_config(&self, o: &TopicOverrides) -> LogConfig {
        let num = |key: &str, default: i64| -> i64 {
            o.get(key).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
        };
        LogConfig {
            segment_bytes: num("segment.bytes", self.log_segment_bytes as i64).max(14) as u64,
            segment_ms: num("segment.ms", self.log_roll_ms).max(1),
            retention_ms: num("retention.ms", self.log_retention_ms),
            retention_bytes: num("retention.bytes", self.log_retention_bytes),
            max_message_bytes: num("max.message.bytes", self.message_max_bytes as i64).max(0) as usize,
            timestamp_type: o
                .get("message.timestamp.type")
                .and_then(|v| TimestampType::parse("", v).ok())
                .unwrap_or(self.log_message_timestamp_type),
            flush_ms: num("flush.ms", self.log_flush_interval_ms),
            flush_messages: num("flush.messages", self.log_flush_interval_messages),
            index_interval_bytes: num("index.interval.bytes", self.log_index_interval_bytes as i64).max(0)
                as u64,
            cleanup_delete: o.get("cleanup.policy").is_none_or(|p| p.split(',').any(|i| i.trim() == "delete")),
            cleanup_compact: o.get("cleanup.policy").is_some_and(|p| p.split(',').any(|i| i.trim() == "compact")),
        }
    }

    /// The broker-level default for a topic key, as a string.
    pub fn topic_default(&self, key: &str) -> String {
        match key {
            "cleanup.policy" => "delete".to_string(),
            "compression.type" => self.compression_type.clone(),
            "flush.messages" => self.log_flush_interval_messages.to_string(),
            "flush.ms" => self.log_flush_interval_ms.to_string(),
            "index.interval.bytes" => self.log_index_interval_bytes.to_string(),
            "max.message.bytes" => self.message_max_bytes.to_string(),
            "message.format.version" => "3.0-IV1".to_string(),
            "message.timestamp.type" => match self.log_message_timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_string(),
                TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            },
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "retention.bytes" => self.log_retention_bytes.to_string(),
            "retention.ms" => self.log_retention_ms.to_string(),
            "segment.bytes" => self.log_segment_bytes.to_string(),
            "segment.ms" => self.log_roll_ms.to_string(),
            _ => String::new(),
        }
    }

    /// The broker's settings as (name, value) pairs, for DescribeConfigs on the broker.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("node.id", self.node_id.to_string()),
            ("broker.id", self.node_id.to_string()),
            ("listeners", format!("PLAINTEXT://{}", self.listen)),
            ("advertised.listeners", format!("PLAINTEXT://{}", self.advertise)),
            ("log.dirs", self.data_dir.display().to_string()),
            ("num.partitions", self.num_partitions.to_string()),
            ("auto.create.topics.enable", self.auto_create_topics_enable.to_string()),
            ("delete.topic.enable", self.delete_topic_enable.to_string()),
            ("log.segment.bytes", self.log_segment_bytes.to_string()),
            ("log.roll.ms", self.log_roll_ms.to_string()),
            ("log.retention.ms", self.log_retention_ms.to_string()),
            ("log.retention.bytes", self.log_retention_bytes.to_string()),
            ("log.retention.check.interval.ms", self.log_retention_check_interval_ms.to_string()),
            ("message.max.bytes", self.message_max_bytes.to_string()),
            ("socket.request.max.bytes", self.socket_request_max_bytes.to_string()),
            ("log.flush.interval.ms", self.log_flush_interval_ms.to_string()),
            ("log.flush.interval.messages", self.log_flush_interval_messages.to_string()),
            ("log.index.interval.bytes", self.log_index_interval_bytes.to_string()),
            ("log.message.timestamp.type", self.topic_default("message.timestamp.type")),
            ("log.cleanup.policy", "delete".to_string()),
            ("compression.type", self.compression_type.clone()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("default.replication.factor", "1".to_string()),
            ("offsets.topic.replication.factor", "1".to_string()),
            ("offsets.topic.num.partitions", self.group.offsets_topic_partitions.to_string()),
            ("offsets.retention.minutes", (self.group.offsets_retention_ms / 60_000).to_string()),
            ("offset.metadata.max.bytes", self.group.offset_metadata_max_bytes.to_string()),
            ("group.initial.rebalance.delay.ms", self.group.initial_rebalance_delay_ms.to_string()),
            ("group.min.session.timeout.ms", self.group.min_session_timeout_ms.to_string()),
            ("group.max.session.timeout.ms", self.group.max_session_timeout_ms.to_string()),
            ("group.max.size", self.group.max_size.to_string()),
            ("group.consumer.heartbeat.interval.ms", self.group.consumer_heartbeat_interval_ms.to_string()),
            ("group.consumer.session.timeout.ms", self.group.consumer_session_timeout_ms.to_string()),
            ("producer.id.expiration.ms", self.producer_id_expiration_ms.to_string()),
            ("transaction.state.log.num.partitions", self.txn_state_partitions.to_string()),
            ("transaction.state.log.replication.factor", "1".to_string()),
            ("transaction.max.timeout.ms", self.transaction_max_timeout_ms.to_string()),
            ("transactional.id.expiration.ms", self.transactional_id_expiration_ms.to_string()),
            ("max.connections", self.max_connections.to_string()),
            ("max.connections.per.ip", self.max_connections_per_ip.to_string()),
            (
                "max.connections.per.ip.overrides",
                self.max_connections_per_ip_overrides.iter().map(|(ip, n)| format!("{ip}:{n}")).collect::<Vec<_>>().join(","),
            ),
            ("connections.max.idle.ms", self.connections_max_idle_ms.to_string()),
            ("admin.listen", self.admin_listen.map(|a| a.to_string()).unwrap_or_else(|| "none".into())),
            ("reactor.spin.before.park.us", self.spin_before_park_us.to_string()),
            ("reactor.io.memory.bytes", self.io_memory_bytes.to_string()),
            ("reactor.background.shares", self.background_shares.to_string()),
            ("reactor.stall.threshold.ms", self.stall_threshold_ms.to_string()),
        ]
    }
}

fn flatten_toml(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten_toml(&key, t, out),
            toml::Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_toml_use_kafka_names() {
        let mut c = BrokerConfig::default();
        c.set("num.partitions", "3").unwrap();
        c.apply_toml("\"log.segment.bytes\" = 4096\n[log.retention]\nms = 1000\n", "t.toml").unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.log_segment_bytes, 4096);
        assert_eq!(c.log_retention_ms, 1000);
        assert!(matches!(c.set("no.such.key", "1"), Err(ConfigError::UnknownKey(_))));
        assert!(c.set("num.partitions", "zero").is_err());
    }

    #[test]
    fn connection_limits_parse_and_split_per_core() {
        let mut c = BrokerConfig::default();
        assert_eq!((c.max_connections, c.max_connections_per_ip, c.connections_max_idle_ms), (i32::MAX, i32::MAX, 600_000));
        c.set("max.connections", "10").unwrap();
        c.set("max.connections.per.ip", "3").unwrap();
        c.set("max.connections.per.ip.overrides", "127.0.0.2:100, ::1:0,[fe80::1]:7").unwrap();
        c.set("connections.max.idle.ms", "-1").unwrap();
        assert_eq!((c.max_connections, c.max_connections_per_ip, c.connections_max_idle_ms), (10, 3, -1));
        let ips: Vec<(String, i32)> = c.max_connections_per_ip_overrides.iter().map(|(ip, n)| (ip.to_string(), *n)).collect();
        assert_eq!(ips, vec![("127.0.0.2".into(), 100), ("::1".into(), 0), ("fe80::1".into(), 7)]);
        assert!(c.set("max.connections", "-1").is_err());
        assert!(c.set("connections.max.idle.ms", "0").is_err());
        assert!(c.set("max.connections.per.ip.overrides", "somehost:5").is_err());
        assert!(c.set("max.connections.per.ip.overrides", "127.0.0.1").is_err());
        c.set("max.connections.per.ip.overrides", "").unwrap();
        assert!(c.max_connections_per_ip_overrides.is_empty());
        assert_eq!(per_core_budget(10, 3), 4);
        assert_eq!(per_core_budget(10, 1), 10);
        assert_eq!(per_core_budget(1, 4), 1);
        assert_eq!(per_core_budget(0, 4), 0);
        assert_eq!(per_core_budget(i32::MAX, 2), (i32::MAX as u64).div_ceil(2));
    }

    #[test]
    fn topic_overrides_take_precedence() {
        let c = BrokerConfig::default();
        let mut o = TopicOverrides::default();
        o.0.insert("retention.ms".into(), "5".into());
        o.0.insert("message.timestamp.type".into(), "LogAppendTime".into());
        let l = c.log_config(&o);
        assert_eq!(l.retention_ms, 5);
        assert_eq!(l.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(l.segment_bytes, c.log_segment_bytes);
        assert!(TopicOverrides::validate("retention.ms", "x").is_err());
        assert!(TopicOverrides::validate("bogus", "1").is_err());
        assert!(TopicOverrides::validate("cleanup.policy", "compact,delete").is_ok());
        assert!(TopicOverrides::validate("cleanup.policy", "shred").is_err());
    }
}
