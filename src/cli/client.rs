//! Client commands: `corestream topic ...`, `corestream produce ...` and
//! `corestream consume ...`.
//!
//! These commands talk to *any* Kafka-compatible broker (corestream itself,
//! Apache Kafka, Redpanda, ...) through librdkafka, via the `rdkafka` crate.
//! They deliberately share no code with the broker, so they can serve as an
//! independent check of its wire protocol.
//!
//! The `rdkafka` crate is built without tokio, so the admin API futures are
//! driven with [`futures_lite::future::block_on`]; producing and consuming
//! use the synchronous `BaseProducer` / `BaseConsumer`.
//!
//! librdkafka's own log lines are forwarded to `tracing` at debug level
//! (target `librdkafka`) and its log level is kept at `critical` unless the
//! user asks for more with `-X debug=...` or `-X log_level=N`, so normal use
//! prints nothing but the command's own output. Every failure is turned into
//! a single-line [`anyhow::Error`]; where librdkafka reported a reason (such
//! as "Connection refused") it is appended.
//!
//! Output conventions:
//! - `topic list` prints topic names, sorted, one per line (internal topics
//!   whose names start with `__` are skipped).
//! - `produce` reads records from stdin, one per line; the part of a line
//!   before the first key separator (default TAB) is the key. It prints
//!   `produced N records` to stderr.
//! - `consume` prints one record per line to stdout:
//!   `[partition:offset\t][key\t]value` (a missing key or value prints as
//!   an empty string).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, BufRead, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// How long to wait for cluster metadata and watermarks.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Request and broker-side operation timeout for admin API calls.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `message.timeout.ms` for `produce` (librdkafka's default is 5
/// minutes, far too long for an interactive tool talking to a dead broker).
const DEFAULT_MESSAGE_TIMEOUT_MS: &str = "30000";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// How to reach the cluster; flattened into every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Bootstrap broker(s), `host:port[,host:port...]`.
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Extra librdkafka configuration property (repeatable), e.g.
    /// `-X debug=broker,protocol` or `-X api.version.request=false`.
    #[arg(long = "property", short = 'X', value_name = "KEY=VALUE", value_parser = validate_key_value)]
    pub props: Vec<String>,
}

/// `corestream topic ...`
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Replication factor.
        #[arg(long = "replication-factor", short = 'r', default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        replication_factor: i32,
        /// Topic configuration (repeatable), e.g. `--config retention.ms=60000`.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        conn: Connection,
    },
    /// List topics (internal `__*` topics are hidden).
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show a topic's partitions, watermarks and configuration.
    Describe {
        /// Topic name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete one or more topics.
    Delete {
        /// Topic names.
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a topic's configuration overrides.
    #[command(name = "alter-config")]
    AlterConfig {
        /// Topic name.
        name: String,
        /// Set a configuration override (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove a configuration override, reverting it to the default (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `acks` setting for `produce`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Wait for all in-sync replicas.
    #[value(name = "all")]
    All,
    /// Wait for the leader only.
    #[value(name = "1")]
    One,
    /// Do not wait for any acknowledgement.
    #[value(name = "0")]
    Zero,
}

impl Acks {
    fn as_config(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::One => "1",
            Acks::Zero => "0",
        }
    }
}

/// Compression codec for `produce`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn as_config(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `corestream produce TOPIC ...`: one record per stdin line.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Topic to produce to.
    pub topic: String,
    /// Produce every record to this partition (default: librdkafka's partitioner).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Separator between key and value on each line; `\t` and `\\` escapes are understood.
    #[arg(long = "key-separator", short = 'K', default_value = "\\t", value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: String,
    /// Required acknowledgements.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Compression codec.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Treat each whole line as the value (no key).
    #[arg(long = "no-keys")]
    pub no_keys: bool,
    #[command(flatten)]
    pub conn: Connection,
}

/// Where `consume` starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The earliest available offset.
    Beginning,
    /// The end of the partition: only records produced from now on.
    End,
    /// This exact offset (clamped into the partition's available range).
    Offset(i64),
}

/// `corestream consume TOPIC ...`: print records to stdout, one per line.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to consume from.
    pub topic: String,
    /// Only consume this partition (default: all partitions).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Start at `beginning`, `end`, or a numeric OFFSET.
    #[arg(long, default_value = "beginning", value_name = "beginning|end|OFFSET", value_parser = parse_from)]
    pub from: StartFrom,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Stop after this many milliseconds without a new record.
    #[arg(long = "timeout-ms", default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Prefix each value with `key<TAB>`.
    #[arg(long = "print-key")]
    pub print_key: bool,
    /// Prefix each record with `partition:offset<TAB>`.
    #[arg(long = "print-offset")]
    pub print_offset: bool,
    #[command(flatten)]
    pub conn: Connection,
}

// ---------------------------------------------------------------------------
// Pure helpers (unit tested)
// ---------------------------------------------------------------------------

/// Splits `KEY=VALUE` at the first `=`. The key is trimmed and must not be
/// empty; the value is kept verbatim (it may contain `=` or be empty).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("empty key in `{s}`"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn validate_key_value(s: &str) -> Result<String, String> {
    parse_key_value(s).map(|_| s.to_string())
}

/// Parses a list of `KEY=VALUE` strings into a map; later duplicates win.
pub fn parse_kv_list<S: AsRef<str>>(items: &[S]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items {
        let (k, v) = parse_key_value(item.as_ref()).map_err(|e| anyhow!(e))?;
        map.insert(k, v);
    }
    Ok(map)
}

/// Parses the `--from` argument.
pub fn parse_from(s: &str) -> Result<StartFrom, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "beginning" | "earliest" | "start" => Ok(StartFrom::Beginning),
        "end" | "latest" => Ok(StartFrom::End),
        other => match other.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(StartFrom::Offset(n)),
            _ => Err(format!(
                "expected `beginning`, `end` or a non-negative offset, got `{s}`"
            )),
        },
    }
}

/// Parses `--key-separator`, understanding the escapes `\t` and `\\`.
pub fn parse_separator(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    if out.is_empty() {
        return Err("the key separator must not be empty".into());
    }
    if out.contains('\n') {
        return Err("the key separator must not contain a newline".into());
    }
    Ok(out)
}

/// Removes one trailing `\n` (and a `\r` before it) from a line.
pub fn strip_newline(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
    }
    line
}

/// Splits an input line into `(key, value)` at the first occurrence of
/// `sep`. A line without the separator (or any line when `no_keys`) is all
/// value, with no key.
pub fn split_line<'a>(line: &'a [u8], sep: &[u8], no_keys: bool) -> (Option<&'a [u8]>, &'a [u8]) {
    if no_keys || sep.is_empty() || sep.len() > line.len() {
        return (None, line);
    }
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
        None => (None, line),
    }
}

/// Clamps a requested start offset into `[low, high]`.
fn clamp_offset(requested: i64, low: i64, high: i64) -> i64 {
    if high < low {
        return requested;
    }
    requested.clamp(low, high)
}

fn log_level_from_number(v: &str) -> Result<RDKafkaLogLevel> {
    Ok(match v.trim().parse::<i32>() {
        Ok(0) => RDKafkaLogLevel::Emerg,
        Ok(1) => RDKafkaLogLevel::Alert,
        Ok(2) => RDKafkaLogLevel::Critical,
        Ok(3) => RDKafkaLogLevel::Error,
        Ok(4) => RDKafkaLogLevel::Warning,
        Ok(5) => RDKafkaLogLevel::Notice,
        Ok(6) => RDKafkaLogLevel::Info,
        Ok(7) => RDKafkaLogLevel::Debug,
        _ => bail!("invalid log_level `{v}`: expected a number from 0 to 7"),
    })
}

// ---------------------------------------------------------------------------
// librdkafka plumbing
// ---------------------------------------------------------------------------

/// Client context shared by all our clients: keeps librdkafka quiet,
/// remembers the last global error (for better error messages) and counts
/// delivery reports.
#[derive(Default)]
pub(crate) struct CliContext {
    /// Print librdkafka's log lines to stderr (the user asked for them with
    /// `-X debug=...` or `-X log_level=N`); otherwise they go to `tracing`
    /// at debug level.
    verbose: bool,
    last_error: Mutex<Option<String>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl CliContext {
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
}

impl ClientContext for CliContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if self.verbose {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        } else {
            tracing::debug!(target: "librdkafka", ?level, "{fac} {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "error: {error}: {reason}");
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(if reason.is_empty() {
                error.to_string()
            } else {
                reason.to_string()
            });
        }
    }
}

impl ConsumerContext for CliContext {}

impl ProducerContext for CliContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.first_failure.lock() {
                    if g.is_none() {
                        *g = Some(format!(
                            "{} [partition {}]: {e}",
                            msg.topic(),
                            msg.partition()
                        ));
                    }
                }
            }
        }
    }
}

pub(crate) type MetaClient = BaseProducer<CliContext>;

impl Connection {
    /// Builds a librdkafka configuration: our defaults, then `overrides`
    /// (command-specific settings), then the user's `-X` properties.
    pub(crate) fn client_config(&self, overrides: &[(&str, &str)]) -> Result<ClientConfig> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap);
        cfg.set("client.id", "corestream-cli");
        for (k, v) in overrides {
            cfg.set(*k, *v);
        }
        let mut level = RDKafkaLogLevel::Critical;
        for (k, v) in parse_kv_list(&self.props)? {
            if k == "debug" && !v.trim().is_empty() {
                level = RDKafkaLogLevel::Debug;
            }
            if k == "log_level" {
                level = log_level_from_number(&v)?;
            }
            cfg.set(k, v);
        }
        cfg.set_log_level(level);
        Ok(cfg)
    }

    /// A fresh client context for one librdkafka handle.
    pub(crate) fn context(&self) -> CliContext {
        let verbose = self.props.iter().any(|p| {
            parse_key_value(p)
                .map(|(k, v)| (k == "debug" && !v.trim().is_empty()) || k == "log_level")
                .unwrap_or(false)
        });
        CliContext {
            verbose,
            ..CliContext::default()
        }
    }

    /// A producer-type handle used only for metadata and watermark queries.
    /// (A producer, rather than a consumer, because it reports global errors
    /// with their reason text; auto-creation of topics is disabled so that
    /// describing a topic never creates it.)
    pub(crate) fn meta_client(&self) -> Result<MetaClient> {
        let cfg = self.client_config(&[("allow.auto.create.topics", "false")])?;
        cfg.create_with_context(self.context())
            .map_err(|e| anyhow!("cannot create Kafka client: {e}"))
    }

    pub(crate) fn admin_client(&self) -> Result<AdminClient<CliContext>> {
        let cfg = self.client_config(&[])?;
        cfg.create_with_context(self.context())
            .map_err(|e| anyhow!("cannot create Kafka admin client: {e}"))
    }
}

/// Formats a librdkafka failure, appending the last global error reported by
/// the client (e.g. "Connect to ipv4#127.0.0.1:9092 failed: Connection
/// refused") after draining the client's event queue.
pub(crate) fn client_err(meta: &MetaClient, what: impl Display, e: impl Display) -> anyhow::Error {
    meta.poll(Duration::ZERO);
    match meta.context().last_error() {
        Some(reason) => anyhow!("{what}: {e} (last broker error: {reason})"),
        None => anyhow!("{what}: {e}"),
    }
}

pub(crate) fn fetch_metadata(meta: &MetaClient, conn: &Connection, topic: Option<&str>) -> Result<Metadata> {
    meta.client()
        .fetch_metadata(topic, METADATA_TIMEOUT)
        .map_err(|e| {
            client_err(
                meta,
                format_args!("cannot fetch metadata from {}", conn.bootstrap),
                e,
            )
        })
}

/// Partition ids of `topic`, sorted; fails clearly if the topic is missing.
pub(crate) fn topic_partitions(meta: &MetaClient, conn: &Connection, topic: &str) -> Result<Vec<i32>> {
    let md = fetch_metadata(meta, conn, Some(topic))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            bail!("topic {topic} does not exist");
        }
        if t.partitions().is_empty() {
            bail!("cannot get metadata for topic {topic}: {code}");
        }
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Formats an admin API failure; a local timeout usually means the broker
/// does not implement the API at all, so say so.
fn admin_err(what: impl Display, api: &str, e: KafkaError) -> anyhow::Error {
    match e {
        KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut) => anyhow!(
            "{what}: no answer within {}s (does the broker support the {api} API?)",
            ADMIN_TIMEOUT.as_secs()
        ),
        e => anyhow!("{what}: {e}"),
    }
}

pub(crate) fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// Checks that the cluster is reachable before an admin call, so that a
/// dead broker gives a quick, precise error instead of an admin timeout.
fn check_reachable(conn: &Connection) -> Result<()> {
    let meta = conn.meta_client()?;
    fetch_metadata(&meta, conn, None).map(|_| ())
}

// ---------------------------------------------------------------------------
// topic
// ---------------------------------------------------------------------------

/// Runs `corestream topic ...`.
pub fn topic(cmd: TopicCommand) -> Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            conn,
        } => topic_create(&conn, &name, partitions, replication_factor, &configs),
        TopicCommand::List { conn } => topic_list(&conn),
        TopicCommand::Describe { name, conn } => topic_describe(&conn, &name),
        TopicCommand::Delete { names, conn } => topic_delete(&conn, &names),
        TopicCommand::AlterConfig {
            name,
            set,
            delete,
            conn,
        } => topic_alter_config(&conn, &name, &set, &delete),
    }
}

fn topic_create(
    conn: &Connection,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(String, String)],
) -> Result<()> {
    check_reachable(conn)?;
    // Later duplicates win.
    let configs: BTreeMap<&str, &str> = configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut new_topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in &configs {
        new_topic = new_topic.set(k, v);
    }
    let admin = conn.admin_client()?;
    let results =
        futures_lite::future::block_on(admin.create_topics([&new_topic], &admin_options()))
            .map_err(|e| {
                admin_err(
                    format_args!("cannot create topic {name}"),
                    "CreateTopics",
                    e,
                )
            })?;
    for r in results {
        match r {
            Ok(t) => println!("created topic {t}"),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                bail!("cannot create topic {t}: topic already exists")
            }
            Err((t, code)) => bail!("cannot create topic {t}: {code}"),
        }
    }
    Ok(())
}

/// Topic names in the cluster, sorted, without internal `__*` topics.
fn list_topic_names(conn: &Connection) -> Result<Vec<String>> {
    let meta = conn.meta_client()?;
    let md = fetch_metadata(&meta, conn, None)?;
    let mut names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| !n.starts_with("__"))
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

fn topic_list(conn: &Connection) -> Result<()> {
    let names = list_topic_names(conn)?;
    let mut out = io::stdout().lock();
    for n in names {
        if let Err(e) = writeln!(out, "{n}") {
            return stdout_err(e);
        }
    }
    Ok(())
}

/// Fetches the configuration entries of a topic.
fn describe_topic_configs(
    admin: &AdminClient<CliContext>,
    name: &str,
) -> Result<Vec<rdkafka::admin::ConfigEntry>> {
    let spec = ResourceSpecifier::Topic(name);
    let results = futures_lite::future::block_on(admin.describe_configs([&spec], &admin_options()))
        .map_err(|e| {
            admin_err(
                format_args!("cannot describe configs of topic {name}"),
                "DescribeConfigs",
                e,
            )
        })?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("cannot describe configs of topic {name}: empty response"))?
        .map_err(|code| anyhow!("cannot describe configs of topic {name}: {code}"))?;
    let mut entries = resource.entries;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn topic_describe(conn: &Connection, name: &str) -> Result<()> {
    let meta = conn.meta_client()?;
    let md = fetch_metadata(&meta, conn, Some(name))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| anyhow!("topic {name} does not exist"))?;
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition || t.partitions().is_empty() {
            if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                bail!("topic {name} does not exist");
            }
            bail!("cannot describe topic {name}: {code}");
        }
    }

    let mut parts: Vec<_> = t.partitions().iter().collect();
    parts.sort_by_key(|p| p.id());
    let replication = parts.iter().map(|p| p.replicas().len()).max().unwrap_or(0);

    let join = |ids: &[i32]| {
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut lines = Vec::new();
    lines.push(format!(
        "Topic: {name}\tPartitionCount: {}\tReplicationFactor: {replication}",
        parts.len()
    ));
    for p in &parts {
        let mut line = format!(
            "\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            p.id(),
            p.leader(),
            join(p.replicas()),
            join(p.isr())
        );
        match meta
            .client()
            .fetch_watermarks(name, p.id(), METADATA_TIMEOUT)
        {
            Ok((low, high)) => {
                line.push_str(&format!("\tLowWatermark: {low}\tHighWatermark: {high}"))
            }
            Err(e) => line.push_str(&format!(
                "\tLowWatermark: ?\tHighWatermark: ?\tWatermarkError: {e}"
            )),
        }
        if let Some(err) = p.error() {
            line.push_str(&format!("\tError: {}", RDKafkaErrorCode::from(err)));
        }
        lines.push(line);
    }

    let admin = conn.admin_client()?;
    let entries = describe_topic_configs(&admin, name)?;
    lines.push("Configs:".to_string());
    for e in &entries {
        let value = match (&e.value, e.is_sensitive) {
            (_, true) => "<sensitive>",
            (Some(v), false) => v.as_str(),
            (None, false) => "<null>",
        };
        let mark = if e.is_default { " (default)" } else { "" };
        lines.push(format!("\t{}={value}{mark}", e.name));
    }

    let mut out = io::stdout().lock();
    for l in lines {
        if let Err(e) = writeln!(out, "{l}") {
            return stdout_err(e);
        }
    }
    Ok(())
}

fn topic_delete(conn: &Connection, names: &[String]) -> Result<()> {
    check_reachable(conn)?;
    let admin = conn.admin_client()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = futures_lite::future::block_on(admin.delete_topics(&refs, &admin_options()))
        .map_err(|e| admin_err("cannot delete topics", "DeleteTopics", e))?;
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(t) => println!("deleted topic {t}"),
            Err((t, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                failures.push(format!("{t}: topic does not exist"))
            }
            Err((t, code)) => failures.push(format!("{t}: {code}")),
        }
    }
    if !failures.is_empty() {
        bail!("cannot delete topic {}", failures.join("; "));
    }
    Ok(())
}

/// Whether a described config entry is an override set on the topic itself
/// (and must therefore be preserved when writing the full desired set).
fn is_topic_override(e: &rdkafka::admin::ConfigEntry) -> bool {
    !e.is_read_only
        && match e.source {
            ConfigSource::DynamicTopic => true,
            // Brokers older than Kafka 1.1 report no source.
            ConfigSource::Unknown => !e.is_default,
            _ => false,
        }
}

/// Merges the current overrides with `--set` / `--delete`; `Err` if the
/// same key is both set and deleted.
fn merge_overrides(
    current: BTreeMap<String, String>,
    set: &[(String, String)],
    delete: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut desired = current;
    for k in delete {
        if set.iter().any(|(s, _)| s == k) {
            bail!("config {k} is both set and deleted");
        }
        desired.remove(k);
    }
    for (k, v) in set {
        desired.insert(k.clone(), v.clone());
    }
    Ok(desired)
}

fn topic_alter_config(
    conn: &Connection,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<()> {
    if set.is_empty() && delete.is_empty() {
        bail!("nothing to change: give at least one --set KEY=VALUE or --delete KEY");
    }
    check_reachable(conn)?;
    let admin = conn.admin_client()?;
    let entries = describe_topic_configs(&admin, name)?;

    let mut current = BTreeMap::new();
    for e in entries.iter().filter(|e| is_topic_override(e)) {
        match (&e.value, e.is_sensitive) {
            (Some(v), false) => {
                current.insert(e.name.clone(), v.clone());
            }
            _ => eprintln!(
                "warning: cannot read sensitive config {} of topic {name}; it will be reset unless given with --set",
                e.name
            ),
        }
    }
    for k in delete {
        if !current.contains_key(k) {
            eprintln!("warning: topic {name} has no override for {k}");
        }
    }
    let desired = merge_overrides(current, set, delete)?;

    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
    for (k, v) in &desired {
        alter = alter.set(k, v);
    }
    let results = futures_lite::future::block_on(admin.alter_configs([&alter], &admin_options()))
        .map_err(|e| {
        admin_err(
            format_args!("cannot alter configs of topic {name}"),
            "AlterConfigs",
            e,
        )
    })?;
    for r in results {
        if let Err((_, code)) = r {
            bail!("cannot alter configs of topic {name}: {code}");
        }
    }
    println!("altered config of topic {name}");
    Ok(())
}

// ---------------------------------------------------------------------------
// produce
// ---------------------------------------------------------------------------

/// Runs `corestream produce ...`: records come from stdin.
pub fn produce(args: ProduceArgs) -> Result<()> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let delivered = produce_from(&args, &mut input)?;
    eprintln!("produced {delivered} records");
    Ok(())
}

/// Produces one record per line of `input`; returns the number delivered.
/// On delivery failures it prints the `produced N records` summary itself
/// and returns an error.
fn produce_from(args: &ProduceArgs, input: &mut dyn BufRead) -> Result<u64> {
    let conn = &args.conn;
    let cfg = conn.client_config(&[
        ("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS),
        ("acks", args.acks.as_config()),
        ("compression.type", args.compression.as_config()),
    ])?;
    let producer: BaseProducer<CliContext> = cfg
        .create_with_context(conn.context())
        .map_err(|e| anyhow!("cannot create Kafka producer: {e}"))?;

    // Fail fast (and clearly) on an unreachable cluster, a missing topic or a
    // partition out of range, instead of timing out record by record.
    let md = fetch_metadata(&producer, conn, Some(&args.topic))?;
    if let Some(t) = md.topics().iter().find(|t| t.name() == args.topic) {
        if t.error().map(RDKafkaErrorCode::from) == Some(RDKafkaErrorCode::UnknownTopicOrPartition)
        {
            bail!("topic {} does not exist", args.topic);
        }
        if let Some(p) = args.partition {
            let n = t.partitions().len();
            if n > 0 && !t.partitions().iter().any(|tp| tp.id() == p) {
                bail!(
                    "partition {p} does not exist (topic {} has {n} partitions)",
                    args.topic
                );
            }
        }
    }

    let sep = args.key_separator.as_bytes();
    let mut buf = Vec::new();
    let mut sent: u64 = 0;
    let mut enqueue_failures: u64 = 0;
    let mut first_enqueue_error: Option<String> = None;
    let mut line_no: u64 = 0;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .context("cannot read stdin")?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let (key, value) = split_line(strip_newline(&buf), sep, args.no_keys);
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&args.topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => {
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    enqueue_failures += 1;
                    if first_enqueue_error.is_none() {
                        first_enqueue_error = Some(format!("line {line_no}: {e}"));
                    }
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }

    let flush_result = producer.flush(Timeout::Never);
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed) + enqueue_failures;
    if failed > 0 {
        eprintln!("produced {delivered} records");
        let first = first_enqueue_error
            .or_else(|| ctx.first_failure.lock().ok().and_then(|g| g.clone()))
            .unwrap_or_default();
        let total = sent + enqueue_failures;
        return Err(match ctx.last_error() {
            Some(reason) => anyhow!(
                "failed to deliver {failed} of {total} records; first error: {first} (last broker error: {reason})"
            ),
            None => anyhow!("failed to deliver {failed} of {total} records; first error: {first}"),
        });
    }
    if let Err(e) = flush_result {
        bail!("cannot flush producer: {e}");
    }
    Ok(delivered)
}

// ---------------------------------------------------------------------------
// consume
// ---------------------------------------------------------------------------

/// Whether a consumer error ends the command (as opposed to transient
/// connection trouble, which librdkafka retries by itself).
fn is_fatal_consume_error(e: &KafkaError) -> bool {
    match e {
        KafkaError::MessageConsumptionFatal(_) => true,
        KafkaError::MessageConsumption(code) => matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::OffsetOutOfRange
                | RDKafkaErrorCode::AutoOffsetReset
        ),
        KafkaError::PartitionEOF(_) => false,
        _ => false,
    }
}

fn stdout_err(e: io::Error) -> Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        // The reader went away (e.g. `| head`): stop quietly.
        Ok(())
    } else {
        Err(anyhow!("cannot write to stdout: {e}"))
    }
}

/// Runs `corestream consume ...`: records go to stdout.
pub fn consume(args: ConsumeArgs) -> Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match consume_to(&args, &mut out) {
        Ok(_) => out.flush().or_else(stdout_err),
        Err(e) => {
            let _ = out.flush();
            match e.downcast::<io::Error>() {
                // The reader went away (e.g. `| head`): stop quietly.
                Ok(io) if io.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                Ok(io) => Err(anyhow!("cannot write to stdout: {io}")),
                Err(e) => Err(e),
            }
        }
    }
}

/// Consumes records into `out` until `--count` or the idle timeout; returns
/// how many records were written. Write errors are returned as a bare
/// `io::Error` so the caller can recognise a broken pipe.
fn consume_to(args: &ConsumeArgs, out: &mut dyn Write) -> Result<u64> {
    let conn = &args.conn;
    let topic = args.topic.as_str();

    // Resolve partitions and start offsets with a metadata client first, so a
    // dead broker or a missing topic is reported instead of silently idling.
    let meta = conn.meta_client()?;
    let all = topic_partitions(&meta, conn, topic)?;
    let partitions = match args.partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => bail!(
            "partition {p} does not exist (topic {topic} has {} partitions)",
            all.len()
        ),
        None => all,
    };
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let offset = match args.from {
            StartFrom::Beginning => Offset::Beginning,
            StartFrom::End => Offset::End,
            StartFrom::Offset(n) => {
                match meta.client().fetch_watermarks(topic, p, METADATA_TIMEOUT) {
                    Ok((low, high)) => Offset::Offset(clamp_offset(n, low, high)),
                    Err(_) => Offset::Offset(n),
                }
            }
        };
        tpl.add_partition_offset(topic, p, offset)
            .map_err(|e| anyhow!("cannot assign {topic} [{p}]: {e}"))?;
    }
    drop(meta);

    if args.count == Some(0) {
        return Ok(0);
    }

    // librdkafka refuses assign() without a group.id; use a throwaway one and
    // never commit offsets.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let group = format!("corestream-cli-{}-{nanos}", std::process::id());
    let cfg = conn.client_config(&[
        ("group.id", group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
    ])?;
    let consumer: BaseConsumer<CliContext> = cfg
        .create_with_context(conn.context())
        .map_err(|e| anyhow!("cannot create Kafka consumer: {e}"))?;
    consumer
        .assign(&tpl)
        .map_err(|e| anyhow!("cannot assign partitions of {topic}: {e}"))?;

    let idle = Duration::from_millis(args.timeout_ms);
    let mut last_record = Instant::now();
    let mut consumed: u64 = 0;
    let mut line = Vec::new();
    loop {
        if args.count.is_some_and(|c| consumed >= c) {
            break;
        }
        let waited = last_record.elapsed();
        if waited >= idle {
            break;
        }
        let slice = (idle - waited).min(Duration::from_millis(100));
        match consumer.poll(slice) {
            None => out.flush()?,
            Some(Ok(msg)) => {
                line.clear();
                if args.print_offset {
                    line.extend_from_slice(
                        format!("{}:{}\t", msg.partition(), msg.offset()).as_bytes(),
                    );
                }
                if args.print_key {
                    line.extend_from_slice(msg.key().unwrap_or_default());
                    line.push(b'\t');
                }
                line.extend_from_slice(msg.payload().unwrap_or_default());
                line.push(b'\n');
                out.write_all(&line)?;
                consumed += 1;
                last_record = Instant::now();
            }
            Some(Err(e)) => {
                if is_fatal_consume_error(&e) {
                    bail!("cannot consume from topic {topic}: {e}");
                }
                tracing::debug!(target: "librdkafka", "transient consumer error: {e}");
            }
        }
    }
    out.flush()?;
    Ok(consumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(clap::Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        cmd: TestCmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestCmd {
        #[command(subcommand)]
        Topic(TopicCommand),
        Produce(ProduceArgs),
        Consume(ConsumeArgs),
    }

    fn parse(args: &[&str]) -> Result<TestCmd, clap::Error> {
        let mut v = vec!["corestream"];
        v.extend_from_slice(args);
        TestCli::try_parse_from(v).map(|c| c.cmd)
    }

    #[test]
    fn clap_definitions_are_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("retention.ms=1000").unwrap(),
            ("retention.ms".into(), "1000".into())
        );
        // Only the first '=' splits; values may contain '=' or be empty.
        assert_eq!(
            parse_key_value("sasl.jaas.config=a=b=c").unwrap(),
            ("sasl.jaas.config".into(), "a=b=c".into())
        );
        assert_eq!(parse_key_value("k=").unwrap(), ("k".into(), "".into()));
        assert_eq!(parse_key_value(" k =v").unwrap(), ("k".into(), "v".into()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("  =v").is_err());
    }

    #[test]
    fn kv_list_later_wins() {
        let m = parse_kv_list(&["a=1", "b=2", "a=3"]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["a"], "3");
        assert_eq!(m["b"], "2");
        assert!(parse_kv_list(&["a=1", "oops"]).is_err());
        assert!(parse_kv_list::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn from_parsing() {
        assert_eq!(parse_from("beginning"), Ok(StartFrom::Beginning));
        assert_eq!(parse_from("earliest"), Ok(StartFrom::Beginning));
        assert_eq!(parse_from("END"), Ok(StartFrom::End));
        assert_eq!(parse_from("latest"), Ok(StartFrom::End));
        assert_eq!(parse_from("0"), Ok(StartFrom::Offset(0)));
        assert_eq!(parse_from("12345"), Ok(StartFrom::Offset(12345)));
        assert!(parse_from("-1").is_err());
        assert!(parse_from("middle").is_err());
        assert!(parse_from("").is_err());
        assert!(parse_from("1.5").is_err());
    }

    #[test]
    fn separator_parsing() {
        assert_eq!(parse_separator("\\t").unwrap(), "\t");
        assert_eq!(parse_separator("\t").unwrap(), "\t");
        assert_eq!(parse_separator(":").unwrap(), ":");
        assert_eq!(parse_separator("::").unwrap(), "::");
        assert_eq!(parse_separator("\\\\").unwrap(), "\\");
        assert_eq!(parse_separator("a\\tb").unwrap(), "a\tb");
        assert_eq!(parse_separator("\\x").unwrap(), "\\x");
        assert!(parse_separator("").is_err());
        assert!(parse_separator("\n").is_err());
    }

    #[test]
    fn line_splitting() {
        assert_eq!(
            split_line(b"k\tv", b"\t", false),
            (Some(&b"k"[..]), &b"v"[..])
        );
        // Only the first separator splits.
        assert_eq!(
            split_line(b"k\tv\tw", b"\t", false),
            (Some(&b"k"[..]), &b"v\tw"[..])
        );
        assert_eq!(
            split_line(b"just a value", b"\t", false),
            (None, &b"just a value"[..])
        );
        assert_eq!(
            split_line(b"\tv", b"\t", false),
            (Some(&b""[..]), &b"v"[..])
        );
        assert_eq!(
            split_line(b"k\t", b"\t", false),
            (Some(&b"k"[..]), &b""[..])
        );
        assert_eq!(split_line(b"k\tv", b"\t", true), (None, &b"k\tv"[..]));
        assert_eq!(
            split_line(b"a::b::c", b"::", false),
            (Some(&b"a"[..]), &b"b::c"[..])
        );
        assert_eq!(split_line(b"a:", b"::", false), (None, &b"a:"[..]));
        assert_eq!(split_line(b"", b"\t", false), (None, &b""[..]));
    }

    #[test]
    fn newline_stripping() {
        assert_eq!(strip_newline(b"abc\n"), b"abc");
        assert_eq!(strip_newline(b"abc\r\n"), b"abc");
        assert_eq!(strip_newline(b"abc"), b"abc");
        assert_eq!(strip_newline(b"abc\r"), b"abc\r");
        assert_eq!(strip_newline(b"\n"), b"");
        assert_eq!(strip_newline(b"a\n\n"), b"a\n");
    }

    #[test]
    fn offset_clamping() {
        assert_eq!(clamp_offset(5, 0, 10), 5);
        assert_eq!(clamp_offset(0, 3, 10), 3);
        assert_eq!(clamp_offset(50, 3, 10), 10);
        assert_eq!(clamp_offset(7, 0, -1), 7);
    }

    #[test]
    fn override_merging() {
        let current: BTreeMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into();
        let merged = merge_overrides(
            current.clone(),
            &[("a".into(), "9".into()), ("c".into(), "3".into())],
            &["b".into()],
        )
        .unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged["a"], "9");
        assert_eq!(merged["c"], "3");
        assert!(merge_overrides(current, &[("a".into(), "1".into())], &["a".into()]).is_err());
    }

    #[test]
    fn cli_produce_defaults_and_flags() {
        let TestCmd::Produce(p) = parse(&["produce", "t"]).unwrap() else {
            panic!("not produce")
        };
        assert_eq!(p.topic, "t");
        assert_eq!(p.key_separator, "\t");
        assert_eq!(p.acks, Acks::All);
        assert_eq!(p.compression, Compression::None);
        assert_eq!(p.partition, None);
        assert!(!p.no_keys);
        assert_eq!(p.conn.bootstrap, "127.0.0.1:9092");

        let TestCmd::Produce(p) = parse(&[
            "produce",
            "t",
            "--partition",
            "2",
            "--key-separator",
            ":",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "--no-keys",
            "-b",
            "h:1",
            "-X",
            "linger.ms=0",
        ])
        .unwrap() else {
            panic!("not produce")
        };
        assert_eq!(p.partition, Some(2));
        assert_eq!(p.key_separator, ":");
        assert_eq!(p.acks, Acks::One);
        assert_eq!(p.compression, Compression::Zstd);
        assert!(p.no_keys);
        assert_eq!(p.conn.bootstrap, "h:1");
        assert_eq!(p.conn.props, vec!["linger.ms=0".to_string()]);

        assert!(parse(&["produce", "t", "--acks", "2"]).is_err());
        assert!(parse(&["produce", "t", "-X", "novalue"]).is_err());
    }

    #[test]
    fn cli_consume_defaults_and_flags() {
        let TestCmd::Consume(c) = parse(&["consume", "t"]).unwrap() else {
            panic!("not consume")
        };
        assert_eq!(c.from, StartFrom::Beginning);
        assert_eq!(c.timeout_ms, 5000);
        assert_eq!(c.count, None);
        assert_eq!(c.partition, None);
        assert!(!c.print_key && !c.print_offset);

        let TestCmd::Consume(c) = parse(&[
            "consume",
            "t",
            "--partition",
            "1",
            "--from",
            "42",
            "--count",
            "10",
            "--timeout-ms",
            "100",
            "--print-key",
            "--print-offset",
        ])
        .unwrap() else {
            panic!("not consume")
        };
        assert_eq!(c.partition, Some(1));
        assert_eq!(c.from, StartFrom::Offset(42));
        assert_eq!(c.count, Some(10));
        assert_eq!(c.timeout_ms, 100);
        assert!(c.print_key && c.print_offset);

        assert!(parse(&["consume", "t", "--from", "sideways"]).is_err());
    }

    #[test]
    fn cli_topic_commands() {
        let TestCmd::Topic(TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            ..
        }) = parse(&[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=1",
            "--config",
            "cleanup.policy=compact",
        ])
        .unwrap()
        else {
            panic!("not create")
        };
        assert_eq!(name, "orders");
        assert_eq!(partitions, 3);
        assert_eq!(replication_factor, 1);
        assert_eq!(
            configs,
            vec![
                ("retention.ms".to_string(), "1".to_string()),
                ("cleanup.policy".to_string(), "compact".to_string())
            ]
        );
        assert!(parse(&["topic", "create", "x", "--partitions", "0"]).is_err());
        assert!(parse(&["topic", "create", "x", "--config", "bad"]).is_err());

        let TestCmd::Topic(TopicCommand::Delete { names, .. }) =
            parse(&["topic", "delete", "a", "b"]).unwrap()
        else {
            panic!("not delete")
        };
        assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
        assert!(parse(&["topic", "delete"]).is_err());

        let TestCmd::Topic(TopicCommand::AlterConfig {
            name, set, delete, ..
        }) = parse(&[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=5",
            "--delete",
            "cleanup.policy",
        ])
        .unwrap()
        else {
            panic!("not alter-config")
        };
        assert_eq!(name, "orders");
        assert_eq!(set, vec![("retention.ms".to_string(), "5".to_string())]);
        assert_eq!(delete, vec!["cleanup.policy".to_string()]);

        assert!(matches!(
            parse(&["topic", "list", "-b", "x:1"]).unwrap(),
            TestCmd::Topic(TopicCommand::List { .. })
        ));
        assert!(matches!(
            parse(&["topic", "describe", "orders"]).unwrap(),
            TestCmd::Topic(TopicCommand::Describe { .. })
        ));
    }

    /// End to end against librdkafka's in-process mock cluster (which
    /// supports produce, fetch, metadata and list-offsets, but no admin API).
    #[test]
    fn produce_and_consume_against_mock_cluster() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 2, 1).unwrap();
        let conn = Connection {
            bootstrap: mock.bootstrap_servers(),
            props: vec![],
        };
        let consume_args = |from, count, timeout_ms| ConsumeArgs {
            topic: "t".into(),
            partition: None,
            from,
            count,
            timeout_ms,
            print_key: true,
            print_offset: true,
            conn: conn.clone(),
        };

        assert_eq!(list_topic_names(&conn).unwrap(), vec!["t".to_string()]);

        let produce_args = ProduceArgs {
            topic: "t".into(),
            partition: Some(1),
            key_separator: "\t".into(),
            acks: Acks::All,
            compression: Compression::Zstd,
            no_keys: false,
            conn: conn.clone(),
        };
        let n = produce_from(&produce_args, &mut &b"k1\tv1\nv2\r\nk3\tv3\tx"[..]).unwrap();
        assert_eq!(n, 3);

        let mut out = Vec::new();
        let got = consume_to(
            &consume_args(StartFrom::Beginning, Some(3), 10_000),
            &mut out,
        )
        .unwrap();
        assert_eq!(got, 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1:0\tk1\tv1\n1:1\t\tv2\n1:2\tk3\tv3\tx\n"
        );

        // From an explicit offset, stopping on the idle timeout.
        let mut out = Vec::new();
        let start = Instant::now();
        let got = consume_to(&consume_args(StartFrom::Offset(2), None, 1500), &mut out).unwrap();
        assert_eq!(got, 1);
        assert_eq!(String::from_utf8(out).unwrap(), "1:2\tk3\tv3\tx\n");
        assert!(start.elapsed() >= Duration::from_millis(1500));

        // From the end: nothing.
        let mut out = Vec::new();
        assert_eq!(
            consume_to(&consume_args(StartFrom::End, None, 1000), &mut out).unwrap(),
            0
        );
        assert!(out.is_empty());

        // Missing topic and partition are clear errors.
        let mut missing = consume_args(StartFrom::Beginning, None, 1000);
        missing.topic = "nope".into();
        let e = consume_to(&missing, &mut Vec::new()).unwrap_err();
        assert_eq!(format!("{e:#}"), "topic nope does not exist");
        let mut bad_partition = consume_args(StartFrom::Beginning, None, 1000);
        bad_partition.partition = Some(7);
        let e = consume_to(&bad_partition, &mut Vec::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("partition 7 does not exist"),
            "{e:#}"
        );
        let bad_produce = ProduceArgs {
            partition: Some(9),
            ..produce_args
        };
        let e = produce_from(&bad_produce, &mut &b"x"[..]).unwrap_err();
        assert!(
            format!("{e:#}").contains("partition 9 does not exist"),
            "{e:#}"
        );

        // A broker without consumer-group support (no FindCoordinator, as in
        // corestream) must not stall the group-less consumer or its close.
        mock.apiversion(rdkafka::types::RDKafkaApiKey::FindCoordinator, None, None)
            .unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        let got = consume_to(
            &consume_args(StartFrom::Beginning, Some(3), 10_000),
            &mut out,
        )
        .unwrap();
        assert_eq!(got, 3);
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "{:?}",
            start.elapsed()
        );

        // Bad -X property.
        let bad_conn = Connection {
            bootstrap: conn.bootstrap.clone(),
            props: vec!["no.such.property=1".into()],
        };
        let e = list_topic_names(&bad_conn).unwrap_err();
        assert!(format!("{e:#}").contains("no.such.property"), "{e:#}");
    }
}
